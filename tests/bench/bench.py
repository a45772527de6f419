#!/usr/bin/python3
"""quarkfs benchmark: one run on one machine, one table of ratios measured side by side.

Usage (as root: it mounts, drops the page cache and sets the bdi readahead):
    /usr/bin/python3 scripts/bench [--reps N] [--spec S] [--only SECTIONS] [--patterns P]
        [--perf DIR] [--json FILE] [--markdown FILE] [--mount-opts OPTS] [--quarkfs-opts OPTS]
        [--wait-quiet S] [--tmp DIR] [--models DIR] [--keep] [--no-build]

Sections (default: all but perf; --perf DIR adds the profiles):
  kernels    qfs_quantize_layout (what the engine runs) for every spec of --list-specs but
             aliases (tests/bench/kernelbench.c, libquarkfs), 1 thread and all threads, GiB/s of
             source bytes, against memcpy of the same bytes on 1 thread (the memory-bandwidth
             limit) and against the independent numpy reference (tests/oracle/quarkref.py)
             doing the same job; a table of its own, plus the int8/fp8 target rows in the ratio table.
  cold       the whole view of a synthetic Llama-shaped bf16 model (genmodel --preset llama
             --layers 5: 2.14 GiB of source) read cold through a fresh mount, three ways:
             seq (`cat`), pread16 (16 threads x 2 MiB pread at shuffled offsets: Run:ai's
             streamer, fastsafetensors), mmap (MAP_PRIVATE, tensors copied out in random order:
             safetensors). Each side by side with the same read of tests/bench/nullfs.c (a
             do-nothing FUSE filesystem serving the bytes of `quarkfs export` from memory with
             quarkfs's mount behaviour: the channel limit) and of the exported files in the page
             cache. View cold, source warm (in the page cache), checked with fincore. Plus one
             row (pattern srccold) with the source cold too, against the export read from disk.
  warm       the same view re-read from the page cache, against nullfs and the plain export.
  channel    the channel itself: nullfs (quarkfs's mount options) against libfuse's own
             passthrough_ll example with its default options (compiled at bench time from
             libfuse3-dev's examples; `passthrough_ll -o source=EXPORT MNT`) mirroring the
             exported files; cold seq/pread16/mmap reads of both, page caches of both mounts
             dropped, the exported ext4 files warm under them (all served from memory).
  diskcache  the persistent disk cache: `cat` of the view with an empty cache_dir (the read
             fills it), then cold again through a fresh mount on that cache_dir after unmount and
             drop (entries read from disk; the source warm), and once more with the entries in
             the page cache; against the first read and against nullfs.
  repeat     repeat loads of the cold/warm model, each read whole by two readers (`cat`, and
             safetensors.safe_open + get_tensor of every tensor in --loader-python, the
             mapping loaders use): the exported files warm and cold in the page cache; a mount
             with cache=off (source warm); the first load with an empty disk cache (it fills it;
             then, not timed, `quarkfs warm` writes the view files); a second mount on that cache with
             view_files=off (all disk hits); a second mount served from the view files, by FUSE
             passthrough and through the channel (passthrough=off), view files warm; and both
             again with the cache files and the source evicted (drop_caches). Seconds per load,
             ratios to the exported checkpoint (warm rows to the warm export, evicted rows to
             the cold export; the first load also to cache=off), in a table of its own and in
             the ratio table (as speed ratios, targets 1/1.1 and 1/1.05).
  mount      mount time of a 100-shard tiny model (spawn -> `ls -l` of the mount answers).
  firstbyte  latency to the first byte of a 1 GiB bf16 tensor (gate_proj [65536, 8192]) read
             with pread at its view offset, fresh mount, source warm.
  perf       `perf record -g -a` during cold seq/pread16/mmap reads (quarkfs and nullfs), a
             warm seq (quarkfs and plain), a first byte and the kernels alone; the samples of
             each workload are classified by stack (where the CPU time goes) into DIR.

Every measurement runs --reps times (default 5; the mount 2x that); the table shows medians, and
each ratio is the median of per-repetition ratios of runs made back to back (the order of the
filesystems rotates between repetitions). The column "other load" is the share of the CPUs
used by other processes meanwhile: the machine is shared and noisy, read the ratios, not the
absolute numbers. Results also go to --json (all repetitions) and --markdown. See BENCHMARKS.md.

quarkfs is mounted with -o cache=off (and exported with --no-cache) except in the diskcache
section: without it, root's default cache in /var/cache/quarkfs would serve "cold" reads from a
previous run's entries. --quarkfs-opts '-o cache=on' overrides it.

Environment: QUARKFS (the binary, default build/quarkfs), QUARKFS_BENCH_BIN (a directory with
nullfs, readers and kernelbench; default build/tests/bench if built there, else they are
compiled into the temporary directory with cc), LIBFUSE_EXAMPLES (where passthrough_ll.c is,
default /usr/share/doc/libfuse3-dev/examples). Other variables reach the daemons (e.g.
OMP_WAIT_POLICY=passive).
"""

import argparse
import atexit
import datetime
import hashlib
import importlib.util
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "pylib"))
import stfile  # noqa: E402  which python has numpy

BUILD = os.path.join(ROOT, "build")
QUARKFS = os.path.abspath(os.environ.get("QUARKFS") or os.path.join(BUILD, "quarkfs"))
PY = stfile.numpy_python()
GENMODEL = os.path.join(ROOT, "tests", "fixtures", "genmodel.py")
QUARKREF = os.path.join(ROOT, "tests", "oracle", "quarkref.py")
BENCH_SRC = os.path.join(ROOT, "tests", "bench")
HELPERS = ("nullfs", "readers", "kernelbench")
GIB = float(1 << 30)
MIB = 1 << 20

# Models (genmodel arguments). BIG: >= 2 GiB of bf16 source, Llama-7B shapes.
BIG_MODEL = ["--preset", "llama", "--layers", "5"]
# 100 shards: demo shapes, 12 layers = 110 tensors.
SHARDS_MODEL = ["--preset", "demo", "--layers", "12", "--shards", "100"]
# One 1 GiB bf16 tensor: gate_proj/up_proj [65536, 8192] (and down_proj [8192, 65536]).
FB_MODEL = ["--preset", "demo", "--hidden", "8192", "--intermediate", "65536", "--heads", "32",
            "--kv-heads", "8", "--vocab", "1024", "--layers", "1", "--shards", "1"]
FB_TENSOR = "model.layers.0.mlp.gate_proj.weight"
# Specs whose weight kernel is another spec's (same arithmetic): not timed twice.
KERNEL_ALIASES = ("w8a8-int8", "uint4", "int4")
SECTIONS = ("kernels", "cold", "warm", "channel", "diskcache", "repeat", "mount", "firstbyte",
            "perf")

# The repeat-load reader of safetensors files: every tensor of safe_open copied into memory of
# its own (what a loader moving weights to a device does; get_tensor alone may leave pages of
# the mapping untouched), timed after the imports; prints the seconds.
ST_READ = """
import sys, time
from safetensors import safe_open
t = time.perf_counter()
for path in sys.argv[1:]:
    with safe_open(path, "pt") as f:
        for k in f.keys():
            f.get_tensor(k).clone()
print(time.perf_counter() - t)
"""
# The read patterns of the cold/warm sections, in the order they run, and their row labels.
PATTERNS = ("seq", "pread16", "mmap")
PATTERN_LABEL = {"seq": "seq (cat)", "pread16": "pread 16 thr x 2 MiB, shuffled",
                 "mmap": "mmap, tensors in random order"}

# libfuse's own passthrough_ll example (Debian: libfuse3-dev), compiled at bench time.
LIBFUSE_EXAMPLES = os.environ.get("LIBFUSE_EXAMPLES", "/usr/share/doc/libfuse3-dev/examples")

TARGETS = {
    "channel_vs_passthrough": 2.0,
    "kernel_vs_memcpy": 0.5,
    "kernel_scaling": 1.8,
    "cold_vs_nullfs": 0.9,
    "warm_vs_plain": 0.8,
    "mount_ms": 100.0,
    "firstbyte_ms": 250.0,
}

# ---------------------------------------------------------------------------------------------
# Small utilities
# ---------------------------------------------------------------------------------------------


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


def run(cmd, check=True, capture=True, timeout=900, **kw):
    """subprocess.run with text output; raises with the command's stderr on failure."""
    pipe = subprocess.PIPE if capture else None
    p = subprocess.run(cmd, stdout=pipe, stderr=pipe, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError("command failed (%d): %s\n%s%s" % (p.returncode, " ".join(cmd),
                                                            p.stdout or "", p.stderr or ""))
    return p


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def gibs(nbytes, seconds):
    return nbytes / GIB / seconds if seconds > 0 else float("nan")


def drop_caches():
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def resident(paths):
    """Fraction of the bytes of paths in the page cache (fincore; opens files, reads nothing)."""
    if not paths:
        return 1.0
    p = run(["fincore", "--bytes", "--noheadings", "--raw", "-o", "RES,SIZE"] + list(paths))
    res = size = 0
    for line in p.stdout.split("\n"):
        parts = line.split()
        if len(parts) == 2:
            res += int(parts[0])
            size += int(parts[1])
    return res / size if size else 1.0


def read_all(paths):
    """Reads files front to back (cat-sized 1 MiB reads): warms them into the page cache."""
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.read(1 << 20):
                pass


def sha256_tree(paths):
    out = {}
    for path in paths:
        h = hashlib.sha256()
        with open(path, "rb", buffering=0) as f:
            while True:
                b = f.read(8 << 20)
                if not b:
                    break
                h.update(b)
        out[os.path.basename(path)] = h.hexdigest()
    return out


def safetensors_ranges(path):
    """(data_start, [(name, begin, end)]) of a safetensors file, absolute offsets."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    start = 8 + n
    return start, [(k, start + v["data_offsets"][0], start + v["data_offsets"][1])
                   for k, v in header.items()]


def model_files(d):
    """The view's files to read: the safetensors files (all but a few KiB of the view)."""
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".safetensors"))


