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
The first load is also compared with cache=off. Results: OUT/repeat_load.json (every run,
quarkfs status of every mount) and OUT/repeat_load.md (medians and time ratios).

Run (doc/loaders-gpu.md): here `bash scripts/gpu-check.sh bundle` (with the static libfuse 3.17
build, .gpu/bin/quarkfs needs no libfuse on that machine), then on the device
    run("python3 tests/gpu/repeat_load.py --out $OUT", carry=[".gpu"], timeout_s=600)
Needs root there (mounts, drop_caches; passthrough needs CAP_SYS_ADMIN), torch, transformers,
safetensors. --layers 32 --shards 4 gives 16 GB of bf16 source and a 9 GB view.
"""
import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import loaders_gpu as lg  # noqa: E402  (QFS, make_big, drop_caches, cat_tree, alarm)

log = lg.log

ROWS = [
    # key, label, warm before the load, mount options (None: the exported dir)
    ("exp_warm", "exported dir, page cache warm", "exp", None),
    ("exp_cold", "exported dir, page cache cold", "", None),
    ("off", "mount, cache=off, source warm", "src", "cache=off"),
    ("first", "mount, disk cache, first load (fills it)", "src", "CACHE"),
    ("hits", "second mount, all disk hits (view_files=off)", "src", "CACHE,view_files=off"),
    ("pt", "second mount, view files, passthrough", "views", "CACHE"),
    ("chan", "second mount, view files, channel", "views", "CACHE,passthrough=off"),
    ("pt_cold", "cache files and source evicted, passthrough", "", "CACHE"),
    ("chan_cold", "cache files and source evicted, channel", "", "CACHE,passthrough=off"),
]
AGAINST = {"off": "exp_warm", "first": "exp_warm", "hits": "exp_warm", "pt": "exp_warm",
           "chan": "exp_warm", "pt_cold": "exp_cold", "chan_cold": "exp_cold"}


def status(a, mnt):
    qfs = lg.QFS(a)
    r = subprocess.run([a.quarkfs, "status", mnt, "--json"], capture_output=True, text=True,
                       env=qfs.env())
    try:
        return json.loads(r.stdout)
    except ValueError:
        return {}


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
    p.add_argument("--readers", default="hf,cat")
    p.add_argument("--run-timeout", type=int, default=300)
    p.add_argument("--src", help="an existing bf16 model directory instead of the 8B-shaped one")
    p.add_argument("--device", default="cuda", help="device_map of from_pretrained (cpu: a dry "
                   "run of the script without a GPU)")
    a = p.parse_args()
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
    runs = {"%s %s" % (r, k): [] for r in readers for k, *_ in ROWS}
    for rep in range(a.reps):
        for reader in readers:
            for key, label, warm, opts in ROWS:
                if key == "first":
                    shutil.rmtree(cache, ignore_errors=True)
                    os.makedirs(cache, mode=0o700)
                lg.drop_caches()
                if files_of(warm):
                    lg.cat_tree(files_of(warm))
                r = {"rep": rep, "row": key}
                try:
                    if opts is None:
                        r.update(load(reader, exp))
                    else:
                        o = opts.replace("CACHE", "cache=on,cache_dir=" + cache)
                        with qfs.mount(src, spec, fmt, opts=o) as mnt:
                            r.update(load(reader, mnt))
                            if key == "first":   # not timed: warm writes the view files
                                subprocess.run([a.quarkfs, "warm", mnt], capture_output=True,
                                               env=qfs.env())
                            r["status"] = wait_view_files(a, mnt, n_files) if key == "first" \
                                else status(a, mnt)
                except Exception as exc:
                    r["error"] = "%s: %s" % (type(exc).__name__, str(exc)[:400])
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

    for reader in readers:
        for key, *_ in ROWS:
            comps = [AGAINST[key]] if key in AGAINST else [None]
            if key == "first":
                comps.append("off")
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
