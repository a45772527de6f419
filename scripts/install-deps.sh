#!/usr/bin/env bash
# Installs what quarkfs needs to build, run and test on Debian 12 (bookworm) or newer.
set -euo pipefail
# groff-base and man-db: the tests render the man page (man -l fs/quarkfs.1). clang,
# libclang-rt-dev (libFuzzer and the sanitizer runtimes: not a dependency of clang since
# Debian 12) and libomp-dev (OpenMP for clang) build the fuzz targets (tests/fuzz/run.sh).
pkgs=(gcc meson ninja-build pkg-config libfuse3-dev fuse3 libjansson-dev libxxhash-dev libcmocka-dev
      python3 python3-numpy groff-base man-db clang libclang-rt-dev libomp-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
