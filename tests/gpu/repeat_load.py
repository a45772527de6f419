#!/usr/bin/env python3
"""Repeat loads on the GPU machine: transformers from_pretrained(DIR, device_map="cuda") and
`cat` of a Llama-3.1-8B-shaped bf16 model's view (default fp8-block/fp8) through the mounts of
a model's life, against the exported checkpoint. The GPU-host version of scripts/bench's
"repeat" section.

Rows (each read by both readers, --reps times, the page cache dropped where it says cold):
  exported dir, page cache warm / cold
  mount, cache=off, source warm
  mount, disk cache, first load (fills it; then, not timed, `quarkfs warm` writes the view
  files)
  second mount, all disk hits (view_files=off), source warm
  second mount, view files, passthrough / channel (passthrough=off), view files warm
  cache files and source evicted, passthrough / channel
The first load is also compared with cache=off. Rows run only when --rows names them (what
limits the first load; each against its baseline):
  bf16 source dir itself, page cache cold (from_pretrained / cat of the source)
  mount, cache=off, source cold (against the source itself)
  mount, disk cache, first load, source cold (own empty cache dir; against cache=off cold)
  mount, first load, cache dir on a tmpfs (/dev/shm, or a tmpfs mounted in --work when that
  is too small: no disk writes; against cache=off and the disk first load)
  mount, first load, empty cache dir bind-mounted read-only (quarkfs uses it for hits only
  and drops every entry: no writer at all; against cache=off and the disk first load)
  mount, cache=off, with the view's size in bytes written beside it (`dd` of /dev/zero into a
  file in --work, through the page cache, started with the load): the least that filling a
  cache during the load must cost, whatever writes it (against cache=off); and the same with
  `dd oflag=direct`, as the cache's writer writes while it keeps up
Results: OUT/repeat_load.json (every run,
quarkfs status of every mount) and OUT/repeat_load.md (medians and time ratios).

Run (doc/loaders-gpu.md): here `bash tests/gpu/gpu-check.sh bundle` (with the static libfuse 3.17
build, .gpu/bin/quarkfs needs no libfuse on that machine), then on the device
    run("python3 tests/gpu/repeat_load.py --out $OUT", carry=[".gpu"], timeout_s=600)
Needs root there (mounts, drop_caches; passthrough needs CAP_SYS_ADMIN), torch, transformers,
safetensors. --layers 32 --shards 4 gives 16 GB of bf16 source and a 9 GB view.
"""
import argparse
import contextlib
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loaders_gpu as lg  # noqa: E402  (QFS, make_big, drop_caches, cat_tree, alarm)

log = lg.log

ROWS = [
    # key, label, warm before the load, mount options (None: the exported dir, SOURCE: the bf16
    # source dir itself; CACHE: the disk cache the later rows reuse, CACHE_COLD / CACHE_TMPFS /
    # CACHE_RO: an empty cache dir of that row's own, on disk / on a tmpfs / read-only)
    ("exp_warm", "exported dir, page cache warm", "exp", None),
    ("exp_cold", "exported dir, page cache cold", "", None),
    ("off", "mount, cache=off, source warm", "src", "cache=off"),
    ("first", "mount, disk cache, first load (fills it)", "src", "CACHE"),
    ("hits", "second mount, all disk hits (view_files=off)", "src", "CACHE,view_files=off"),
    ("pt", "second mount, view files, passthrough", "views", "CACHE"),
    ("chan", "second mount, view files, channel", "views", "CACHE,passthrough=off"),
    ("pt_cold", "cache files and source evicted, passthrough", "", "CACHE"),
    ("chan_cold", "cache files and source evicted, channel", "", "CACHE,passthrough=off"),
    # What limits the first load: the source read, the quantization, the writer's disk I/O, the
    # writer itself. Not in the default run (--rows selects them).
    ("src_cold", "bf16 source dir itself, page cache cold", "", "SOURCE"),
    ("off_cold", "mount, cache=off, source cold", "", "cache=off"),
    ("first_cold", "mount, disk cache, first load, source cold", "", "CACHE_COLD"),
    ("first_tmpfs", "mount, first load, cache dir on a tmpfs", "src", "CACHE_TMPFS"),
    ("first_nowriter", "mount, first load, empty read-only cache dir", "src", "CACHE_RO"),
    ("off_write", "mount, cache=off, the view's bytes written beside it", "src",
     "cache=off+WRITE"),
    ("off_write_direct", "mount, cache=off, the view's bytes written beside it, direct",
     "src", "cache=off+WRITE_DIRECT"),
]
DEFAULT_ROWS = "exp_warm,exp_cold,off,first,hits,pt,chan,pt_cold,chan_cold"
# Each row's baselines, in the table's order.
AGAINST = {"off": ["exp_warm"], "first": ["exp_warm", "off"], "hits": ["exp_warm"],
           "pt": ["exp_warm"], "chan": ["exp_warm"], "pt_cold": ["exp_cold"],
           "chan_cold": ["exp_cold"],
           "off_cold": ["src_cold"], "first_cold": ["off_cold", "src_cold"],
           "first_tmpfs": ["off", "first"], "first_nowriter": ["off", "first"],
           "off_write": ["off"], "off_write_direct": ["off"]}


