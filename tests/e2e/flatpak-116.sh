#!/usr/bin/env bash
# Builds flatpak 1.16.x from source into a private prefix and prints that prefix on stdout.
#
# Debian 12 ships flatpak 1.14, which presents no client certificate to OCI remotes; flatpak >= 1.16
# (RHEL 10, Fedora) presents the one in certs.d (common/flatpak-utils-http.c:
# $XDG_CONFIG_HOME/containers/certs.d/<host:port>/, then $FLATPAK_SYSTEM_CERTS_D, by default
# /etc/containers/certs.d:/etc/docker/certs.d). tests/tests/e2e_flatpak_116.rs drives this build.
#
# The prefix is <cache>/flatpak-<version> (default cache /var/cache/container-gateway-ci): its own
# bin, libexec, share/dbus-1/services, etc and var, so Debian's flatpak is never replaced. A prefix
# that is already complete is reused as it is (the warm path).
#
# The sources are the upstream tarballs Debian's archive carries (nothing but the Debian mirror is
# needed): flatpak_<version>.orig.tar.xz (bookworm-backports), bubblewrap_<v>.orig.tar.xz and
# xdg-dbus-proxy_<v>.orig.tar.xz. Each is looked up in the Sources index of the first suite of
# DEBIAN_SUITES that lists it; the suite's InRelease must carry a good signature by a key of
# debian-archive-keyring (gpgv), its Valid-Until (if any) must not have passed, Sources.xz must have
# the SHA-256 and size the signed InRelease gives, and each tarball the SHA-256 and size Sources
# gives. Debian's patches are not applied: this is upstream flatpak. The flatpak tarball has
# libglnx and variant-schema-compiler but not the bubblewrap and dbus-proxy subprojects, so those
# two are unpacked into subprojects/ from their own tarballs and built with flatpak (installed as
# libexec/flatpak-bwrap and libexec/flatpak-dbus-proxy). Bubblewrap: flatpak 1.16 requires 0.10.0,
# Debian 12 has 0.8.0, so it is Debian 13's (trixie). dbus-proxy (>= 0.1.0 is required): Debian
# 12's 0.1.4, built here too so the build does not depend on the machine's. Every other dependency
# is Debian 12's (meson 1.0.1, glib 2.74, ostree 2022.7, appstream 0.16.1, curl 7.88).
#
# Knobs: FLATPAK_116_VERSION (upstream version, default 1.16.6; the cache key),
# BUBBLEWRAP_VERSION (default 0.12.0), DBUS_PROXY_VERSION (default 0.1.4), FLATPAK_116_CACHE,
# DEBIAN_MIRROR (default http://deb.debian.org/debian), DEBIAN_SUITES (searched in order, default
# "bookworm-backports bookworm trixie"), DEBIAN_KEYRING. FLATPAK_GIT, BUBBLEWRAP_GIT, DBUS_PROXY_GIT
# (off by default): a git URL or local repository to take that one source from instead (flatpak at
# tag <version>, the other two at the commit flatpak's subprojects/*.wrap pins). Run as root for the
# apt-get step, or with the packages below installed.
set -euo pipefail
shopt -s inherit_errexit