def all_files(d):
    return sorted(os.path.join(d, f) for f in os.listdir(d) if os.path.isfile(os.path.join(d, f)))


def file_bytes(paths):
    return sum(os.path.getsize(p) for p in paths)


class CpuMeter:
    """Share of the machine's CPU time that other processes (not the benchmark: this process,
    its children, the daemon pids given) used between creation and background()."""

    def __init__(self, pids):
        self.pids = [p for p in pids if p]
        self.start = self._snap()

    def _snap(self):
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        hz = os.sysconf("SC_CLK_TCK")
        total, idle = sum(v), v[3] + v[4]
        ours = 0.0
        for pid in self.pids:
            try:
                with open("/proc/%d/stat" % pid) as f:
                    fields = f.read().rsplit(") ", 1)[1].split()
                ours += (int(fields[11]) + int(fields[12])) / hz
            except (OSError, IndexError, ValueError):
                pass
        t = os.times()
        ours += t.user + t.system + t.children_user + t.children_system
        return total / hz, (total - idle) / hz, ours

    def background(self):
        total0, busy0, ours0 = self.start
        total1, busy1, ours1 = self._snap()
        if total1 <= total0:
            return 0.0
        return max(0.0, min(1.0, ((busy1 - busy0) - (ours1 - ours0)) / (total1 - total0)))


def cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(") ", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def wait_idle(pid, max_s=20.0):
    """Waits until process pid has used no CPU for 100 ms (at most max_s seconds)."""
    t_end = time.time() + max_s
    last = cpu_seconds(pid)
    while last is not None and time.time() < t_end:
        time.sleep(0.1)
        now = cpu_seconds(pid)
        if now == last:
            return
        last = now


def wait_quiet(max_s, threshold=0.25):
    """Waits (at most max_s seconds) until other processes use < threshold of the CPUs over 2 s;
    returns the last measured share."""
    t_end = time.time() + max_s
    while True:
        m = CpuMeter([])
        time.sleep(2.0)
        bg = m.background()
        if bg < threshold or time.time() >= t_end:
            return bg
        log("  machine busy (other processes use %.0f%% of the CPUs): waiting" % (100 * bg))


def large_folio_share(path, npages=2048):
    """Share of the first npages page-cache pages of path that sit in large folios (compound
    pages), from /proc/self/pagemap and /proc/kpageflags (root)."""
    import mmap
    import struct
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            size = min(os.fstat(fd).st_size // 4096, npages) * 4096
            os.pread(fd, size, 0)
            m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)
        for i in range(0, size, 4096):
            m[i]
        start = None
        real = os.path.realpath(path)
        with open("/proc/self/maps") as f:
            for line in f:
                if line.rstrip().endswith(real):
                    start = int(line.split("-")[0], 16)
        if start is None:
            return float("nan")
        large = present = 0
        with open("/proc/self/pagemap", "rb") as pm, open("/proc/kpageflags", "rb") as kf:
            for i in range(size // 4096):
                pm.seek((start // 4096 + i) * 8)
                e = struct.unpack("<Q", pm.read(8))[0]
                if not e >> 63:
                    continue
                kf.seek((e & ((1 << 55) - 1)) * 8)
                flags = struct.unpack("<Q", kf.read(8))[0]
                present += 1
                large += 1 if flags & ((1 << 15) | (1 << 16)) else 0
        m.close()
        return large / present if present else float("nan")
    except OSError:
        return float("nan")


def ref_quantize(qr, sp, x, dtype):
    """One tensor through tests/oracle/quarkref.py's numpy kernels: parameters then weight values
    (as its Quantizer does for a view file)."""
    kind = getattr(sp, "kind", None)
    per_channel = getattr(sp, "per_channel", False)
    if kind == "int8":
        s, _ = qr.int8_scale(x, per_channel, dtype)
        return qr.int8_quantize(x, s, per_channel)
    if kind == "fp8":
        s, _ = qr.fp8_scale(x, per_channel, dtype)
        return qr.fp8_quantize(x, s, per_channel, dtype)
    if kind in ("uint4", "int4"):
        s, zp, _ = qr.int4_params(x, sp.group, kind == "int4", dtype)
        return qr.pack_reorder(qr.int4_quantize(x, s, zp, sp.group, kind == "int4").T)
    if kind == "mxfp4":
        e, _ = qr.mx_exponents(x)
        return qr.mxfp4_pack(qr.mxfp4_codes(x, e))
    if kind == "fp8-block":
        s, _ = qr.fp8_block_scale(x)
        return qr.fp8_block_quantize(x, s)
    raise ValueError("unknown spec kind %r" % (kind,))


# ---------------------------------------------------------------------------------------------
# Mounts
# ---------------------------------------------------------------------------------------------

_mounts = {}   # mountpoint -> pid (or None)


def mounted(mnt):
    real = os.path.realpath(mnt)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 4 and parts[4] == real:
                return True
    return False


def daemon_pid(binary, mnt):
    """The pid of the FUSE daemon serving mnt (found by its command line)."""
    real, name = os.path.realpath(mnt), os.path.basename(binary)
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == name and any(
                os.path.realpath(a) == real for a in argv[1:] if a.startswith("/")):
            return int(pid)
    return None


def mount_fs(cmd, mnt, binary):
    """Runs a daemonizing mount command; returns seconds until it returned."""
    os.makedirs(mnt, exist_ok=True)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=300)
    dt = time.perf_counter() - t0
    if p.returncode != 0 or not mounted(mnt):
        raise RuntimeError("mount failed (%d): %s\n%s%s" % (p.returncode, " ".join(cmd),
                                                          p.stdout, p.stderr))
    _mounts[mnt] = daemon_pid(binary, mnt)
    return dt


def unmount(mnt):
    if not mounted(mnt):
        _mounts.pop(mnt, None)
        return
    pid = _mounts.get(mnt)
    p = subprocess.run(["fusermount3", "-u", mnt], capture_output=True, text=True)
    if p.returncode != 0:
        subprocess.run(["fusermount3", "-uz", mnt], capture_output=True)
    # Wait for the daemon to finish (its worker may be mid-tensor) so it uses no CPU later.
    if pid:
        deadline = time.time() + 60
        while os.path.exists("/proc/%d" % pid) and time.time() < deadline:
            try:
                with open("/proc/%d/stat" % pid) as f:
                    if f.read().split(") ")[-1].startswith("Z"):
                        break
            except OSError:
                break
            time.sleep(0.01)
        if os.path.exists("/proc/%d" % pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    _mounts.pop(mnt, None)


def unmount_all():
    for mnt in list(_mounts):
        try:
            unmount(mnt)
        except Exception as exc:   # pragma: no cover - cleanup at exit
            print("bench: cannot unmount %s: %s" % (mnt, exc), file=sys.stderr)


_fusectl_mounted = []


def ensure_fusectl():
    """max_background is readable only through fusectl (/sys/fs/fuse/connections): mount it if
    nobody has (unmounted again at exit)."""
    path = "/sys/fs/fuse/connections"
    if os.path.isdir(path) and not mounted(path):
        if subprocess.run(["mount", "-t", "fusectl", "fusectl", path],
                          capture_output=True).returncode == 0:
            _fusectl_mounted.append(path)


def release_fusectl():
    for path in _fusectl_mounted:
        subprocess.run(["umount", path], capture_output=True)


def settings_line(name, s):
    return "%-8s read_ahead_kb=%s max_background=%s congestion_threshold=%s daemon threads=%s" % (
        name, s.get("read_ahead_kb"), s.get("max_background"), s.get("congestion_threshold"),
        s.get("daemon_threads", "?"))


def conn_settings(mnt):
    """Effective settings of the FUSE connection behind mnt (sysfs)."""
    st = os.stat(mnt)
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    out = {"dev": "%d:%d" % (major, minor)}

    def rd(path):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError as exc:
            return "? (%s)" % exc.strerror
    out["read_ahead_kb"] = rd("/sys/class/bdi/%d:%d/read_ahead_kb" % (major, minor))
    out["max_background"] = rd("/sys/fs/fuse/connections/%d/max_background" % minor)
    out["congestion_threshold"] = rd("/sys/fs/fuse/connections/%d/congestion_threshold" % minor)
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 4 and parts[4] == os.path.realpath(mnt):
                out["options"] = parts[5] + " " + " ".join(parts[parts.index("-") + 1:])
    pid = _mounts.get(mnt)
    if pid:
        try:
            out["daemon_threads"] = len(os.listdir("/proc/%d/task" % pid))
        except OSError:
            pass
    return out


# ---------------------------------------------------------------------------------------------
# perf: where the CPU time goes
# ---------------------------------------------------------------------------------------------

READER_COMMS = ("cat", "readers")


def _has(syms, *names):
    return any(n in s for s in syms for n in names)


def classify_sample(who, frames):
    """Category of one perf sample: who is daemon/reader/idle/other; frames leaf first."""
    if who == "idle":
        return "idle (both CPUs)"
    if who == "other":
        return "other processes (not the benchmark)"
    syms = [f[0] for f in frames]
    leaf_sym, leaf_dso = frames[0] if frames else ("?", "?")
    quant = ("qfs_quant", "amax_bits", "quantize_per", "int8_impl", "fp8_impl")
    if who == "daemon":
        if "libgomp" in leaf_dso:
            return "daemon: OpenMP runtime spin-wait (libgomp)"
        if _has(syms, "asm_exc_page_fault"):
            if _has(syms, "__x64_sys_pread64"):
                return "daemon: page faults, first touch of the source buffer (in pread)"
            if _has(syms, *quant):
                return "daemon: page faults, first touch of the quantized output"
            return "daemon: page faults, other (reply buffers)"
        if _has(syms, "__x64_sys_pread64"):
            return "daemon: pread of the source (copy out of the page cache)"
        if any(q in leaf_sym for q in quant):
            return "daemon: quantization kernels (amax + quantize)"
        if _has(syms, "fuse_dev_write", "fuse_dev_do_write", "fuse_dev_splice_write"):
            return "daemon: FUSE reply (writev: copy into the page cache)"
        if _has(syms, "fuse_dev_read", "fuse_dev_do_read", "fuse_dev_splice_read"):
            return "daemon: FUSE request read (/dev/fuse)"
        if _has(syms, "munmap", "mmap_region", "madvise", "__x64_sys_brk", "unmap_page_range",
                "do_vmi_"):
            return "daemon: malloc/free (mmap/munmap of buffers)"
        if "memmove" in leaf_sym or "memcpy" in leaf_sym:
            return "daemon: memcpy (cached tensor -> reply buffer)"
        if _has(syms, "futex"):
            return "daemon: futex (locks, wake-ups)"
        if "libgomp" in " ".join(f[1] for f in frames):
            return "daemon: OpenMP runtime spin-wait (libgomp)"
        return "daemon: other"
    # reader
    if _has(syms, "asm_exc_page_fault"):
        if _has(syms, "fuse_"):
            return "reader: mmap page faults (FUSE readahead requests)"
        return "reader: page faults (mmap of the page cache)"
    if _has(syms, "fuse_"):
        return "reader: FUSE requests (readahead, queueing)"
    if _has(syms, "copy_page_to_iter", "_copy_to_iter", "copy_user"):
        return "reader: copy out of the page cache (read)"
    if _has(syms, "page_cache_ra", "readahead", "filemap_"):
        return "reader: page cache lookup/allocation"
    if "memmove" in leaf_sym or "memcpy" in leaf_sym:
        return "reader: memcpy (user space)"
    return "reader: other"


def perf_breakdown(data, t0, t1, daemon_pids):
    """{category: % of all CPU samples in [t0, t1] (CLOCK_MONOTONIC)}, samples, window."""
    p = subprocess.run(["perf", "script", "-i", data, "-F", "comm,pid,tid,time,ip,sym,dso",
                        "--ns"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                       errors="replace")
    counts, total = {}, 0
    me = os.getpid()

    def flush(head, frames):
        nonlocal total
        if head is None:
            return
        comm, pid, ts = head
        if ts < t0 or ts > t1:
            return
        if comm == "swapper" or pid == 0:
            who = "idle"
        elif pid in daemon_pids:
            who = "daemon"
        elif comm in READER_COMMS or pid == me:
            who = "reader"
        else:
            who = "other"
        cat = classify_sample(who, frames)
        counts[cat] = counts.get(cat, 0) + 1
        total += 1

    head, frames = None, []
    for line in p.stdout.split("\n"):
        if not line.strip():
            flush(head, frames)
            head, frames = None, []
            continue
        if line[0] in " \t":
            parts = line.strip().split(None, 1)
            if len(parts) == 2:
                sym, _, dso = parts[1].rpartition(" (")
                frames.append((sym, dso.rstrip(")")))
            continue
        # "comm  pid/tid  time:" (comm may hold spaces)
        try:
            left, ts = line.rsplit(None, 1)[0], float(line.rsplit(None, 1)[1].rstrip(":"))
            comm, pidtid = left.rsplit(None, 1)
            pid = int(pidtid.split("/")[0])
            head = (comm.strip(), pid, ts)
        except (ValueError, IndexError):
            head = None
        frames = []
    flush(head, frames)
    pct = {k: 100.0 * v / total for k, v in sorted(counts.items(), key=lambda kv: -kv[1])} \
        if total else {}
    return pct, total, t1 - t0


# ---------------------------------------------------------------------------------------------
# The bench
# ---------------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.reps = args.reps
        self.spec = args.spec
        base = args.tmp or "/var/tmp"
        self.tmp = tempfile.mkdtemp(prefix="quarkfs-bench-", dir=base)
        self.models = args.models or os.path.join(self.tmp, "models")
        os.makedirs(self.models, exist_ok=True)
        self.bin = None
        self.results = {"rows": [], "raw": {}, "settings": {}, "checks": {}}
        self.seed = 20240607
        self.section_background = {}

    # ---- setup ----

    def helper(self, name):
        return os.path.join(self.bin, name)

    def build(self):
        if not self.args.no_build and os.path.exists(os.path.join(BUILD, "build.ninja")):
            log("ninja -C build")
            run(["ninja", "-C", BUILD], capture=True)
        if not os.access(QUARKFS, os.X_OK):
            raise SystemExit("bench: %s not found: build first (ninja -C build)" % QUARKFS)
        cand = os.environ.get("QUARKFS_BENCH_BIN") or os.path.join(BUILD, "tests", "bench")
        fresh = all(os.access(os.path.join(cand, h), os.X_OK) for h in HELPERS)
        if fresh:
            for h, src in (("nullfs", "nullfs.c"), ("readers", "readers.c"),
                           ("kernelbench", "kernelbench.c")):
                if os.path.getmtime(os.path.join(cand, h)) < os.path.getmtime(
                        os.path.join(BENCH_SRC, src)):
                    fresh = False
        if fresh:
            self.bin = cand
            return
        # Not built by meson (tests/meson.build without subdir('bench')): compile here.
        self.bin = os.path.join(self.tmp, "bin")
        os.makedirs(self.bin, exist_ok=True)
        cc = os.environ.get("CC", "cc")
        flags = ["-O2", "-std=c11", "-Wall", "-Wextra", "-D_GNU_SOURCE", "-D_FILE_OFFSET_BITS=64"]
        fuse = run(["pkg-config", "--cflags", "--libs", "fuse3"]).stdout.split()
        jansson = run(["pkg-config", "--libs", "jansson"]).stdout.split()
        lib = os.path.join(BUILD, "core", "libquarkfs.a")
        if not os.path.exists(lib):
            raise SystemExit("bench: %s not found: build first (ninja -C build)" % lib)
        log("compiling the helpers into %s" % self.bin)
        run([cc] + flags + [os.path.join(BENCH_SRC, "nullfs.c"), "-o", self.helper("nullfs")]
            + fuse)
        run([cc] + flags + [os.path.join(BENCH_SRC, "readers.c"), "-o", self.helper("readers"),
                            "-lpthread"])
        run([cc] + flags + ["-fopenmp", "-I" + os.path.join(ROOT, "include"),
                            os.path.join(BENCH_SRC, "kernelbench.c"), lib, "-o",
                            self.helper("kernelbench")] + jansson + ["-lm", "-lpthread"])

    def machine(self):
        info = {}
        try:
            for line in run(["lscpu"]).stdout.split("\n"):
                k, _, v = line.partition(":")
                if k.strip() in ("Model name", "CPU(s)", "Thread(s) per core", "Hypervisor vendor",
                                 "L3 cache"):
                    info[k.strip()] = v.strip()
        except Exception:
            pass
        info["kernel"] = platform.release()
        with open("/proc/meminfo") as f:
            info["MemTotal"] = f.readline().split(":")[1].strip()
        # The libfuse quarkfs was linked with (a static 3.17 build differs from pkg-config's).
        ver = run([QUARKFS, "--version"], check=False).stdout
        m = re.search(r"libfuse ([0-9.]+)", ver)
        info["libfuse"] = m.group(1) if m else run(["pkg-config", "--modversion", "fuse3"],
                                                   check=False).stdout.strip()
        info["quarkfs"] = run([QUARKFS, "--version"], check=False).stdout.strip()
        git = run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], check=False).stdout.strip()
        dirty = run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                    check=False).stdout.strip()
        info["git"] = git + (" (+ uncommitted changes)" if dirty else "")
        info["date"] = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        info["command"] = " ".join([os.path.relpath(sys.argv[0], ROOT)] + sys.argv[1:])
        info["loadavg_start"] = open("/proc/loadavg").read().split()[:3]
        self.results["machine"] = info
        log("machine: %s, %s CPUs, kernel %s, %s RAM, libfuse %s, %s, git %s" % (
            info.get("Model name"), info.get("CPU(s)"), info["kernel"], info["MemTotal"],
            info["libfuse"], info["quarkfs"], info["git"]))
        log("load average at start: %s" % " ".join(info["loadavg_start"]))

    def gen(self, name, gen_args):
        out = os.path.join(self.models, name)
        if os.path.isdir(out) and os.path.exists(os.path.join(out, "config.json")):
            return out
        log("genmodel %s %s" % (name, " ".join(gen_args)))
        tmp = out + ".part"
        shutil.rmtree(tmp, ignore_errors=True)
        run([PY, GENMODEL, tmp] + gen_args)
        os.rename(tmp, out)
        return out

    def export(self, src, spec):
        out = os.path.join(self.models, os.path.basename(src) + "-export-" + spec)
        if os.path.isdir(out) and os.listdir(out):
            return out
        log("quarkfs export --spec %s %s" % (spec, os.path.basename(src)))
        tmp = out + ".part"
        shutil.rmtree(tmp, ignore_errors=True)
        run([QUARKFS, "export", "--no-cache", "--spec", spec, src, tmp])
        os.rename(tmp, out)
        return out

    def mnt(self, name):
        return os.path.join(self.tmp, "mnt-" + name)

    def quarkfs_cmd(self, src, mnt, spec=None, extra=()):
        """quarkfs's mount command. The persistent disk cache is off (it would serve every
        tensor measured "cold" from a previous run's entries, in /var/cache/quarkfs for root)
        unless --quarkfs-opts or extra (the diskcache section) turn it on: the last -o wins."""
        return [QUARKFS, "--spec", spec or self.spec, src, mnt, "-o", "cache=off"] \
            + self.args.mount_opts.split() + self.args.quarkfs_opts.split() + list(extra)

    def nullfs_cmd(self, d, mnt):
        return [self.helper("nullfs"), d, mnt] + self.args.mount_opts.split()

    def mount_quarkfs(self, src, mnt, spec=None, extra=()):
        return mount_fs(self.quarkfs_cmd(src, mnt, spec, extra), mnt, QUARKFS)

    def mount_nullfs(self, d, mnt):
        return mount_fs(self.nullfs_cmd(d, mnt), mnt, self.helper("nullfs"))

    def add_row(self, section, name, value, unit, against=None, against_value=None, ratio=None,
                target=None, passed=None, note="", background=None):
        if background is None:
            background = self.section_background.get(section)
        row = dict(section=section, name=name, value=value, unit=unit, against=against,
                   against_value=against_value, ratio=ratio, target=target, passed=passed,
                   note=note, background=background)
        self.results["rows"].append(row)
        return row

    # ---- kernels ----

    def kernel_specs(self):
        """Every spec of `quarkfs --list-specs` but the aliases whose weight kernel is another's."""
        p = run([QUARKFS, "--list-specs"], check=False)
        names = []
        for line in p.stdout.split("\n"):
            parts = line.split()
            if parts and parts[0] != "SPEC" and parts[0] not in names:
                names.append(parts[0])
        return [n for n in names if n not in KERNEL_ALIASES]

    def section_kernels(self):
        specs = self.kernel_specs()
        log("kernels: kernelbench (qfs_quantize_layout vs memcpy, side by side): %s" %
            ", ".join(specs))
        reps = max(5, 2 * self.reps + 1)
        meter = CpuMeter([])
        cmd = [self.helper("kernelbench"), "--reps", str(reps)]
        if specs:
            cmd += ["--specs", ",".join(specs)]
        p = run(cmd)
        kbg = meter.background()
        rows = [json.loads(line) for line in p.stdout.split("\n") if line.strip()]
        self.results["raw"]["kernels"] = rows
        self.section_background["kernels"] = kbg
        by = {(r["what"], r["threads"]): r for r in rows}
        ncpu = max(t for _, t in by)

        def per_rep(r):
            return [gibs(r["bytes"], s) for s in r["seconds"]]
        mc1_g = per_rep(by[("memcpy", 1)])
        mcn_g = per_rep(by[("memcpy", ncpu)]) if ("memcpy", ncpu) in by else mc1_g
        ref = self.numpy_reference([r["what"] for r in rows if r["what"] != "memcpy"])
        table = []
        for r in rows:
            spec = r["what"]
            if spec == "memcpy" or r["threads"] != 1:
                continue
            g1 = per_rep(r)
            gn = per_rep(by[(spec, ncpu)]) if (spec, ncpu) in by else g1
            r1 = median([a / b for a, b in zip(g1, mc1_g)])
            sc = median([b / a for a, b in zip(g1, gn)])
            table.append(dict(spec=spec, format=r.get("format", ""), g1=median(g1), gn=median(gn),
                              vs_memcpy=r1, scaling=sc, numpy=ref.get(spec)))
            if spec not in ("int8", "fp8"):
                continue
            self.add_row("kernels", "%s, 1 thread" % spec, median(g1), "GiB/s", "memcpy 1 thread",
                         median(mc1_g), r1, TARGETS["kernel_vs_memcpy"],
                         r1 >= TARGETS["kernel_vs_memcpy"])
            self.add_row("kernels", "%s, %d threads" % (spec, ncpu), median(gn), "GiB/s",
                         "%s 1 thread" % spec, median(g1), sc, TARGETS["kernel_scaling"],
                         sc >= TARGETS["kernel_scaling"])
        self.results["kernel_table"] = {"memcpy_1t": median(mc1_g), "memcpy_nt": median(mcn_g),
                                        "threads": ncpu, "specs": table}

    def repeat_table_text(self):
        return self.results.get("repeat_table", "")

    def kernel_table_text(self):
        kt = self.results.get("kernel_table")
        if not kt:
            return ""
        n = kt["threads"]
        lines = ["Kernels, GiB/s of bf16 source (8192 x 8192), medians; memcpy of the same bytes: "
                 "%.2f GiB/s on 1 thread, %.2f on %d; other load %.0f%%" % (
                     kt["memcpy_1t"], kt["memcpy_nt"], n,
                     100 * self.section_background.get("kernels", 0.0)),
                 "",
                 "| spec | format | 1 thread | %d threads | 1 thread / memcpy | %d thr / 1 thr "
                 "| numpy reference | 1 thread / numpy |" % (n, n),
                 "|---|---|---:|---:|---:|---:|---:|---:|"]
        for t in kt["specs"]:
            npy = "%.3f" % t["numpy"] if t["numpy"] else ""
            vs = "%.1f" % (t["g1"] / t["numpy"]) if t["numpy"] else ""
            lines.append("| %s | %s | %.2f | %.2f | %.2f | %.2f | %s | %s |" % (
                t["spec"], t["format"], t["g1"], t["gn"], t["vs_memcpy"], t["scaling"], npy, vs))
        return "\n".join(lines)

    def numpy_reference(self, specs):
        """GiB/s of source bytes of tests/oracle/quarkref.py's numpy kernels doing the same job
        (bf16 decode + scales/zero points/exponents + quantized weight), 1 thread."""
        log("kernels: numpy reference (tests/oracle/quarkref.py)")
        try:
            specm = importlib.util.spec_from_file_location("quarkref", QUARKREF)
            qr = importlib.util.module_from_spec(specm)
            specm.loader.exec_module(qr)
            import numpy as np
        except Exception as exc:   # pragma: no cover
            log("numpy reference unavailable: %s" % exc)
            return {}
        rows, cols = 2048, 8192
        rng = np.random.default_rng(1)
        x = (rng.standard_normal(rows * cols, dtype=np.float32) * np.float32(0.02))
        raw = qr.encode_float(x, "BF16")
        del x
        out, raw_times = {}, {}
        reps = min(self.reps, 3)
        for spec in specs:
            sp = qr.SPECS.get(spec)
            if sp is None:
                continue
            times = []
            try:
                for _ in range(reps):
                    t0 = time.perf_counter()
                    xf = qr.decode_float(raw, "BF16", [rows, cols])
                    ref_quantize(qr, sp, xf, "BF16")
                    times.append(time.perf_counter() - t0)
                    del xf
            except Exception as exc:   # the reference changed under us: say so, go on
                log("  numpy reference of %s failed: %s" % (spec, exc))
                continue
            raw_times[spec] = times
            out[spec] = median([gibs(raw.nbytes, t) for t in times])
        self.results["raw"]["numpy_reference"] = {"bytes": int(raw.nbytes), "seconds": raw_times}
        return out

    # ---- cold / warm reads ----

    def pattern(self, kind, files, rep, ranges_for=None, daemon=None):
        """Runs one read pattern over files; returns {bytes, seconds, gibs, background}, where
        background is the share of the machine's CPU time used by other processes meanwhile."""
        meter = CpuMeter([daemon] if daemon else [])
        if kind == "seq":
            nbytes = file_bytes(files)
            t0 = time.perf_counter()
            subprocess.run(["cat"] + files, stdout=subprocess.DEVNULL, check=True)
            r = {"bytes": nbytes, "seconds": time.perf_counter() - t0}
        else:
            if kind == "pread16":
                cmd = [self.helper("readers"), "pread", "16", str(2 * MIB), str(self.seed + rep)]
            elif kind == "mmap":
                cmd = [self.helper("readers"), "mmap", ranges_for(rep)]
            else:
                raise ValueError(kind)
            r = json.loads(run(cmd + files).stdout)
        r["background"] = meter.background()
        r["gibs"] = gibs(r["bytes"], r["seconds"])
        if daemon:
            wait_idle(daemon)     # no leftover work (prefetch) may overlap the next measurement
        return r

    def ranges_file(self, export_dir):
        """A function rep -> path of a shuffled tensor list of the view (same layout as export)."""
        files = model_files(export_dir)
        ranges = []
        for i, f in enumerate(files):
            _, tensors = safetensors_ranges(f)
            ranges += [(i, b, e) for _, b, e in tensors if e > b]

        def make(rep):
            path = os.path.join(self.tmp, "ranges-%d.txt" % rep)
            if not os.path.exists(path):
                order = list(ranges)
                random.Random(self.seed + rep).shuffle(order)
                with open(path, "w") as f:
                    for i, b, e in order:
                        f.write("%d %d %d\n" % (i, b, e))
            return path
        return make

    def big_model(self):
        """The cold/warm model and its export (generated once): (src, export dir)."""
        src = self.gen("llama5", BIG_MODEL)
        exp = self.export(src, self.spec)
        if "big" not in self.results.setdefault("models", {}):
            view_bytes = file_bytes(model_files(exp))
            self.results["models"]["big"] = {
                "genmodel": BIG_MODEL, "source_bytes": file_bytes(model_files(src)),
                "view_bytes": view_bytes, "spec": self.spec}
            log("big model: %.2f GiB source -> %.2f GiB view (%s)" % (
                file_bytes(model_files(src)) / GIB, view_bytes / GIB, self.spec))
        return src, exp

    def check_same(self, mnts, exp, key="checksums_equal"):
        """sha256 of every file of the export and of the same names under each mountpoint of
        mnts (name -> mountpoint): the filesystems compared serve the same bytes, or exit."""
        names = os.listdir(exp)
        log("checksums of %s and the export" % ", ".join(mnts))
        sums = {k: sha256_tree([os.path.join(m, n) for n in names]) for k, m in mnts.items()}
        sums["export"] = sha256_tree(all_files(exp))
        same = all(v == sums["export"] for v in sums.values())
        self.results["checks"][key] = same
        self.results["checks"]["sha256"] = sums["export"]
        if not same:
            raise SystemExit("bench: %s and the export differ: %s" % (", ".join(mnts), sums))
        log("  equal (%d files)" % len(sums["export"]))

    def cold_round(self, what, pat, rep, systems, mnts, warm, cold, remount=None,
                   ranges_for=None, turn=None):
        """One repetition of a cold read: drops the page cache, re-reads the files of warm
        (name -> files: the source, the plain files, served from memory), calls remount() (fresh
        mounts), checks with fincore that the files of cold (name -> files) are out of the page
        cache and those of warm in it, then runs pattern pat on each of systems (name -> files)
        in an order rotated by turn (default rep). mnts: system name -> its mountpoint (the
        daemon waited for after each read). Returns {system: pattern() result}."""
        os.sync()
        drop_caches()
        for files in warm.values():
            read_all(files)
        if remount:
            remount()
        checks = {k: resident(v) for k, v in list(cold.items()) + list(warm.items())}
        if any(checks[k] > 0.001 for k in cold) or any(checks[k] < 0.99 for k in warm):
            log("  warning: cache state not as planned: %s" % checks)
        turn = rep if turn is None else turn
        order = list(systems)
        order = order[turn % len(order):] + order[:turn % len(order)]
        out = {}
        for s in order:
            out[s] = self.pattern(pat, systems[s], rep, ranges_for, _mounts.get(mnts.get(s)))
        log("  %s %-8s rep %d: %s GiB/s (other load %.0f%%)" % (
            what, pat, rep + 1, ", ".join("%s %.2f" % (s, out[s]["gibs"]) for s in order),
            100 * median([out[s]["background"] for s in order])))
        return out

    def side_by_side(self, section, label, runs, who, against, against_label, target=None):
        """Adds the row `who` vs `against` from per-repetition runs (dicts from pattern())."""
        a = [x["gibs"] for x in runs[who]]
        b = [x["gibs"] for x in runs[against]]
        r = median([x / y for x, y in zip(a, b)])
        bg = median([x["background"] for x in runs[who] + runs[against]])
        return self.add_row(section, label, median(a), "GiB/s", against_label, median(b), r,
                            target, (r >= target) if target else None, background=bg)

    def section_reads(self, do_cold, do_warm):
        src, exp = self.big_model()
        src_files = all_files(src)
        exp_files = model_files(exp)
        qmnt, nmnt = self.mnt("quarkfs"), self.mnt("nullfs")
        ranges_for = self.ranges_file(exp)
        names = [os.path.basename(f) for f in exp_files]
        qfiles = [os.path.join(qmnt, n) for n in names]
        nfiles = [os.path.join(nmnt, n) for n in names]

        log("mounting nullfs (loads the export into memory) and quarkfs")
        self.mount_nullfs(exp, nmnt)
        self.mount_quarkfs(src, qmnt)
        # One checksum: quarkfs, nullfs and the export serve the same bytes.
        self.check_same({"quarkfs": qmnt, "nullfs": nmnt}, exp)
        self.results["settings"]["quarkfs"] = conn_settings(qmnt)
        self.results["settings"]["nullfs"] = conn_settings(nmnt)
        for fs_name in ("quarkfs", "nullfs"):
            log("  " + settings_line(fs_name, self.results["settings"][fs_name]))
        # Page cache folios: 4 KiB pages on FUSE vs large folios on the plain file's ext4.
        folios = {"quarkfs": large_folio_share(qfiles[0]), "nullfs": large_folio_share(nfiles[0]),
                  "plain": large_folio_share(exp_files[0])}
        self.results["settings"]["large_folio_share"] = folios
        log("  page cache pages in large folios: %s" % ", ".join(
            "%s %.0f%%" % (k, 100 * v) for k, v in folios.items()))

        os.sync()
        wanted = self.args.patterns.split(",")
        patterns = [p for p in PATTERNS if p in wanted]
        systems = {"nullfs": nfiles, "quarkfs": qfiles, "plain": exp_files}
        mnts = {"nullfs": nmnt, "quarkfs": qmnt}
        label = PATTERN_LABEL
        if do_cold:
            cold = {p: {s: [] for s in systems} for p in patterns}
            for rep in range(self.reps):
                for pat in patterns:
                    unmount(qmnt)
                    r = self.cold_round(
                        "cold", pat, rep, systems, mnts,
                        warm={"source": src_files, "plain": exp_files},
                        cold={"view": qfiles, "nullfs": nfiles},
                        remount=lambda: self.mount_quarkfs(src, qmnt), ranges_for=ranges_for)
                    for s in systems:
                        cold[pat][s].append(r[s])
                self.results["settings"]["quarkfs_after_cold_rep%d" % (rep + 1)] = \
                    conn_settings(qmnt)
            self.results["raw"]["cold"] = cold
            for pat in patterns:
                tgt = TARGETS["cold_vs_nullfs"] if pat in ("seq", "pread16") else None
                self.side_by_side("cold", "cold " + label[pat], cold[pat], "quarkfs", "nullfs",
                                  "nullfs, same options", tgt)
                self.side_by_side("cold", "cold " + label[pat], cold[pat], "quarkfs", "plain",
                                  "plain file, page cache")
                self.side_by_side("cold", "(channel) nullfs " + label[pat], cold[pat], "nullfs",
                                  "plain", "plain file, page cache")
            # The source cold as well: against the exported file read from disk.
            cs = {"quarkfs": [], "plain": []}
            for rep in range(self.reps if "srccold" in wanted else 0):
                unmount(qmnt)
                r = self.cold_round(
                    "cold seq, source cold:", "seq", rep,
                    {"quarkfs": qfiles, "plain": exp_files}, mnts, warm={},
                    cold={"view": qfiles, "source": src_files, "plain": exp_files},
                    remount=lambda: self.mount_quarkfs(src, qmnt))
                for s in cs:
                    cs[s].append(r[s])
            self.results["raw"]["cold_source_cold"] = cs
            if cs["quarkfs"]:
                self.side_by_side("cold", "cold seq (cat), source cold too", cs, "quarkfs", "plain",
                                  "plain file read from disk")

        if do_warm:
            # Same page-cache history for all three: dropped, read once, then re-read.
            unmount(qmnt)
            drop_caches()
            self.mount_quarkfs(src, qmnt)
            for files in (qfiles, nfiles, exp_files):
                read_all(files)
            warm = {p: {s: [] for s in systems} for p in patterns}
            for rep in range(self.reps):
                for pat in patterns:
                    order = ["quarkfs", "nullfs", "plain"]
                    order = order[rep % 3:] + order[:rep % 3]
                    for s in order:
                        warm[pat][s].append(self.pattern(
                            pat, systems[s], rep, ranges_for,
                            _mounts.get(qmnt if s == "quarkfs" else nmnt)))
                    log("  warm %-8s rep %d: %s GiB/s" % (pat, rep + 1, ", ".join(
                        "%s %.2f" % (s, warm[pat][s][-1]["gibs"]) for s in order)))
            chk = min(resident(qfiles), resident(nfiles))
            if chk < 0.999:
                log("  warning: a view was not fully in the page cache (%.3f)" % chk)
            self.results["raw"]["warm"] = warm
            for pat in patterns:
                tgt = TARGETS["warm_vs_plain"] if pat == "seq" else None
                self.side_by_side("warm", "warm re-read " + label[pat], warm[pat], "quarkfs",
                                  "plain", "plain file, page cache", tgt)
                self.side_by_side("warm", "warm re-read " + label[pat], warm[pat], "quarkfs",
                                  "nullfs", "nullfs, page cache")
        unmount(qmnt)
        unmount(nmnt)

    # ---- channel: nullfs against libfuse's passthrough_ll ----

    def passthrough_ll(self):
        """libfuse's passthrough_ll example, compiled from the libfuse3-dev package into the
        temporary directory (the source stays where it is): the path of the binary."""
        out = os.path.join(self.tmp, "libfuse", "passthrough_ll")
        if os.access(out, os.X_OK):
            return out
        src = os.path.join(LIBFUSE_EXAMPLES, "passthrough_ll.c")
        if not os.path.exists(src):
            raise SystemExit("bench: %s not found (apt-get install libfuse3-dev, or set "
                             "LIBFUSE_EXAMPLES)" % src)
        os.makedirs(os.path.dirname(out), exist_ok=True)
        fuse = run(["pkg-config", "--cflags", "--libs", "fuse3"]).stdout.split()
        log("compiling %s into %s" % (src, out))
        run([os.environ.get("CC", "cc"), "-O2", "-Wall", "-I" + LIBFUSE_EXAMPLES, src, "-o", out]
            + fuse)
        return out

    def passthrough_ll_cmd(self, d, mnt):
        """passthrough_ll with its default options: source=d only says which directory it
        mirrors (else /); it daemonizes once mounted, as nullfs and quarkfs do."""
        return [self.passthrough_ll(), "-o", "source=" + d, mnt]

    def section_channel(self):
        """The channel (nullfs, quarkfs's options) against libfuse's passthrough_ll with its
        defaults over the exported files, both cold (their page cache dropped), the exported
        ext4 files warm under both: everything is served from memory."""
        _, exp = self.big_model()
        exp_files = model_files(exp)
        names = [os.path.basename(f) for f in exp_files]
        nmnt, pmnt = self.mnt("nullfs"), self.mnt("passthrough_ll")
        nfiles = [os.path.join(nmnt, n) for n in names]
        pfiles = [os.path.join(pmnt, n) for n in names]
        ranges_for = self.ranges_file(exp)
        log("mounting nullfs and passthrough_ll (%s)" % " ".join(
            os.path.basename(a) for a in self.passthrough_ll_cmd(exp, pmnt)))
        self.mount_nullfs(exp, nmnt)
        mount_fs(self.passthrough_ll_cmd(exp, pmnt), pmnt, self.passthrough_ll())
        self.check_same({"nullfs": nmnt, "passthrough_ll": pmnt}, exp, "channel_checksums_equal")
        for fs_name, mnt in (("nullfs", nmnt), ("passthrough_ll", pmnt)):
            self.results["settings"].setdefault(fs_name, conn_settings(mnt))
            log("  " + settings_line(fs_name, self.results["settings"][fs_name]))
        systems = {"nullfs": nfiles, "passthrough_ll": pfiles, "plain": exp_files}
        mnts = {"nullfs": nmnt, "passthrough_ll": pmnt}
        wanted = self.args.patterns.split(",")
        patterns = [p for p in PATTERNS if p in wanted]
        runs = {p: {s: [] for s in systems} for p in patterns}
        for rep in range(self.reps):
            for pat in patterns:
                r = self.cold_round("channel", pat, rep, systems, mnts,
                                    warm={"plain": exp_files},
                                    cold={"nullfs": nfiles, "passthrough_ll": pfiles},
                                    ranges_for=ranges_for)
                for s in systems:
                    runs[pat][s].append(r[s])
        self.results["raw"]["channel"] = runs
        for pat in patterns:
            tgt = TARGETS["channel_vs_passthrough"] if pat in ("seq", "pread16") else None
            self.side_by_side("channel", "(channel) nullfs " + PATTERN_LABEL[pat], runs[pat],
                              "nullfs", "passthrough_ll", "libfuse passthrough_ll, defaults", tgt)
            self.side_by_side("channel", "passthrough_ll " + PATTERN_LABEL[pat], runs[pat],
                              "passthrough_ll", "plain", "plain file, page cache")
        unmount(pmnt)
        unmount(nmnt)

    # ---- diskcache: remount on a warm persistent cache ----

    def quarkfs_status(self, mnt):
        """The counters of `quarkfs status MNT --json` ({} if it fails)."""
        p = run([QUARKFS, "status", mnt, "--json"], check=False)
        try:
            return json.loads(p.stdout)
        except ValueError:
            return {}

    def section_diskcache(self):
        """`cat` of the view cold with an empty cache_dir (which that read fills), then, after
        unmount, drop and re-warming the source, cold again through a fresh mount on the same
        cache_dir: its entries come from disk; a third mount has them in the page cache.
        nullfs, cold, is read in each round too, before or after quarkfs by turns."""
        src, exp = self.big_model()
        src_files = all_files(src)
        names = [os.path.basename(f) for f in model_files(exp)]
        qmnt, nmnt = self.mnt("quarkfs"), self.mnt("nullfs")
        qfiles = [os.path.join(qmnt, n) for n in names]
        nfiles = [os.path.join(nmnt, n) for n in names]
        cdir = os.path.join(self.tmp, "diskcache")
        extra = ["-o", "cache=on,cache_dir=" + cdir]
        self.mount_nullfs(exp, nmnt)
        mnts = {"nullfs": nmnt}
        rounds = (("empty", "empty disk cache (this read fills it)"),
                  ("remount", "remount, disk cache entries read from disk"),
                  ("remount_pc", "remount, disk cache entries in the page cache"))
        runs = {k: [] for k, _ in rounds}
        runs.update({"nullfs " + k: [] for k, _ in rounds})
        status = {k: [] for k, _ in rounds}

        def cache_files():
            return [os.path.join(d, f) for d, _, fs in os.walk(cdir) for f in fs
                    if os.path.getsize(os.path.join(d, f)) > 0]

        for rep in range(self.reps):
            unmount(qmnt)
            shutil.rmtree(cdir, ignore_errors=True)
            os.makedirs(cdir)
            for i, (key, what) in enumerate(rounds):
                unmount(qmnt)
                mnts[key] = qmnt
                systems = {key: qfiles, "nullfs": nfiles}
                entries = cache_files()
                warm, cold = {"source": src_files}, {"view": qfiles, "nullfs": nfiles}
                if entries:
                    (warm if key == "remount_pc" else cold)["disk cache"] = entries
                r = self.cold_round("diskcache", "seq", rep, systems, mnts, warm, cold,
                                    remount=lambda: self.mount_quarkfs(src, qmnt, extra=extra),
                                    turn=rep + i)
                st = self.quarkfs_status(qmnt)
                status[key].append(st)
                runs[key].append(r[key])
                runs["nullfs " + key].append(r["nullfs"])
                log("    %s: %d tensors quantized, %d disk hits, %d disk writes; %d entries, "
                    "%.2f GiB on disk before the mount" % (
                        what, st.get("tensors_quantized", -1), st.get("disk_hits", -1),
                        st.get("disk_writes", -1), len(entries), file_bytes(entries) / GIB))
                if key == "empty" and not st.get("disk_writes"):
                    log("  warning: nothing was written to the disk cache %s" % cdir)
                elif key != "empty" and (st.get("tensors_quantized") != 0 or
                                         not st.get("disk_hits")):
                    log("  warning: the remount did not serve everything from the disk cache")
            unmount(qmnt)
        shutil.rmtree(cdir, ignore_errors=True)
        unmount(nmnt)
        self.results["raw"]["diskcache"] = {"runs": runs, "status": status}
        label = dict(rounds)
        for key in ("remount", "remount_pc"):
            self.side_by_side("diskcache", "cold seq (cat), " + label[key], runs, key, "empty",
                              "cold, " + label["empty"])
        for key, _ in rounds:
            self.side_by_side("diskcache", "cold seq (cat), " + label[key], runs, key,
                              "nullfs " + key, "nullfs, same options")


    # ---- repeat loads ----

    def wait_view_files(self, mnt, n, max_s=120):
        """Waits until the mount has written its n view files (not timed); returns its status."""
        deadline = time.time() + max_s
        while True:
            st = self.quarkfs_status(mnt)
            vf = st.get("view_files", {})
            if (vf.get("present", 0) >= n and vf.get("queued", 1) == 0) or time.time() > deadline:
                return st
            time.sleep(0.2)

    def section_repeat(self):
        """Repeat loads: the same whole-model read by each reader over the exported files and
        over the mounts of a model's life (see the module doc); seconds per load."""
        src, exp = self.big_model()
        src_files, exp_files = all_files(src), model_files(exp)
        names = [os.path.basename(f) for f in exp_files]
        qmnt = self.mnt("quarkfs")
        qfiles = [os.path.join(qmnt, n) for n in names]
        cdir = os.path.join(self.tmp, "repeat-cache")
        lpy = self.args.loader_python
        readers = ["cat"]
        if lpy and os.access(lpy, os.X_OK) and run([lpy, "-c", "import safetensors, torch"],
                                                   check=False).returncode == 0:
            readers.append("safetensors")
        else:
            log("  repeat: no safetensors reader (--loader-python %s has no safetensors+torch)"
                % lpy)

        def load(reader, files):
            if reader == "cat":
                t0 = time.perf_counter()
                subprocess.run(["cat"] + files, stdout=subprocess.DEVNULL, check=True)
                return time.perf_counter() - t0
            return float(run([lpy, "-c", ST_READ] + files).stdout.split()[-1])

        def mount(*opts):
            extra = ["-o", ",".join(opts)] if opts else []
            self.mount_quarkfs(src, qmnt, extra=extra)

        def entries():
            v1 = os.path.join(cdir, "v1")
            return [os.path.join(d, f) for d, _, fs in os.walk(v1) for f in fs]

        def views():
            d = os.path.join(cdir, "files")
            return [os.path.join(d, f) for f in os.listdir(d) if f.endswith(".view")] \
                if os.path.isdir(d) else []

        on = ("cache=on", "cache_dir=" + cdir)
        # (key, label, page cache before: warm files, mount options or None for the export)
        rows = [
            ("exp_warm", "exported dir, page cache warm", "exp", None),
            ("exp_cold", "exported dir, page cache cold", None, None),
            ("off", "mount, cache=off, source warm", "src", ()),
            ("first", "mount, disk cache, first load (fills it)", "src", on),
            ("hits", "second mount, all disk hits (view_files=off)", "src+entries",
             on + ("view_files=off",)),
            ("pt", "second mount, view files, passthrough", "views", on),
            ("chan", "second mount, view files, channel", "views", on + ("passthrough=off",)),
            ("pt_cold", "cache files and source evicted, passthrough", None, on),
            ("chan_cold", "cache files and source evicted, channel", None,
             on + ("passthrough=off",)),
        ]
        t = {(r, k): [] for r in readers for k, *_ in rows}
        status = {}
        for rep in range(self.reps):
            for reader in readers:
                for key, label, warm, opts in rows:
                    unmount(qmnt)
                    if key == "first":
                        shutil.rmtree(cdir, ignore_errors=True)
                        os.makedirs(cdir)
                    os.sync()
                    drop_caches()
                    for w in (warm or "").split("+"):
                        read_all({"exp": exp_files, "src": src_files, "entries": entries(),
                                  "views": views(), "": []}[w])
                    if opts is not None:
                        mount(*opts)
                    dt = load(reader, exp_files if opts is None else qfiles)
                    t[(reader, key)].append(dt)
                    if key == "first":   # not timed: `quarkfs warm` then writes the view files
                        run([QUARKFS, "warm", qmnt])
                    if opts is not None:
                        st = self.wait_view_files(qmnt, len(names)) if key == "first" \
                            else self.quarkfs_status(qmnt)
                        status.setdefault(key, []).append(st)
                        vf = st.get("view_files", {})
                        if key == "hits" and st.get("tensors_quantized"):
                            log("  warning: the all-hits mount quantized %d tensors"
                                % st["tensors_quantized"])
                        if key.startswith("pt") and vf.get("opens_passthrough", 0) < len(names):
                            log("  warning: %s: not served by passthrough (%s)"
                                % (label, vf.get("served_by")))
                        if key == "pt" and rep == 0 and reader == readers[0]:
                            self.check_same({"quarkfs": qmnt}, exp, "repeat_checksums_equal")
                    log("  repeat rep %d %-11s %-48s %.3f s" % (rep + 1, reader, label, dt))
            unmount(qmnt)
        shutil.rmtree(cdir, ignore_errors=True)
        self.results["raw"]["repeat"] = {"seconds": {"%s %s" % k: v for k, v in t.items()},
                                         "status": status}
        label = {k: l for k, l, *_ in rows}
        against = {"off": "exp_warm", "first": "exp_warm", "hits": "exp_warm", "pt": "exp_warm",
                   "chan": "exp_warm", "pt_cold": "exp_cold", "chan_cold": "exp_cold"}
        nbytes = file_bytes(exp_files)
        lines = ["| load | reader | seconds | against | seconds | ratio (time) |",
                 "|---|---|---:|---|---:|---:|"]

        def ratio(reader, a, b):
            return median([x / y for x, y in zip(t[(reader, a)], t[(reader, b)])])

        for reader in readers:
            for key, _, _, _ in rows:
                ref = against.get(key)
                cmp_ = [(ref, label.get(ref))] if ref else [(None, "")]
                if key == "first":
                    cmp_.append(("off", label["off"]))
                for b, bl in cmp_:
                    a_s = median(t[(reader, key)])
                    if b is None:
                        lines.append("| %s | %s | %.3f | | | |" % (label[key], reader, a_s))
                        continue
                    r = ratio(reader, key, b)
                    lines.append("| %s | %s | %.3f | %s | %.3f | %.2f |" % (
                        label[key], reader, a_s, bl, median(t[(reader, b)]), r))
                    tgt = 1 / 1.05 if (key, b) == ("first", "off") else \
                        1 / 1.1 if key in ("pt", "pt_cold") else None
                    speed = median([y / x for x, y in zip(t[(reader, key)], t[(reader, b)])])
                    self.add_row("repeat", "%s (%s)" % (label[key], reader),
                                 gibs(nbytes, a_s), "GiB/s", bl, gibs(nbytes, median(t[(reader, b)])),
                                 speed, tgt, (speed >= tgt) if tgt else None)
        self.results["repeat_table"] = "\n".join(lines)

    # ---- mount time ----

    def section_mount(self):
        src = self.gen("shards100", SHARDS_MODEL)
        exp = self.export(src, self.spec)
        nshards = len(model_files(src))
        mnt = self.mnt("shards")
        read_all(all_files(src))
        reps = max(5, 2 * self.reps)
        res = {"quarkfs": [], "nullfs": [], "quarkfs_return": [], "quarkfs_source_cold": []}

        def one(cmd, binary, key, ret_key=None):
            t0 = time.perf_counter()
            dt_ret = mount_fs(cmd, mnt, binary)
            for name in os.listdir(mnt):
                os.stat(os.path.join(mnt, name))
            dt = time.perf_counter() - t0
            res[key].append(dt)
            if ret_key:
                res[ret_key].append(dt_ret)
            unmount(mnt)

        for rep in range(reps):
            one(self.quarkfs_cmd(src, mnt), QUARKFS, "quarkfs", "quarkfs_return")
            one(self.nullfs_cmd(exp, mnt), self.helper("nullfs"), "nullfs")
        for rep in range(self.reps):
            drop_caches()
            one(self.quarkfs_cmd(src, mnt), QUARKFS, "quarkfs_source_cold")
        self.results["raw"]["mount"] = res
        ms = median(res["quarkfs"]) * 1e3
        log("mount %d shards: quarkfs %.1f ms (command returned after %.1f ms), nullfs %.1f ms, "
            "quarkfs source cold %.1f ms" % (nshards, ms, median(res["quarkfs_return"]) * 1e3,
                                             median(res["nullfs"]) * 1e3,
                                             median(res["quarkfs_source_cold"]) * 1e3))
        self.add_row("mount", "mount %d shards, until ls -l answers" % nshards, ms, "ms",
                     "nullfs, same files", median(res["nullfs"]) * 1e3,
                     ms / (median(res["nullfs"]) * 1e3), TARGETS["mount_ms"],
                     ms < TARGETS["mount_ms"], note="target is absolute: < 100 ms")
        self.add_row("mount", "mount %d shards, source cold" % nshards,
                     median(res["quarkfs_source_cold"]) * 1e3, "ms")

    # ---- first byte ----

    def fb_offset(self, src, spec):
        specm = importlib.util.spec_from_file_location("quarkref", QUARKREF)
        qr = importlib.util.module_from_spec(specm)
        specm.loader.exec_module(qr)
        files = model_files(src)
        plan = qr.plan_safetensors(os.path.basename(files[0]), files[0], spec, [], [])
        for t in plan.outputs:
            if t.name == FB_TENSOR:
                return os.path.basename(files[0]), len(plan.header) + t.begin, plan.header, \
                    plan.quantized[FB_TENSOR].nbytes
        raise SystemExit("bench: %s is not in the view" % FB_TENSOR)

    def section_firstbyte(self, specs):
        src = self.gen("fb1g", FB_MODEL)
        mnt = self.mnt("fb")
        read_all(all_files(src))
        self.results["raw"]["firstbyte"] = {}
        for spec in specs:
            fname, off, header, tbytes = self.fb_offset(src, spec)
            times, bgs = [], []
            for rep in range(self.reps):
                if resident(model_files(src)) < 0.999:
                    read_all(model_files(src))
                self.mount_quarkfs(src, mnt, spec)
                path = os.path.join(mnt, fname)
                meter = CpuMeter([_mounts.get(mnt)])
                t0 = time.perf_counter()
                fd = os.open(path, os.O_RDONLY)
                b = os.pread(fd, 1, off)
                dt = time.perf_counter() - t0
                bgs.append(meter.background())
                head = os.pread(fd, len(header), 0)
                os.close(fd)
                if len(b) != 1 or head != header:
                    raise SystemExit("bench: first-byte read: the view's header is not the "
                                     "planned one (offset would be wrong)")
                times.append(dt)
                unmount(mnt)
            self.results["raw"]["firstbyte"][spec] = times
            ms = median(times) * 1e3
            log("first byte of %s (%.2f GiB bf16), %s: %.0f ms (%s)" % (
                FB_TENSOR, tbytes / GIB, spec, ms, ", ".join("%.0f" % (t * 1e3) for t in times)))
            self.add_row("firstbyte", "first byte of a %.0f GiB tensor, %s" % (tbytes / GIB, spec),
                         ms, "ms", target=TARGETS["firstbyte_ms"],
                         passed=ms < TARGETS["firstbyte_ms"], note="target is absolute: < 250 ms",
                         background=median(bgs))

    # ---- perf ----

    def perf_record(self, out, fn, daemon_pids=()):
        """perf record -g -a around fn(); writes out.data, text summaries and the breakdown of
        the samples taken while fn ran (by CLOCK_MONOTONIC timestamps)."""
        data = out + ".data"
        p = subprocess.Popen(["perf", "record", "-g", "-a", "-F", "1999", "-k", "CLOCK_MONOTONIC",
                              "-o", data], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)
        try:
            t0 = time.monotonic()
            result = fn()
            t1 = time.monotonic()
        finally:
            p.send_signal(signal.SIGINT)
            p.wait(timeout=60)
        pids = set(pid for pid in daemon_pids if pid)
        pct, n, window = perf_breakdown(data, t0, t1, pids)
        name = os.path.basename(out)
        self.results.setdefault("perf", {})[name] = {"window_s": window, "samples": n,
                                                     "percent": pct}
        with open(out + ".breakdown.txt", "w") as f:
            f.write("%s: %d samples in %.2f s (2 CPUs x 1999 Hz)\n" % (name, n, window))
            for k, v in pct.items():
                f.write("%6.1f%%  %s\n" % (v, k))
        log("perf %s: %.2f s, %d samples" % (name, window, n))
        for k, v in list(pct.items())[:12]:
            log("    %5.1f%%  %s" % (v, k))
        for name, extra in (("by-comm-dso", ["--sort", "comm,dso"]),
                            ("by-sym", ["--sort", "comm,sym", "-g", "none"]),
                            ("daemon-callers", ["--sort", "sym", "--comms", "quarkfs,nullfs",
                                                "-g", "caller,0.5,callee,function,percent",
                                                "--percent-limit", "2"])):
            r = run(["perf", "report", "-i", data, "--stdio", "--no-children",
                     "--percent-limit", "0.5"] + extra, check=False)
            with open("%s.%s.txt" % (out, name), "w") as f:
                f.write(r.stdout)
        return result

    def section_perf(self, outdir):
        os.makedirs(outdir, exist_ok=True)
        # The kernels alone, one spec at a time, 1 thread then all threads.
        ncpu = os.cpu_count() or 1
        for spec in ("int8", "fp8"):
            for threads in sorted(set([1, ncpu])):
                data = os.path.join(outdir, "kernels-%s-%dt.data" % (spec, threads))
                run(["perf", "record", "-g", "-F", "1999", "-o", data, "--",
                     self.helper("kernelbench"), "--specs", spec, "--threads", str(threads),
                     "--spin", "3"])
                r = run(["perf", "report", "-i", data, "--stdio", "--no-children", "--sort",
                         "sym", "-g", "none", "--percent-limit", "0.5"], check=False)
                with open(data[:-5] + ".by-sym.txt", "w") as f:
                    f.write(r.stdout)
                top = [ln.strip() for ln in r.stdout.split("\n")
                       if ln.strip() and ln.strip()[0].isdigit()]
                self.results.setdefault("perf", {})["kernels-%s-%dt" % (spec, threads)] = top[:10]
                log("perf kernels %s, %d thread(s): %s" % (spec, threads, "; ".join(top[:6])))
        src, exp = self.big_model()
        src_files = all_files(src)
        exp_files = model_files(exp)
        qmnt, nmnt = self.mnt("quarkfs"), self.mnt("nullfs")
        names = [os.path.basename(f) for f in exp_files]
        ranges_for = self.ranges_file(exp)
        self.mount_nullfs(exp, nmnt)
        for pat in ("seq", "pread16", "mmap"):
            for fs_name in ("quarkfs", "nullfs"):
                unmount(qmnt)
                drop_caches()
                read_all(src_files)
                self.mount_quarkfs(src, qmnt)
                mnt = qmnt if fs_name == "quarkfs" else nmnt
                files = [os.path.join(mnt, n) for n in names]
                resident(files)     # the first open sets the readahead, as in the timed runs
                out = os.path.join(outdir, "%s-cold-%s" % (fs_name, pat))
                r = self.perf_record(out, lambda: self.pattern(pat, files, 0, ranges_for),
                                     [_mounts.get(mnt)])
                log("perf: %s cold %s: %.2f GiB/s under perf -> %s.*" % (fs_name, pat,
                                                                         r["gibs"], out))
        # Warm re-read: the view in the page cache against the plain file.
        if not mounted(qmnt):
            self.mount_quarkfs(src, qmnt)
        qfiles = [os.path.join(qmnt, n) for n in names]
        read_all(qfiles)
        read_all(exp_files)
        for fs_name, files in (("quarkfs", qfiles), ("plain", exp_files)):
            out = os.path.join(outdir, "%s-warm-seq" % fs_name)
            r = self.perf_record(out, lambda: self.pattern("seq", files, 0), [_mounts.get(qmnt)])
            log("perf: %s warm seq: %.2f GiB/s under perf -> %s.*" % (fs_name, r["gibs"], out))
        unmount(qmnt)
        unmount(nmnt)
        src = self.gen("fb1g", FB_MODEL)
        mnt = self.mnt("fb")
        read_all(all_files(src))
        fname, off, _, _ = self.fb_offset(src, self.spec)
        self.mount_quarkfs(src, mnt)

        def fb():
            fd = os.open(os.path.join(mnt, fname), os.O_RDONLY)
            t0 = time.perf_counter()
            os.pread(fd, 1, off)
            dt = time.perf_counter() - t0
            os.close(fd)
            return dt
        out = os.path.join(outdir, "quarkfs-firstbyte")
        dt = self.perf_record(out, fb, [_mounts.get(mnt)])
        log("perf: first byte %.0f ms under perf -> %s.*" % (dt * 1e3, out))
        unmount(mnt)

    # ---- report ----

    def table(self):
        rows = self.results["rows"]
        lines = ["| measurement | value | against | that | ratio | target | verdict | other load |",
                 "|---|---:|---|---:|---:|---:|---|---:|"]
        for r in rows:
            fmt = "%.2f" if r["unit"] == "GiB/s" else "%.0f"
            val = (fmt % r["value"]) + " " + r["unit"]
            that = (fmt % r["against_value"]) + " " + r["unit"] if r["against_value"] is not None \
                else ""
            ratio = "%.2f" % r["ratio"] if r["ratio"] is not None else ""
            if r["target"] is None:
                tgt, verdict = "", ""
            elif r["unit"] == "ms":
                tgt = "< %.0f ms" % r["target"]
                verdict = "met" if r["passed"] else "MISSED (%.1fx the target)" % (
                    r["value"] / r["target"])
            else:
                tgt = ">= %.2f" % r["target"]
                verdict = "met" if r["passed"] else "MISSED (%.0f%% of the target)" % (
                    100.0 * r["ratio"] / r["target"])
            bg = "%.0f%%" % (100 * r["background"]) if r.get("background") is not None else ""
            lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
                r["name"], val, r["against"] or "", that, ratio, tgt, verdict, bg))
        return "\n".join(lines)

    def settings_text(self):
        out = []
        for fs_name in ("quarkfs", "nullfs", "passthrough_ll"):
            s = self.results["settings"].get(fs_name)
            if s:
                out.append(settings_line(fs_name, s) + "; " + s.get("options", ""))
        last = [k for k in self.results["settings"] if k.startswith("quarkfs_after_cold")]
        if last:
            out.append(settings_line("quarkfs", self.results["settings"][last[-1]]) +
                       " (after the cold reads)")
        folios = self.results["settings"].get("large_folio_share")
        if folios:
            out.append("page cache pages in large folios: " + ", ".join(
                "%s %.0f%%" % (k, 100 * v) for k, v in folios.items()))
        return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5, help="repetitions per measurement (default 5)")
    ap.add_argument("--spec", default="int8", help="spec of the mounted views (default int8)")
    ap.add_argument("--firstbyte-specs", default="int8,fp8")
    ap.add_argument("--only", default="kernels,cold,warm,channel,diskcache,repeat,mount,firstbyte",
                    help="comma-separated sections: kernels,cold,warm,channel,diskcache,repeat,"
                    "mount,firstbyte,perf")
    ap.add_argument("--loader-python", metavar="PY",
                    default=os.path.join(ROOT, "build-venv", "bin", "python3"),
                    help="Python with safetensors and torch for the repeat section's loader "
                    "(default build-venv/bin/python3 of the source tree)")
    ap.add_argument("--patterns", default="seq,pread16,mmap,srccold",
                    help="read patterns of the cold/warm sections (srccold: seq with the source "
                    "cold too)")
    ap.add_argument("--perf", metavar="DIR", help="also profile (perf record -g -a) into DIR")
    ap.add_argument("--json", metavar="FILE", help="write every result (all repetitions) here")
    ap.add_argument("--markdown", metavar="FILE", help="write the table of ratios here")
    ap.add_argument("--tmp", metavar="DIR", help="where the temporary directory goes (/var/tmp)")
    ap.add_argument("--models", metavar="DIR", help="keep/reuse the generated models here")
    ap.add_argument("--mount-opts", default="", metavar="OPTS",
                    help="extra mount options for quarkfs AND nullfs, e.g. "
                    "'-o readahead_kb=4096,max_background=128,max_threads=32'")
    ap.add_argument("--quarkfs-opts", default="", metavar="OPTS",
                    help="extra options for quarkfs only, e.g. '-o threads=1,cache_mem=2G'")
    ap.add_argument("--wait-quiet", type=float, default=60, metavar="S",
                    help="before each section wait up to S seconds for other processes to use "
                    "< 25%% of the CPUs (default 60; 0 = never wait)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--no-build", action="store_true", help="do not run ninja -C build first")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench: run as root (mounts, drop_caches, bdi readahead)")
    if not os.path.exists("/dev/fuse"):
        raise SystemExit("bench: /dev/fuse missing")
    if args.reps < 1:
        raise SystemExit("bench: --reps must be >= 1")
    sections = set(s for s in args.only.split(",") if s)
    unknown = sections - set(SECTIONS)
    if unknown:
        raise SystemExit("bench: unknown section(s) %s (known: %s)" % (
            ",".join(sorted(unknown)), ",".join(SECTIONS)))
    if args.perf:
        sections.add("perf")
    if "perf" in sections and not args.perf:
        raise SystemExit("bench: the perf section needs --perf DIR")
    t_start = time.time()
    b = Bench(args)
    atexit.register(lambda: (unmount_all(), release_fusectl(), None if args.keep else
                             shutil.rmtree(b.tmp, ignore_errors=True)))
    ensure_fusectl()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(1))
    b.build()
    b.machine()
    log("temporary directory %s" % b.tmp)

    def quiet(name):
        if args.wait_quiet > 0:
            bg = wait_quiet(args.wait_quiet)
            log("%s: other processes use %.0f%% of the CPUs" % (name, 100 * bg))
    if "kernels" in sections:
        quiet("kernels")
        b.section_kernels()
    if "cold" in sections or "warm" in sections:
        quiet("reads")
        b.section_reads("cold" in sections, "warm" in sections)
    if "channel" in sections:
        quiet("channel")
        b.section_channel()
    if "diskcache" in sections:
        quiet("diskcache")
        b.section_diskcache()
    if "repeat" in sections:
        quiet("repeat")
        b.section_repeat()
    if "mount" in sections:
        quiet("mount")
        b.section_mount()
    if "firstbyte" in sections:
        quiet("firstbyte")
        b.section_firstbyte([s for s in args.firstbyte_specs.split(",") if s])
    if "perf" in sections:
        quiet("perf")
        b.section_perf(os.path.abspath(args.perf))
    b.results["machine"]["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    b.results["machine"]["seconds"] = round(time.time() - t_start, 1)
    m = b.results["machine"]
    print()
    print("quarkfs benchmark — %s, %s CPUs, kernel %s, libfuse %s; %s; git %s; %s" % (
        m.get("Model name"), m.get("CPU(s)"), m["kernel"], m["libfuse"], m["quarkfs"], m["git"],
        m["date"]))
    print("command: %s; %d repetitions (medians); %.0f s; load average %s at start, %s at end" % (
        m["command"], args.reps, m["seconds"], " ".join(m["loadavg_start"]),
        " ".join(m["loadavg_end"])))
    if b.results["settings"]:
        print(b.settings_text())
    print()
    ktable = b.kernel_table_text()
    if ktable:
        print(ktable)
        print()
    rtable = b.repeat_table_text()
    if rtable:
        print("repeat loads (medians of %d; ratio = median of per-repetition time ratios):"
              % args.reps)
        print(rtable)
        print()
    table = b.table()
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write((ktable + "\n\n" if ktable else "") + (rtable + "\n\n" if rtable else "")
                    + table + "\n")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(b.results, f, indent=1, default=str)
    missed = [r for r in b.results["rows"] if r["passed"] is False]
    print("\n%d targets met, %d missed" % (
        sum(1 for r in b.results["rows"] if r["passed"]), len(missed)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
