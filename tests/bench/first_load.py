#!/usr/bin/python3
"""First load with the disk cache on against the same load with `-o cache=off`, side by side.

Each run is a fresh mount (empty memory cache) of a generated model whose source is in the
page cache (re-read before every run), then a timed `cat` of every file of the view to
/dev/null. "on" mounts with `-o cache_dir=` a fresh, empty directory (this read fills it);
"off" with `-o cache=off`. The two alternate (on, off, off, on, ...) so that a slow spell of the
shared machine hits both; the ratio printed is median(on) / median(off). With --before, an
older binary runs in the same rotation, so both ratios come from the same spell. With
--limit, a third kind, "write": `cache=off` with the view's size in bytes written beside the
read (`dd` of /dev/zero into a file in the temporary directory, through the page cache or with
--limit direct `oflag=direct`, started with the `cat`): the least that filling a cache during
a load costs, whatever writes it. Between runs: unmount (the daemon finishes its disk writes),
`sync`, so no dirty page of one run is written back during the next.

With --cold-disk MBPS the source is cold instead, on a disk of a known speed: the model is
copied onto an ext4 on a loop device whose backing file lives in /dev/shm (memory, so the only
limit is the one set), reads of that device are throttled to MBPS megabytes per second by the
block I/O cgroup controller (cgroup v1 `blkio.throttle.read_bps_device`, or v2 `io.max`) for
this process and its children, and the page cache is dropped before every run. A fourth kind,
"src", is `cat` of the source files themselves, and the ratios against it are the first-load-
cold target's (<= 1.1x). A shared machine's real disk varies severalfold between runs of the
same read; this one does not. The cache directory stays on the temporary directory's disk.

    sudo /usr/bin/python3 tests/bench/first_load.py [--quarkfs BIN] [--before BIN] [--reps N]
        [--model DIR] [--limit [buffered|direct]] [--cold-disk MBPS]

Needs root (mounts) and about 0.4 GB in the temporary directory (--cold-disk: the model's
size again in /dev/shm).
"""

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
import qfstest as q  # noqa: E402

# ~330 MB of bf16: 3 layers of hidden 2048 / intermediate 5632 (21 quantized weights, 270 MB).
MODEL = ("llama", "bf16", "--layers", "3", "--hidden", "2048", "--intermediate", "5632",
         "--vocab", "8000", "--heads", "16", "--kv-heads", "4")


def warm(paths):
    for p in paths:
        with open(p, "rb") as f:
            while f.read(8 << 20):
                pass


def drop_page_cache():
    subprocess.run(["sync"], check=True)
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def io_controller(root):
    """Whether root is a cgroup v2 hierarchy that offers the io controller."""
    try:
        with open(os.path.join(root, "cgroup.controllers")) as f:
            return "io" in f.read().split()
    except OSError:
        return False


def throttle_group(dev, bps):
    """A block I/O cgroup limiting reads of device dev (st_rdev) to bps bytes/s: (procs file to
    join it, procs file to leave it, directory to remove)."""
    rule = "%d:%d" % (os.major(dev), os.minor(dev))
    name = "quarkfs-bench-%d" % os.getpid()
    v1 = "/sys/fs/cgroup/blkio"
    if os.path.exists(os.path.join(v1, "blkio.throttle.read_bps_device")):
        d = os.path.join(v1, name)
        os.mkdir(d)
        with open(os.path.join(d, "blkio.throttle.read_bps_device"), "w") as f:
            f.write("%s %d\n" % (rule, bps))
        return os.path.join(d, "cgroup.procs"), os.path.join(v1, "cgroup.procs"), d
    for root in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if io_controller(root):
            with open(os.path.join(root, "cgroup.subtree_control"), "w") as f:
                f.write("+io\n")
            d = os.path.join(root, name)
            os.mkdir(d)
            with open(os.path.join(d, "io.max"), "w") as f:
                f.write("%s rbps=%d\n" % (rule, bps))
            return os.path.join(d, "cgroup.procs"), os.path.join(root, "cgroup.procs"), d
    sys.exit("--cold-disk: no block I/O cgroup controller here (neither cgroup v1 blkio nor "
             "v2 io is mounted)")