version=${FLATPAK_116_VERSION:-1.16.6}
bwrap_version=${BUBBLEWRAP_VERSION:-0.12.0}
proxy_version=${DBUS_PROXY_VERSION:-0.1.4}
cache=${FLATPAK_116_CACHE:-/var/cache/container-gateway-ci}
prefix=$cache/flatpak-$version
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mirror=${mirror%/}
read -r -a suites <<<"${DEBIAN_SUITES:-bookworm-backports bookworm trixie}"
keyring=${DEBIAN_KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}
flatpak_git=${FLATPAK_GIT:-}
bwrap_git=${BUBBLEWRAP_GIT:-}
proxy_git=${DBUS_PROXY_GIT:-}
say() { printf '[flatpak-116 %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 1; }
started=$SECONDS

if [ -x "$prefix/bin/flatpak" ] && [ -f "$prefix/.built" ]; then
    say "reusing $prefix ($("$prefix/bin/flatpak" --version))"
    echo "$prefix"
    exit 0
fi

case $cache in
/ | /usr | /usr/* | /bin | /bin/* | /lib | /lib/* | /etc | /etc/*)
    die "FLATPAK_116_CACHE=$cache is a system directory: the private prefix must live elsewhere" ;;
esac
((${#suites[@]})) || die "DEBIAN_SUITES is empty"

# What meson.build needs (with the options below), bubblewrap's and xdg-dbus-proxy's builds too,
# and what fetching and checking the sources needs.
packages=(curl ca-certificates xz-utils gpgv debian-archive-keyring meson ninja-build pkg-config
    gcc bison python3-pyparsing libglib2.0-dev libostree-dev libgpgme-dev libjson-glib-dev
    libarchive-dev libcurl4-openssl-dev libappstream-dev libseccomp-dev libcap-dev libxml2-dev
    libzstd-dev libfuse3-dev fuse3 libgdk-pixbuf-2.0-dev)
[ -z "$flatpak_git$bwrap_git$proxy_git" ] || packages+=(git)
missing=()
for pkg in "${packages[@]}"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    [ "$(id -u)" -eq 0 ] || die "missing packages (run as root): ${missing[*]}"
    say "apt-get install ${missing[*]}"
    apt-get update -o DPkg::Lock::Timeout=300 -qq ||
        die "apt-get update failed (needed for: ${missing[*]})"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
        --no-install-recommends "${missing[@]}" >/dev/null ||
        die "apt-get install ${missing[*]} failed"
fi
[ -r "$keyring" ] || die "no keyring at $keyring (DEBIAN_KEYRING) to verify the archive with"

mkdir -p "$cache"
work=$(mktemp -d "$cache/.flatpak-$version-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/index" "$work/dl"

# fetch URL OUT SECONDS: one bounded download.
fetch() {
    curl -fsSL --proto '=http,https' --connect-timeout 20 -m "$3" --retry 2 -o "$2" "$1" ||
        die "download of $1 failed (curl exit $?)"
}
# check_file FILE SHA256 SIZE WHERE NAME: FILE (NAME) has the hash and size WHERE (an index) gives.
check_file() {
    local got size
    size=$(stat -c %s "$1")
    got=$(sha256sum "$1" | cut -d' ' -f1)
    [ "$size" = "$3" ] && [ "$got" = "$2" ] ||
        die "$5: SHA-256 $got, $size bytes; $4 says $2, $3 bytes"
}

# sources SUITE: the path of SUITE's verified, decompressed main/source/Sources index.
sources() {
    local suite=$1 base=$mirror/dists/$1 idx=$work/index/$1 line sha size until
    if [ ! -f "$idx.Sources" ]; then
        fetch "$base/InRelease" "$idx.InRelease" 60
        # --output keeps only the signed text: nothing outside the signature is read.
        gpgv --keyring "$keyring" --output "$idx.Release" "$idx.InRelease" 2>"$idx.gpgv" ||
            die "$base/InRelease: no good signature by a key in $keyring: $(tr '\n' ' ' <"$idx.gpgv")"
        grep -qxE "(Suite|Codename): $suite" "$idx.Release" ||
            die "$base/InRelease is signed but is not $suite's ($(grep -E '^(Suite|Codename):' "$idx.Release" | tr '\n' ' '))"
        until=$(sed -n 's/^Valid-Until: //p' "$idx.Release")
        if [ -n "$until" ]; then
            [ "$(date -u -d "$until" +%s)" -ge "$(date -u +%s)" ] ||
                die "$base/InRelease expired at $until (a stale mirror, or the clock is wrong)"
        fi
        line=$(awk '/^SHA256:/ { s = 1; next } /^[^ ]/ { s = 0 }
            s && $3 == "main/source/Sources.xz" { print $1, $2; exit }' "$idx.Release")
        [ -n "$line" ] || die "$base/InRelease lists no main/source/Sources.xz under SHA256"
        read -r sha size <<<"$line"
        # By hash first (what apt does: immune to the mirror updating between the two requests).
        curl -fsSL --proto '=http,https' --connect-timeout 20 -m 120 --retry 2 -o "$idx.Sources.xz" \
            "$base/main/source/by-hash/SHA256/$sha" 2>/dev/null ||
            fetch "$base/main/source/Sources.xz" "$idx.Sources.xz" 120
        check_file "$idx.Sources.xz" "$sha" "$size" "$base/InRelease" "$base/main/source/Sources.xz"
        xz -dc "$idx.Sources.xz" >"$idx.Sources" || die "$base/main/source/Sources.xz does not decompress"
    fi
    echo "$idx.Sources"
}

# orig PACKAGE UPSTREAM_VERSION DEST: downloads and checks <package>_<version>.orig.tar.* from the
# first suite listing it, unpacks it into DEST (its one top directory stripped) and prints a line
# for the .built marker.
orig() {
    local pkg=$1 ver=$2 dest=$3 suite index out hit= sha size file dir debver listed=
    for suite in "${suites[@]}"; do
        index=$(sources "$suite")
        # "HIT <sha256> <size> <file> <directory> <version>", or "HAS <version>" per other version.
        out=$(awk -v pkg="$pkg" -v want="${pkg}_$ver.orig.tar." 'BEGIN { RS = ""; FS = "\n" }
            {
                p = ""; d = ""; v = ""; h = ""; s = 0
                for (i = 1; i <= NF; i++) {
                    l = $i
                    if (l ~ /^Package: /) p = substr(l, 10)
                    if (l ~ /^Version: /) v = substr(l, 10)
                    if (l ~ /^Directory: /) d = substr(l, 12)
                    if (l ~ /^Checksums-Sha256:/) { s = 1; continue }
                    if (l !~ /^ /) s = 0
                    if (s) {
                        split(l, f, " ")
                        if (f[3] == want "xz" || f[3] == want "gz" || f[3] == want "bz2")
                            h = f[1] " " f[2] " " f[3]
                    }
                }
                if (p != pkg) next
                if (h != "") { print "HIT", h, d, v; exit }
                print "HAS", v
            }' "$index") || die "could not read $index"
        hit=$(sed -n 's/^HIT //p' <<<"$out")
        [ -z "$hit" ] || break
        out=$(sed -n 's/^HAS //p' <<<"$out" | paste -sd, -)
        listed+="${listed:+; }$suite: ${out:-none}"
    done
    [ -n "$hit" ] ||
        die "no suite lists ${pkg}_$ver.orig.tar.* (listed: $listed); set its version knob to one listed, or DEBIAN_SUITES"
    read -r sha size file dir debver <<<"$hit"
    [[ $dir =~ ^pool/[A-Za-z0-9+./_-]+$ && $dir != *..* && $file != */* ]] ||
        die "$suite's Sources gives an odd location for $pkg: $dir/$file"
    say "$pkg $ver: $file from $suite (source package $pkg $debver)"
    fetch "$mirror/$dir/$file" "$work/dl/$file" 600
    check_file "$work/dl/$file" "$sha" "$size" "$suite's Sources" "$mirror/$dir/$file"
    mkdir -p "$dest"
    tar -xf "$work/dl/$file" -C "$dest" --strip-components=1 --no-same-owner ||
        die "could not unpack $file"
    [ -f "$dest/meson.build" ] || die "$file has no meson.build at its top"
    echo "$pkg $ver debian $suite $debver $file sha256:$sha"
}

