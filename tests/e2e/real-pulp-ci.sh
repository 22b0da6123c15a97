#!/usr/bin/env bash
# CI step: the gateway in front of a REAL Pulp (tests/tests/e2e_real_pulp.rs).
#
# Starts pulpcore + pulp_container (from PyPI) with PostgreSQL through ../shared/tools/real-pulp.sh
# (`up`, then `seed`) in a fresh directory, adds a multi-arch image (OCI index and Docker manifest
# list, amd64 + arm64) with tests/e2e/seed_multiarch.py, runs the suite with CG_REQUIRE_REAL_PULP=1
# (a missing Pulp, repository or client tool fails it instead of skipping it), and always stops
# Pulp again (`down`).
# Run it by hand the same way: tests/e2e/real-pulp-ci.sh (as root, on Debian 12). The suite is
# selected within the whole workspace, as `cargo test --workspace` builds it, so nothing is rebuilt.
#
# Knobs: REAL_PULP_SH (default: ../shared/tools/real-pulp.sh beside the repository),
# REAL_PULP_PARENT (where the work directory is made; default /tmp), PIP_CACHE_DIR (default:
# pip's own cache under $HOME, which outlives the run; the venv does not), CARGO_TEST_ARGS.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$(pwd)
tool=${REAL_PULP_SH:-$repo/../shared/tools/real-pulp.sh}
started=$SECONDS
say() { printf '[real-pulp-ci %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

[ -f "$tool" ] || { say "ERROR: $tool not found (the shared tools must sit beside the repository)"; exit 1; }

# The clients the suite drives that real-pulp.sh does not install itself (it installs postgresql,
# docker-registry, skopeo, flatpak, ostree and curl); gcc + libc6-dev build the app's static binary.
if [ "$(id -u)" -eq 0 ]; then
    missing=()
    for pkg in podman dbus gcc libc6-dev util-linux curl ca-certificates; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if ((${#missing[@]})); then
        say "apt-get install ${missing[*]}"
        apt-get update -o DPkg::Lock::Timeout=300 -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
            --no-install-recommends "${missing[@]}" >/dev/null
    fi
fi

# pip's downloads are kept between runs where the machine keeps $HOME; a cold cache works too.
export PIP_CACHE_DIR=${PIP_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pip}
mkdir -p "$PIP_CACHE_DIR"

# PostgreSQL runs as user postgres when we are root: every parent of the directory needs o+x.
parent=${REAL_PULP_PARENT:-/tmp}
dir=$(mktemp -d "$parent/cg-real-pulp.XXXXXX")
chmod 755 "$dir"

finish() {
    local rc=$?
    if [ "$rc" -ne 0 ] && [ -d "$dir/logs" ]; then
        say "failed (exit $rc): the end of each Pulp log"
        for f in "$dir"/logs/*.log; do
            echo "----- $f" >&2
            tail -n 30 "$f" >&2 || true
        done
    fi
    local t=$SECONDS
    bash "$tool" down "$dir" || say "WARNING: real-pulp.sh down failed"
    say "down in $((SECONDS - t)) s"
    rm -rf "$dir"
    say "whole step: $((SECONDS - started)) s (exit $rc)"
    exit "$rc"
}
trap finish EXIT
trap 'exit 143' TERM INT

t=$SECONDS
bash "$tool" up "$dir" >/dev/null
say "Pulp up in $((SECONDS - t)) s"
t=$SECONDS
bash "$tool" seed "$dir" >/dev/null
say "seeded in $((SECONDS - t)) s"
t=$SECONDS
"${PYTHON:-python3}" tests/e2e/seed_multiarch.py "$dir" >&2
say "multi-arch image seeded in $((SECONDS - t)) s"

t=$SECONDS
# shellcheck disable=SC2086
CG_REAL_PULP_DIR=$dir CG_REQUIRE_REAL_PULP=1 \
    cargo test --workspace --test e2e_real_pulp ${CARGO_TEST_ARGS:-}
say "suite (with any build) in $((SECONDS - t)) s"
# flatpak >= 1.16 (built by tests/e2e/flatpak-116.sh, cached) presenting host certificates: tests/tests/e2e_flatpak_116.rs.
CG_FLATPAK_116=${CG_FLATPAK_116:-$(bash tests/e2e/flatpak-116.sh)} CG_REAL_PULP_DIR=$dir CG_REQUIRE_REAL_PULP=1 CG_REQUIRE_FLATPAK_116=1 cargo test --workspace --test e2e_flatpak_116 real_pulp
# The OCI conformance suite, directly and through the gateway, on this Pulp (SKIPPED without its binary).
bash tests/e2e/oci-conformance.sh "$dir"
