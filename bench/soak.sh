#!/usr/bin/env bash
# Soak: the gateway binary under mixed load on loopback for a while; its
# resident memory, sampled every 10 s from /proc/<pid>/status, must stay
# within 10 % of its median once warm (after the first 20 % of the run). Prints the samples;
# exits non-zero when memory grows, the gateway dies, or requests fail.
#
#   bench/soak.sh                ten minutes, release build
#   bench/soak.sh 30             thirty seconds
#   bench/soak.sh 30 --debug     thirty seconds against the debug build that
#                                `cargo test --workspace` already made (what CI
#                                runs; nothing is rebuilt after it)
#
# The driver is tests/tests/soak.rs (an ignored test): it runs a fake Pulp and a
# fake central over mutual TLS, writes the gateway's configuration, starts the
# binary, pushes the repository list, primes TLS with some handshakes, then drives
# the load and samples.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=600
profile=release
for arg in "$@"; do
    case "$arg" in
        --debug) profile=debug ;;
        '' | *[!0-9]*)
            echo "usage: bench/soak.sh [seconds] [--debug]" >&2
            exit 2
            ;;
        *) seconds="$arg" ;;
    esac
done

# Every cargo call here selects the whole workspace, as `cargo test --workspace`
# does: cargo resolves dependency features per selection, so `-p <one package>`
# would build a second copy of much of the tree. The debug binary is then the
# one the test build already made, and the release one is shared with
# bench/run.sh.
if [ "$profile" = release ]; then
    cargo build --release -q --workspace --lib --bins
else
    cargo build -q --workspace --lib --bins --tests
fi
export SOAK_SECONDS="$seconds"
export SOAK_GATEWAY_BIN="$PWD/target/$profile/container-gateway"
exec cargo test -q --workspace --test soak -- --ignored --nocapture --test-threads=1