@contextlib.contextmanager
def throttled_copy(src, mbps):
    """src's files copied onto a loop-mounted ext4 backed by /dev/shm, whose reads this process
    and its children get at mbps MB/s; yields the copy's directory. Undone on the way out."""
    size = sum(os.path.getsize(os.path.join(src, f)) for f in q.tree_files(src))
    img = "/dev/shm/quarkfs-cold-%d.img" % os.getpid()
    mnt = os.path.join(q.TMP, "cold-disk")
    loop = group = None
    try:
        with open(img, "wb") as f:
            f.truncate(size + size // 8 + (128 << 20))
        loop = subprocess.run(["losetup", "-f", "--show", img], check=True,
                              capture_output=True, text=True).stdout.strip()
        subprocess.run(["mkfs.ext4", "-q", "-F", loop], check=True)
        os.makedirs(mnt, exist_ok=True)
        subprocess.run(["mount", loop, mnt], check=True)
        dst = os.path.join(mnt, os.path.basename(os.path.normpath(src)))
        shutil.copytree(src, dst)
        group = throttle_group(os.stat(loop).st_rdev, int(mbps * 1e6))
        with open(group[0], "w") as f:
            f.write("%d\n" % os.getpid())
        with open("/sys/block/%s/queue/read_ahead_kb" % os.path.basename(loop)) as f:
            ra = f.read().strip()
        print("cold disk: %s on %s (backed by %s), reads throttled to %.0f MB/s, read_ahead_kb "
              "%s" % (mnt, loop, img, mbps, ra), flush=True)
        yield dst
    finally:
        if group:
            with open(group[1], "w") as f:
                f.write("%d\n" % os.getpid())
            os.rmdir(group[2])
        if os.path.ismount(mnt):
            subprocess.run(["umount", mnt], check=False)
        if loop:
            subprocess.run(["losetup", "-d", loop], check=False)
        if os.path.exists(img):
            os.unlink(img)


def cat_seconds(files):
    t0 = time.monotonic()
    subprocess.run(["cat"] + files, stdout=subprocess.DEVNULL, check=True)
    return time.monotonic() - t0


def cpu_seconds(pid):
    """User + system CPU time of a process so far (all its threads)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_run(src, opts, write_beside=None):
    """(seconds of the cat, status JSON text, daemon CPU seconds at the end of the cat, daemon
    CPU seconds once its disk writer is idle). write_beside ("buffered" or "direct"): the
    view's size in bytes written to a file that way while the cat runs (the limit row)."""
    m = q.start_mount(src, opts=opts, extra=[])
    sink = os.path.join(q.TMP, "first-load-write")
    try:
        files = [m.p(rel) for rel in sorted(q.tree_files(m.path))]
        writer = None
        t0 = time.monotonic()
        if write_beside:
            size = sum(os.path.getsize(f) for f in files)
            writer = subprocess.Popen(["dd", "if=/dev/zero", "of=" + sink, "bs=1M",
                                       "count=%d" % (size >> 20), "status=none"] +
                                      (["oflag=direct"] if write_beside == "direct" else []))
        subprocess.run(["cat"] + files, stdout=subprocess.DEVNULL, check=True)
        dt = time.monotonic() - t0
        if writer:
            writer.wait()
        cpu_read = cpu_seconds(m.proc.pid)
        st = q.quarkfs("status", m.path, "--json").stdout
        if "cache_queue" in st:
            q.status_settled(m.path)
        cpu_all = cpu_seconds(m.proc.pid)
    finally:
        m.close()
        if os.path.exists(sink):
            os.unlink(sink)
    return dt, st, cpu_read, cpu_all


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quarkfs", default=q.QUARKFS)
    ap.add_argument("--before", metavar="BIN",
                    help="also measure this (older) binary, interleaved with --quarkfs")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--model", help="use this model directory instead of generating one")
    ap.add_argument("--limit", nargs="?", const="buffered", choices=("buffered", "direct"),
                    help="also the limit row: cache=off with the view's bytes written beside it "
                    "by dd, through the page cache (default) or with oflag=direct")
    ap.add_argument("--cold-disk", type=float, metavar="MBPS",
                    help="source cold, on a loop disk in memory throttled to MBPS MB/s; adds "
                    "the row 'src' (cat of the source files)")
    a = ap.parse_args()
    src = a.model or q.gen_model(*MODEL)
    if a.cold_disk is None:
        measure(a, src)
    else:
        with throttled_copy(src, a.cold_disk) as cold_src:
            measure(a, cold_src)


def measure(a, src):
    bins = {"": os.path.abspath(a.quarkfs)}
    if a.before:
        bins["before "] = os.path.abspath(a.before)
    cold = a.cold_disk is not None
    src_files = [os.path.join(src, f) for f in q.tree_files(src)]
    size = sum(os.path.getsize(f) for f in src_files)
    print("model %s: %.0f MB; source %s; %s" % (src, size / 1e6, "cold" if cold else "warm",
                                               bins), flush=True)
    runs = ([(b, k) for b in bins for k in ("on", "off")] + ([("", "write")] if a.limit else [])
            + ([("", "src")] if cold else []))
    times = {r: [] for r in runs}
    cpu = {r: [] for r in runs}
    for rep in range(a.reps):
        k = rep % len(runs)
        for who, kind in runs[k:] + runs[:k]:      # the order rotates with each repetition
            q.QUARKFS = bins[who]
            cache = os.path.join(q.TMP, "first-load-cache")
            shutil.rmtree(cache, ignore_errors=True)
            if cold:
                drop_page_cache()
            else:
                subprocess.run(["sync"], check=True)
                warm(src_files)
            if kind == "src":
                dt = cat_seconds(src_files)
                times[(who, kind)].append(dt)
                print("  rep %d src %.3f s  (cat of the source files)" % (rep, dt), flush=True)
                continue
            opts = ["cache_dir=" + cache] if kind == "on" else ["cache=off"]
            dt, st, cpu_read, cpu_all = one_run(src, opts,
                                                write_beside=a.limit if kind == "write" else None)
            times[(who, kind)].append(dt)
            cpu[(who, kind)].append((cpu_read, cpu_all))
            s = json.loads(st)
            print("  rep %d %s%-3s %.3f s  daemon CPU %.2f s (%.2f s once written)  quantized "
                  "%s (%.3f s), disk writes %s, queue %s" % (
                      rep, who, kind, dt, cpu_read, cpu_all, s.get("tensors_quantized"),
                      s.get("seconds_quantizing"), s.get("disk_writes"), s.get("cache_queue")),
                  flush=True)
    med = {r: statistics.median(v) for r, v in times.items()}
    for who in bins:
        on, off = med[(who, "on")], med[(who, "off")]
        print("%smedian cache on %.3f s, cache=off %.3f s: ratio %.3f (%d runs each)" % (
            who, on, off, on / off, a.reps))
        print("%s  daemon CPU, median: on %.2f s during the read, %.2f s once written; off "
              "%.2f s" % (who, statistics.median(c[0] for c in cpu[(who, "on")]),
                          statistics.median(c[1] for c in cpu[(who, "on")]),
                          statistics.median(c[0] for c in cpu[(who, "off")])))
        if cold:
            print("%s  against cat of the cold source (%.3f s; target <= 1.1): cache=off %.3f, "
                  "cache on %.3f" % (who, med[("", "src")], off / med[("", "src")],
                                     on / med[("", "src")]))
    if a.limit:
        w, off = med[("", "write")], med[("", "off")]
        print("limit: cache=off with the view's bytes written beside it %.3f s, cache=off %.3f s:"
              " ratio %.3f (%d runs each)" % (w, off, w / off, a.reps))


if __name__ == "__main__":
    main()
