#!/usr/bin/env bash
# The OCI distribution-spec conformance suite, pull and content-discovery workflows, run straight
# at a real Pulp and through the gateway in front of it (tests/tests/oci_conformance.rs), then the
# table of both outcomes per test. Every test must end the same way both times.
#
#   tests/e2e/oci-conformance.sh DIR     # DIR: a running, seeded real-pulp.sh directory
#
# The suite's binary (`conformance.test`, `go test -c` in opencontainers/distribution-spec
# conformance/ at SPEC_COMMIT) is third-party code and is not built by this repository: give it as
# OCI_CONFORMANCE_TEST, or leave it in the cache below. Without it the step says SKIPPED and exits
# 0; with CG_REQUIRE_OCI_CONFORMANCE=1 it fails.
#
# Knobs: OCI_CONFORMANCE_TEST, OCI_CONFORMANCE_CACHE (default
# ${XDG_CACHE_HOME:-$HOME/.cache}/container-gateway/oci-conformance), OCI_CONFORMANCE_OUT (where
# junit.xml, report.html, the logs and table.md of both runs are kept; default: a new directory
# under /tmp, printed), CARGO_TEST_ARGS.
set -euo pipefail
cd "$(dirname "$0")/../.."
started=$SECONDS
say() { printf '[oci-conformance %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# distribution-spec v1.1.1 (conformance/ with ginkgo v2.11, gomega 1.27.8, reggie 0.6.1).
SPEC_COMMIT=a139cc423184af6078077b9b7ee336eddbd03f8f

pulp_dir=${1:-${CG_REAL_PULP_DIR:-}}
[ -n "$pulp_dir" ] && [ -f "$pulp_dir/pulp.env" ] || {
    say "ERROR: usage: $0 DIR (a running real-pulp.sh directory holding pulp.env)"
    exit 2
}
pulp_dir=$(cd "$pulp_dir" && pwd)

cache=${OCI_CONFORMANCE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/container-gateway/oci-conformance}
bin=${OCI_CONFORMANCE_TEST:-$cache/$SPEC_COMMIT/conformance.test}
if [ ! -x "$bin" ]; then
    msg="no conformance suite binary at $bin (distribution-spec $SPEC_COMMIT, conformance/: go test -c)"
    if [ "${CG_REQUIRE_OCI_CONFORMANCE:-}" = 1 ]; then
        say "ERROR: $msg"
        exit 1
    fi
    say "SKIPPED: $msg; set CG_REQUIRE_OCI_CONFORMANCE=1 to fail instead"
    exit 0
fi

out=${OCI_CONFORMANCE_OUT:-$(mktemp -d /tmp/cg-oci-conformance.XXXXXX)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -rf "$out/direct" "$out/gateway" "$out/table.md"
say "suite $bin, Pulp $pulp_dir, reports in $out"

rc=0
# Selected within the whole workspace, as `cargo test --workspace` builds it: nothing is rebuilt.
# shellcheck disable=SC2086
CG_REAL_PULP_DIR=$pulp_dir CG_OCI_CONFORMANCE_BIN=$bin CG_OCI_CONFORMANCE_OUT=$out \
    CG_REQUIRE_OCI_CONFORMANCE=1 \
    cargo test --workspace --test oci_conformance ${CARGO_TEST_ARGS:-} >"$out/cargo-test.log" 2>&1 || rc=$?

if [ -f "$out/table.md" ]; then
    cat "$out/table.md"
else
    tail -n 40 "$out/cargo-test.log" >&2
fi
if [ "$rc" -ne 0 ]; then
    grep -A12 'panicked at' "$out/cargo-test.log" >&2 || tail -n 40 "$out/cargo-test.log" >&2
fi
say "done in $((SECONDS - started)) s (exit $rc); reports: $out/{direct,gateway}/{junit.xml,report.html,run.log}"
exit "$rc"
