#!/usr/bin/env bash
# Builds libfuse >= 3.17 (whose fuse_passthrough_open() lets the kernel serve complete view files
# directly) as a static library in build-deps/libfuse/, from the Debian source package of the
# next release (trixie), patches included. Debian 12 ships 3.14, which lacks that call. meson
# links build-deps/libfuse/lib/libfuse3.a when it is there (its soname, libfuse3.so.4, differs
# from the system's, so a static link keeps the binary free of it), else the system libfuse.
#   bash scripts/libfuse.sh          (run by install-deps.sh; does nothing when already built)
# The source comes through apt itself: a temporary deb-src entry made from the machine's own
# main-archive stanza (its URIs and Signed-By, so the same mirror and keyring), removed again.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
prefix=$root/build-deps/libfuse
[ -f "$prefix/lib/libfuse3.a" ] && { echo "libfuse: $(cat "$prefix/VERSION" 2>/dev/null) already in build-deps/libfuse"; exit 0; }
suite=${QUARKFS_LIBFUSE_SUITE:-trixie}
src=/etc/apt/sources.list.d/debian.sources
[ -r "$src" ] || { echo "libfuse: no $src (not Debian 12 or newer?): skipped" >&2; exit 1; }
# The first stanza whose Suites has a plain codename (not -updates or -security) and main.
stanza=$(awk -v RS= '/(^|\n)Suites:[^\n]*(^|[ \t])[a-z]+([ \t]|\n|$)/ && /Components:[^\n]*main/ {print; exit}' "$src")
uris=$(printf '%s\n' "$stanza" | sed -n 's/^URIs:[ \t]*//p' | head -1)
signed=$(printf '%s\n' "$stanza" | sed -n 's/^Signed-By:[ \t]*//p' | head -1)
[ -n "$uris" ] || { echo "libfuse: no main-archive stanza in $src: skipped" >&2; exit 1; }
SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
# One name per run: two installs at once must not remove each other's entry.
tmp=/etc/apt/sources.list.d/quarkfs-tmp-$suite-src-$$.sources
work=$root/build-deps/src
cleanup() {
  if [ -e "$tmp" ]; then
    $SUDO rm -f "$tmp"
    $SUDO apt-get update -qq -o DPkg::Lock::Timeout=300 || true
  fi
}
trap cleanup EXIT
{
  echo "Types: deb-src"; echo "URIs: $uris"; echo "Suites: $suite"; echo "Components: main"
  [ -n "$signed" ] && echo "Signed-By: $signed"
} | $SUDO tee "$tmp" >/dev/null
$SUDO apt-get update -qq -o DPkg::Lock::Timeout=300
rm -rf "$work" && mkdir -p "$work"
if ! why=$(cd "$work" && apt-get source -qq fuse3 2>&1 >/dev/null); then
  echo "libfuse: apt-get source fuse3 failed: ${why##*$'\n'}" >&2; exit 1
fi
cleanup
dir=$(find "$work" -maxdepth 1 -type d -name 'fuse3-*' | head -1)
ver=${dir##*/fuse3-}
case "$ver" in 3.1[7-9]*|3.[2-9]*|[4-9].*) ;; *) echo "libfuse: $suite has fuse3 $ver (< 3.17): skipped" >&2; exit 1 ;; esac
start=$(date +%s)
meson setup "$dir/build" "$dir" --prefix="$prefix" --libdir=lib -Ddefault_library=static \
  -Dutils=false -Dexamples=false -Dtests=false -Dinitscriptdir= -Duseroot=false >/dev/null
ninja -C "$dir/build" >/dev/null && ninja -C "$dir/build" install >/dev/null
echo "$ver" > "$prefix/VERSION"
rm -rf "$work"
echo "libfuse: $ver built in $(( $(date +%s) - start )) s into build-deps/libfuse (static)"
