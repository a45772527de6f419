#!/usr/bin/env bash
# Installs what quarkfs needs to build, run and test on Debian 12 (bookworm) or newer.
#   bash scripts/install-deps.sh            Debian packages (build, plain tests, fuzzing)
#                                           and libfuse 3.17 (FUSE passthrough) into build-deps/
#   bash scripts/install-deps.sh --cluster  also GlusterFS (server and FUSE client) for the
#                                           cluster suite (tests/integration/test_cluster.py)
#   bash scripts/install-deps.sh --loaders  also build-venv/: a Python virtualenv with the real
#                                           loaders pinned in tests/loaders/requirements.txt
#                                           (PyPI; about 5 GB; remade only when that file or the
#                                           interpreter changes)
set -euo pipefail
cd "$(dirname "$0")/.."
loaders=0
cluster=0
for arg in "$@"; do
  case "$arg" in
    --loaders) loaders=1 ;;
    --cluster) cluster=1 ;;
    *) echo "install-deps.sh: unknown argument '$arg' (use --loaders, --cluster or nothing)" >&2
       exit 2 ;;
  esac
done
# groff-base and man-db: the tests render the man page (man -l fs/quarkfs.1). clang,
# libclang-rt-dev (libFuzzer and the sanitizer runtimes: not a dependency of clang since
# Debian 12) and libomp-dev (OpenMP for clang) build the fuzz targets (tests/fuzz/run.sh).
# python3-venv, python3-dev and g++: the loader virtualenv; amd-quark compiles a C++ extension
# against Python.h when it is first imported.
pkgs=(gcc meson ninja-build pkg-config libfuse3-dev fuse3 libjansson-dev libyajl-dev libxxhash-dev libcmocka-dev
      python3 python3-numpy groff-base man-db clang libclang-rt-dev libomp-dev dpkg-dev)
[ "$loaders" = 1 ] && pkgs+=(python3-venv python3-dev g++)
# The cluster suite runs its own glusterd per network namespace; on a systemd host the
# package also enables a glusterd service of its own, which the tests neither use nor need.
[ "$cluster" = 1 ] && pkgs+=(glusterfs-server glusterfs-client iproute2 util-linux)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
bash scripts/libfuse.sh || echo "install-deps: libfuse 3.17 not built: quarkfs builds against the system libfuse, without FUSE passthrough" >&2
[ "$loaders" = 1 ] || exit 0

# The virtualenv uses Debian's interpreter (python3-dev gives it Python.h), not whichever
# python3 comes first on PATH. A stamp of the interpreter and the requirements decides whether
# an existing build-venv/ is still the one they describe.
py=${QUARKFS_PYTHON:-/usr/bin/python3}
req=tests/loaders/requirements.txt
nodeps=tests/loaders/requirements-nodeps.txt    # packages whose declared dependencies fight the pins
stamp="$("$py" -c 'import sys; print(sys.version)' | head -1) $(cat "$req" "$nodeps" | sha256sum | cut -d' ' -f1)"
# The manifests' schema validator: small, installed (or found satisfied) on every run, so that
# adding it does not remake the 5 GB environment.
deploy_req() {
  build-venv/bin/python3 -m pip install -q --disable-pip-version-check -r tests/loaders/requirements-deploy.txt
}
if [ -x build-venv/bin/python3 ] && [ "$(cat build-venv/.quarkfs-stamp 2>/dev/null)" = "$stamp" ]; then
  deploy_req
  echo "install-deps: build-venv is up to date"
  exit 0
fi
rm -rf build-venv
start=$(date +%s)
"$py" -m venv build-venv
build-venv/bin/python3 -m pip install -q --disable-pip-version-check -r "$req"
build-venv/bin/python3 -m pip install -q --disable-pip-version-check --no-deps -r "$nodeps"
deploy_req
echo "$stamp" > build-venv/.quarkfs-stamp
echo "install-deps: build-venv made in $(( $(date +%s) - start )) s ($(du -sh build-venv | cut -f1))"