# fetch_at DIR URL REF: a shallow checkout of one tag or commit.
fetch_at() {
    git init -q "$1"
    git -C "$1" fetch -q --depth 1 "$2" "$3" || die "git fetch $3 from $2 failed"
    git -C "$1" -c advice.detachedHead=false checkout -q FETCH_HEAD
}
# The commit a wrap file pins (`revision = <sha>`).
wrap_rev() {
    local rev
    rev=$(sed -n 's/^revision *= *\([0-9a-f]\{40\}\) *$/\1/p' "$1")
    [ -n "$rev" ] || die "no revision in $1"
    echo "$rev"
}

src=$work/flatpak
built=()
if [ -n "$flatpak_git" ]; then
    fetch_at "$src" "$flatpak_git" "refs/tags/$version"
    built+=("flatpak $version git $flatpak_git $(git -C "$src" rev-parse HEAD)")
else
    built+=("$(orig flatpak "$version" "$src")")
fi
[ ! -e "$src/subprojects/bubblewrap" ] && [ ! -e "$src/subprojects/dbus-proxy" ] ||
    die "the flatpak source already has subprojects/bubblewrap or dbus-proxy: unexpected layout"
if [ -n "$bwrap_git" ]; then
    rev=$(wrap_rev "$src/subprojects/bubblewrap.wrap")
    fetch_at "$src/subprojects/bubblewrap" "$bwrap_git" "$rev"
    built+=("bubblewrap git $bwrap_git $rev")
