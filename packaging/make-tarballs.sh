#!/usr/bin/env bash
# Make the RPM's sources from this checkout, in packaging/build/:
#   container-gateway-VERSION.tar.gz         the tree (tracked files, plus new
#                                            files not yet committed, as they are now)
#   container-gateway-VERSION-vendor.tar.gz  vendor/ (every crate of Cargo.lock)
#                                            and cargo-vendor.txt, its manifest
#   container-gateway.sysusers               for the spec's %pre
# Needs cargo and the crates of Cargo.lock (fetched if not cached).
set -euo pipefail
cd "$(dirname "$0")/.."

name=container-gateway
spec=packaging/$name.spec
out=packaging/build

workspace_key() { sed -n "/^\[workspace.package\]/,/^\[/s/^$1 = \"\(.*\)\"/\1/p" Cargo.toml; }
version=$(workspace_key version)
msrv=$(workspace_key rust-version)
spec_version=$(sed -n 's/^Version: *//p' "$spec")
spec_msrv=$(sed -n 's/^%global rust_msrv *//p' "$spec")
if [[ -z "$version" || "$version" != "$spec_version" ]]; then
    echo "$spec: Version $spec_version, but the workspace is $version" >&2
    exit 1
fi
if [[ -z "$msrv" || "$msrv" != "$spec_msrv" ]]; then
    echo "$spec: rust_msrv $spec_msrv, but the workspace's rust-version is $msrv" >&2
    exit 1
fi

mkdir -p "$out"
stage=$(mktemp -d "$out/stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# Same bytes for the same files: fixed order, owner and time.
pack() { # pack ARCHIVE MTIME [tar options...]; NUL-separated paths on stdin
    local archive=$1 mtime=$2
    shift 2
    tar "$@" --sort=name --mtime="@$mtime" --owner=0 --group=0 --numeric-owner \
        --no-recursion --null --files-from=- -cf - |
        gzip -n >"$archive"
}

# Tracked and new (not ignored) files that exist: the tree as it is, so an
# uncommitted change can be packaged too; a fresh clone gives exactly HEAD.
git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do if [[ -f "$f" ]]; then printf '%s\0' "$f"; fi; done |
    pack "$out/$name-$version.tar.gz" "$(git log -1 --format=%ct 2>/dev/null || date +%s)" --transform "s|^|$name-$version/|"

cargo vendor --locked --versioned-dirs --quiet "$stage/vendor" >/dev/null
# The crates the workspace patches in place ([patch.crates-io] paths under
# vendor/, such as vendor/actix-http) come with the tree, into the same vendor/
# the build's directory source reads, and cargo refuses any directory there
# without a .cargo-checksum.json: give each one ("package": null, as cargo
# writes for a git crate; it is built through its path, never from the source).
for dir in vendor/*/; do
    [[ -f "$dir/Cargo.toml" ]] || continue
    crate=$(basename "$dir")
    if [[ -e "$stage/vendor/$crate" ]]; then
        echo "vendor/$crate is both in the tree and among the vendored crates" >&2
        exit 1
    fi
    mkdir -p "$stage/vendor/$crate"
    printf '{"files":{},"package":null}\n' >"$stage/vendor/$crate/.cargo-checksum.json"
done
# The format of %cargo_vendor_manifest: "name vX.Y.Z", registry crates only.
cargo tree --locked --offline --workspace --edges=normal,build,dev --target=all --all-features \
    --prefix=none --format '{p}' |
    sed -e 's/ (proc-macro)//' -e 's/ (\*)$//' -e '/^$/d' -e '\| (/|d' |
    LC_ALL=C sort -u >"$stage/cargo-vendor.txt"
# One fixed time for the crates: a build script's rerun-if-changed then sees
# the same files as last time, and a kept target directory stays valid.
(cd "$stage" && find vendor cargo-vendor.txt -print0 | LC_ALL=C sort -z) | pack "$out/$name-$version-vendor.tar.gz" 946684800 -C "$stage"

cp systemd/$name.sysusers "$out/$name.sysusers"
ls -l "$out/$name-$version.tar.gz" "$out/$name-$version-vendor.tar.gz" "$out/$name.sysusers"