def status(a, mnt):
    qfs = lg.QFS(a)
    r = subprocess.run([a.quarkfs, "status", mnt, "--json"], capture_output=True, text=True,
                       env=qfs.env())
    try:
        return json.loads(r.stdout)
    except ValueError:
        return {}


def tree_bytes(root):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)


def tmpfs_cache_dir(work, need):
    """An empty cache dir on a tmpfs with `need` bytes free: under /dev/shm if it has the room
    (a container's /dev/shm is often 64 MB), else a tmpfs of our own mounted in work (root).
    (dir, tmpfs mount point to unmount or None)."""
    if os.path.isdir("/dev/shm"):
        st = os.statvfs("/dev/shm")
        if st.f_bavail * st.f_frsize >= need:
            d = tempfile.mkdtemp(prefix="qfs-repeat-cache-", dir="/dev/shm")
            os.chmod(d, 0o700)
            return d, None
    mp = os.path.join(work, "tmpfs")
    os.makedirs(mp, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d,mode=0700" % need, "tmpfs", mp],
                   check=True, capture_output=True)
    d = os.path.join(mp, "cache")
    os.mkdir(d, 0o700)
    return d, mp


def ro_cache_dir(path):
    """An empty cache dir with the layout quarkfs makes (so its entry dir exists), bind-mounted
    read-only on itself: quarkfs opens it for hits only and writes nothing (chmod would not stop
    root). The caller unmounts it."""
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, mode=0o700)
    for sub in ("tmp", "locks", "v1", "memo", "recipes"):
        os.mkdir(os.path.join(path, sub), 0o700)
    subprocess.run(["mount", "--bind", path, path], check=True, capture_output=True)
    r = subprocess.run(["mount", "-o", "remount,bind,ro", path], capture_output=True, text=True)
    if r.returncode:
        subprocess.run(["umount", path], capture_output=True)
        raise RuntimeError("read-only bind mount of %s: %s" % (path, r.stderr.strip()))


def wait_writer(a, mnt, max_s=300):
    """Waits until the background writer's queue is empty (quarkfs status), so that the next
    row does not start under this row's write-back."""
    t = time.perf_counter()
    while True:
        st = status(a, mnt)
        q = st.get("cache_queue", {})
        if not isinstance(q, dict) or q.get("queued", 0) == 0 or \
                time.perf_counter() - t > max_s:
            st["waited_s"] = round(time.perf_counter() - t, 2)
            return st
        time.sleep(0.2)