else
    built+=("$(orig bubblewrap "$bwrap_version" "$src/subprojects/bubblewrap")")
fi
if [ -n "$proxy_git" ]; then
    rev=$(wrap_rev "$src/subprojects/dbus-proxy.wrap")
    fetch_at "$src/subprojects/dbus-proxy" "$proxy_git" "$rev"
    built+=("dbus-proxy git $proxy_git $rev")
else
    built+=("$(orig xdg-dbus-proxy "$proxy_version" "$src/subprojects/dbus-proxy")")
fi
say "sources ready in $((SECONDS - started)) s; building"

# Everything optional that a command-line client does not need is off; the system helper (polkit,
# system-wide installs by unprivileged users) too: the tests install per user. The subprojects are
# the directories unpacked above (--wrap-mode=nodownload: nothing is fetched).
meson setup "$work/build" "$src" --prefix="$prefix" --buildtype=release --wrap-mode=nodownload \
    -Dsystem_helper=disabled -Dtests=false -Dinstalled_tests=false -Ddocbook_docs=disabled \
    -Dman=disabled -Dgtkdoc=disabled -Dgir=disabled -Dselinux_module=disabled \
    -Dmalcontent=disabled -Dwayland_security_context=disabled -Dsystemd=disabled \
    -Ddconf=disabled -Dxauth=disabled -Dauto_sideloading=false -Dseccomp=enabled \
    -Dlibzstd=enabled -Dhttp_backend=curl >"$work/setup.log" 2>&1 ||
    { tail -n 40 "$work/setup.log" >&2; die "meson setup failed (log above)"; }
ninja -C "$work/build" >"$work/build.log" 2>&1 ||
    { tail -n 40 "$work/build.log" >&2; die "ninja build failed (log above)"; }
# Installed into a staging root, then moved into place: a half-installed prefix is never reused.
DESTDIR=$work/root meson install -C "$work/build" --no-rebuild >"$work/install.log" 2>&1 ||
    { tail -n 40 "$work/install.log" >&2; die "meson install failed (log above)"; }
[ -x "$work/root$prefix/bin/flatpak" ] || die "meson install put no bin/flatpak under $prefix"
for helper in flatpak-bwrap flatpak-dbus-proxy; do
    [ -x "$work/root$prefix/libexec/$helper" ] || die "meson install put no libexec/$helper under $prefix"
done
mv "$work/root$prefix" "$work/staged"
[ -z "$(find "$work/root" ! -type d -print -quit)" ] ||
    die "meson install wrote outside $prefix: $(find "$work/root" ! -type d | head -n 5 | tr '\n' ' ')"
rm -rf "$prefix"
mv "$work/staged" "$prefix"
printf '%s\n' "${built[@]}" >"$prefix/.built"
say "built $("$prefix/bin/flatpak" --version) into $prefix in $((SECONDS - started)) s"
echo "$prefix"
