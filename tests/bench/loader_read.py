"""Cold view, two ways a loader reads it: through mmap (safetensors.safe_open, what
transformers, vLLM and sglang do by default) and as whole-file reads (what transformers'
`disable_mmap`, vLLM's `--safetensors-load-strategy eager` and sglang's
`--weight-loader-disable-mmap` do: read the file's bytes, then parse them,
safetensors.torch.load). Each run mounts a fresh view with the disk cache off, so every
tensor is quantized during the read.

  /work/main/build-venv/bin/python tests/bench/loader_read.py QUARKFS SRC SPEC [RUNS]

Prints one line per run and the medians (seconds, MB/s of view bytes).
"""
import os
import statistics
import subprocess
import sys
import tempfile
import time

import safetensors
import safetensors.torch


def mounted(quarkfs, src, spec):
    mnt = tempfile.mkdtemp(prefix="loader-read-")
    subprocess.run([quarkfs, "-o", "cache=off,log=error", "--spec", spec, src, mnt], check=True)
    return mnt


def unmount(mnt):
    subprocess.run(["fusermount3", "-u", mnt], check=True)
    os.rmdir(mnt)


def shards(mnt):
    return sorted(os.path.join(mnt, f) for f in os.listdir(mnt)
                  if f.startswith("model") and f.endswith(".safetensors"))


def via_mmap(mnt):
    n = 0
    for path in shards(mnt):
        with safetensors.safe_open(path, "pt") as f:
            for k in f.keys():
                n += f.get_tensor(k).numel()   # a copy out of the mapping, as loaders do
    return n


def via_read(mnt):
    n = 0
    for path in shards(mnt):
        with open(path, "rb") as f:
            data = f.read()
        n += sum(t.numel() for t in safetensors.torch.load(data).values())
    return n


def main():
    quarkfs, src, spec = sys.argv[1:4]
    runs = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    times = {"mmap": [], "read": []}
    size = 0
    for r in range(runs):
        for name, fn in (("mmap", via_mmap), ("read", via_read)) if r % 2 == 0 else \
                        (("read", via_read), ("mmap", via_mmap)):
            mnt = mounted(quarkfs, src, spec)
            try:
                size = sum(os.path.getsize(p) for p in shards(mnt))
                t = time.monotonic()
                fn(mnt)
                dt = time.monotonic() - t
            finally:
                unmount(mnt)
            times[name].append(dt)
            print("run %d %-4s %.3f s  %.0f MB/s" % (r, name, dt, size / dt / 1e6), flush=True)
    for name, ts in times.items():
        m = statistics.median(ts)
        print("median %-4s %.3f s  %.0f MB/s  (view %.0f MB, %d runs)" % (
            name, m, size / m / 1e6, size / 1e6, len(ts)))


if __name__ == "__main__":
    main()
