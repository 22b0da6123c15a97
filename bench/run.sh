#!/usr/bin/env bash
# The gateway's measurements against their baselines, in one run on loopback;
# prints one table (target, measured, ratio, met). See README "Performance".
#
#   bench/run.sh                 all targets, release build (about 5 minutes)
#   bench/run.sh 1 4             only targets 1 and 4
#   bench/run.sh --smoke         tiny sizes, debug build: proves the bench runs (CI)
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for tool in wrk curl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null || missing+=(nginx)
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "bench/run.sh needs: ${missing[*]} (apt-get install -y ${missing[*]})" >&2
        exit 1
    fi
    # nginx's package would start a system nginx on port 80: keep it from
    # starting, without touching a policy the machine already has.
    own_policy=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        own_policy=1
    fi
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    if [ -n "$own_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
fi

# The whole workspace, as `cargo test --workspace` and bench/soak.sh select it:
# cargo resolves dependency features per selection, and another selection
# would rebuild much of the tree (the smoke run reuses the test build).
profile=release
build=(--release --workspace --lib --bins)
for arg in "$@"; do [ "$arg" = --smoke ] && { profile=debug; build=(--workspace --lib --bins --tests); }; done
cargo build "${build[@]}" -q

# A thousand concurrent connections need two thousand descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec "target/$profile/gateway-bench" "$@"
