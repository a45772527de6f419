#!/usr/bin/env bash
# The main job end to end: install, build, generate a small Llama-shaped demo model with the
# project's own generator, mount it with --spec int8, show the quantized view, unmount.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
[ -d build ] || meson setup build --buildtype=release >/dev/null
ninja -C build >/dev/null
work=$(mktemp -d /tmp/quarkfs-demo.XXXXXX)
src=$work/src mnt=$work/mnt
mkdir -p "$mnt"
cleanup() { mountpoint -q "$mnt" && fusermount3 -u "$mnt"; rm -rf "$work"; }
trap cleanup EXIT
/usr/bin/python3 tests/fixtures/genmodel.py "$src" --preset demo
echo; echo "== source: ls -l $src"; ls -l "$src"
./build/quarkfs --spec int8 "$src" "$mnt"
echo; echo "== view: ls -l $mnt"; ls -l "$mnt"
echo; echo "== view: quantization_config of $mnt/config.json"
/usr/bin/python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["quantization_config"], indent=2))' "$mnt/config.json"
echo; echo "== quarkfs inspect --spec int8 $src"
./build/quarkfs inspect --spec int8 "$src"
echo; echo "== reading the whole view (quantizes every tensor on the way)"
cat "$mnt"/*.safetensors | wc -c
fusermount3 -u "$mnt"
echo "unmounted $mnt"