def wait_view_files(a, mnt, n, max_s=300):
    t = time.perf_counter()
    while True:
        st = status(a, mnt)
        vf = st.get("view_files", {})
        if (vf.get("present", 0) >= n and vf.get("queued", 1) == 0) or \
                time.perf_counter() - t > max_s:
            st["waited_s"] = round(time.perf_counter() - t, 2)
            return st
        time.sleep(0.2)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quarkfs", default=".gpu/bin/quarkfs")
    p.add_argument("--libdir", default=os.path.abspath(".gpu/lib"))
    p.add_argument("--bindir", default=os.path.abspath(".gpu/bin"))
    p.add_argument("--work", default="/tmp/qfs-repeat")
    p.add_argument("--out", default=os.environ.get("OUT", "/tmp/qfs-repeat-out"))
    p.add_argument("--view", default="fp8-block/fp8")
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--rows", default=DEFAULT_ROWS, help="KEY,KEY: the rows to run (default: "
                   "%s; also %s)" % (DEFAULT_ROWS, ",".join(
                       k for k, *_ in ROWS if k not in DEFAULT_ROWS.split(","))))
    p.add_argument("--readers", default="hf,cat")
    p.add_argument("--run-timeout", type=int, default=300)
    p.add_argument("--after-first", choices=("warm", "writer"), default="warm",
                   help="after the first load (untimed): `quarkfs warm` and wait for the view "
                   "files (warm, what later rows need), or only wait for the writer's queue "
                   "(writer: a first-load A/B, tests/gpu/first_load_ab.sh)")
    p.add_argument("--src", help="an existing bf16 model directory instead of the 8B-shaped one")
    p.add_argument("--device", default="cuda", help="device_map of from_pretrained (cpu: a dry "
                   "run of the script without a GPU)")
    a = p.parse_args()
    keys = [k for k, *_ in ROWS]
    bad = [k for k in a.rows.split(",") if k not in keys]
    if bad:
        p.error("--rows: unknown %s (rows: %s)" % (",".join(bad), ",".join(keys)))
    rows = [r for r in ROWS if r[0] in a.rows.split(",")]
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    os.makedirs(a.out, exist_ok=True)
    os.makedirs(a.work, exist_ok=True)
    qfs = lg.QFS(a)
    spec, fmt = a.view.split("/")
    head = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "view": a.view, "layers": a.layers, "cpus": os.cpu_count(),
            "quarkfs": subprocess.run([a.quarkfs, "--version"], capture_output=True, text=True,
                                      env=qfs.env()).stdout.strip()}
    log(head["quarkfs"])
    src = a.src or os.path.join(a.work, "llama8b-bf16")
    if not os.path.exists(os.path.join(src, "config.json")):
        t = time.perf_counter()
        head["source_bytes"] = lg.make_big(src, a.layers, a.shards)
        head["make_s"] = round(time.perf_counter() - t, 1)
    exp = os.path.join(a.work, "llama8b-export")
    if not os.path.isdir(exp):
        head["export_s"] = round(qfs.export(src, spec, fmt, exp + ".part"), 2)
        os.rename(exp + ".part", exp)
    cache = os.path.join(a.work, "cache")
    n_files = len([f for f in os.listdir(exp) if f.endswith(".safetensors")])
    readers = a.readers.split(",")

    def files_of(what):
        if what == "exp":
            return exp
        if what == "src":
            return src
        if what == "views":
            return os.path.join(cache, "files")
        return None

    def load(reader, path):
        if reader == "cat":
            n, s = lg.cat_tree(path)
            return {"seconds": s, "bytes": n}
        t = time.perf_counter()
        with lg.alarm(a.run_timeout):
            m = AutoModelForCausalLM.from_pretrained(path, device_map=a.device)
            if a.device == "cuda":
                torch.cuda.synchronize()
        r = {"seconds": time.perf_counter() - t,
             "q_proj": type(m.model.layers[0].self_attn.q_proj).__name__}
        del m
        gc.collect()
        if a.device == "cuda":
            torch.cuda.empty_cache()
        return r

    if "hf" in readers:   # untimed: imports, the CUDA context, kernels built on first use
        t = time.perf_counter()
        load("hf", exp)
        head["warmup_load_s"] = round(time.perf_counter() - t, 2)
    runs = {"%s %s" % (r, k): [] for r in readers for k, *_ in rows}
    view_bytes = tree_bytes(exp)
    for rep in range(a.reps):
        for reader in readers:
            for key, label, warm, opts in rows:
                r = {"rep": rep, "row": key}
                cdir = cache
                undo = []   # (what, path) to remove after the row
                try:
                    if key == "first":
                        shutil.rmtree(cache, ignore_errors=True)
                        os.makedirs(cache, mode=0o700)
                    elif opts == "CACHE_COLD":
                        cdir = cache + "-cold"
                        shutil.rmtree(cdir, ignore_errors=True)
                        os.makedirs(cdir, mode=0o700)
                        undo.append(("rm", cdir))
                    elif opts == "CACHE_TMPFS":
                        # room for every entry, so the writer's queue is what drops, not ENOSPC
                        cdir, mp = tmpfs_cache_dir(a.work, int(view_bytes * 1.2) + (64 << 20))
                        undo.append(("rm", cdir))
                        if mp:
                            undo.append(("umount", mp))
                        r["cache_dir"] = cdir
                    elif opts == "CACHE_RO":
                        cdir = cache + "-ro"
                        ro_cache_dir(cdir)
                        undo.append(("umount", cdir))
                        undo.append(("rm", cdir))
                    lg.drop_caches()
                    if files_of(warm):
                        lg.cat_tree(files_of(warm))
                    if opts is None:
                        r.update(load(reader, exp))
                    elif opts == "SOURCE":
                        r.update(load(reader, src))
                    else:
                        writer = None
                        if "+WRITE" in opts:
                            opts, how = opts.split("+")
                            sink = os.path.join(a.work, "limit-write")
                            undo.append(("rm", sink))
                            writer = [
                                "dd", "if=/dev/zero", "of=" + sink, "bs=1M", "status=none",
                                "count=%d" % (view_bytes >> 20)]
                            if how == "WRITE_DIRECT":
                                writer.append("oflag=direct")
                        o = opts.replace("CACHE_COLD", "CACHE").replace("CACHE_TMPFS", "CACHE")
                        o = o.replace("CACHE_RO", "CACHE")
                        o = o.replace("CACHE", "cache=on,cache_dir=" + cdir)
                        with qfs.mount(src, spec, fmt, opts=o) as mnt:
                            if writer:
                                t = time.perf_counter()
                                wproc = subprocess.Popen(writer)
                            r.update(load(reader, mnt))
                            if writer:
                                wproc.wait()
                                r["write_s"] = round(time.perf_counter() - t, 2)
                            if key == "first" and a.after_first == "warm":
                                # not timed: warm writes the view files
                                subprocess.run([a.quarkfs, "warm", mnt], capture_output=True,
                                               env=qfs.env())
                                r["status"] = wait_view_files(a, mnt, n_files)
                            elif key in ("first", "first_cold", "first_tmpfs"):
                                r["status"] = wait_writer(a, mnt)
                            else:
                                r["status"] = status(a, mnt)
                except Exception as exc:
                    r["error"] = "%s: %s" % (type(exc).__name__, str(exc)[:400])
                finally:
                    for what, path in undo:
                        if what == "umount":
                            subprocess.run(["umount", path], capture_output=True)
                        elif os.path.isdir(path):
                            shutil.rmtree(path, ignore_errors=True)
                        else:
                            with contextlib.suppress(OSError):
                                os.unlink(path)
                runs["%s %s" % (reader, key)].append(r)
                log("rep %d %-4s %-48s %s" % (rep, reader, label,
                                              r.get("seconds", r.get("error"))))
    lines = ["| load | reader | seconds (median) | against | seconds | ratio (time) |",
             "|---|---|---:|---|---:|---:|"]
    label = {k: l for k, l, *_ in ROWS}

    def med(reader, key):
        xs = [r["seconds"] for r in runs["%s %s" % (reader, key)] if "seconds" in r]
        return statistics.median(xs) if xs else float("nan")

    def ratio(reader, key, b):
        xs = [x["seconds"] / y["seconds"] for x, y in zip(runs["%s %s" % (reader, key)],
                                                         runs["%s %s" % (reader, b)])
              if "seconds" in x and y.get("seconds", 0) > 0]
        return statistics.median(xs) if xs else float("nan")

    have = {k for k, *_ in rows}
    for reader in readers:
        for key, *_ in rows:
            comps = [b for b in AGAINST.get(key, []) if b in have] or [None]
            for b in comps:
                if b is None:
                    lines.append("| %s | %s | %.2f | | | |" % (label[key], reader, med(reader, key)))
                else:
                    lines.append("| %s | %s | %.2f | %s | %.2f | %.2f |" % (
                        label[key], reader, med(reader, key), label[b], med(reader, b),
                        ratio(reader, key, b)))
    table = "\n".join(lines)
    print(table)
    with open(os.path.join(a.out, "repeat_load.md"), "w") as fh:
        fh.write("# Repeat loads, %s\n\n%s\n\n%s\n" % (a.view, json.dumps(head), table))
    with open(os.path.join(a.out, "repeat_load.json"), "w") as fh:
        json.dump({"head": head, "runs": runs}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
