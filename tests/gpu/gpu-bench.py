#!/usr/bin/env python3
"""quarkfs benchmark on the GPU machine: cold/warm sequential reads of a
quarkfs view against its exported files, and transformers' `from_pretrained` of the mount
against the bf16 source (on-the-fly FP8) and against the exported directory.

Run by `tests/gpu/gpu-check.sh bench` on the GPU machine (as root: it mounts and writes
/proc/sys/vm/drop_caches). It needs torch + transformers only for the load section; without
them (local test runs) every load is recorded with its error.

Steps, in one run:
  1. machine facts and versions -> OUT/env.json
  2. `genmodel.py WORK/src --preset llama --layers LAYERS` (bf16, 4096/11008 shapes)
  3. `quarkfs export --no-cache --spec S --format F WORK/src WORK/exp-S` for int8/quark and
     fp8-block/fp8 (timed)
  4. reads (per spec, REPS repetitions; `cat` of every view *.safetensors to /dev/null):
       view, all cold    drop_caches, fresh mount (-o cache=off), cat view (source read from disk)
       plain, disk       drop_caches, cat the exported files (read from disk)
       view, src warm    drop_caches, cat source, cat export, fresh mount, cat view
                         (view cold, source in page cache: quarkfs's own cost)
       plain, page cache the exported files re-read from the page cache
       view re-read      the mounted view re-read from the page cache
     `fincore` checks the page-cache state before each timed read (when present).
     The view and the export are compared byte for byte once per spec.
  5. loads: `AutoModelForCausalLM.from_pretrained(X, device_map="cuda", dtype=torch.bfloat16,
     quantization_config=...)`, each in a fresh subprocess (this script with --load-child),
     timed around from_pretrained + cuda.synchronize (CUDA initialised before); per rep and
     config: drop_caches, a cold run, then a warm run (second run, page cache filled):
       a  the mount, --spec fp8-block --format fp8, FineGrainedFP8Config(dequantize=True)
          (a fresh mount after the drop; the warm run reuses it)
       b  the bf16 source, FineGrainedFP8Config() (on-the-fly quantization)
       c  the export of (a), FineGrainedFP8Config(dequantize=True)
       r  the bf16 source, no quantization_config (reference; always when b fails, else if
          time allows)
  Nothing new starts after --deadline seconds; what was skipped is listed.

Writes OUT/gpu-bench.json (every repetition) and OUT/gpu-bench.md (tables) after each section.

Usage:
  gpu-bench.py --quarkfs BIN --libdir DIR --work DIR --out DIR [--reps 3] [--layers 4]
               [--deadline S] [--sections reads,loads]
  gpu-bench.py --load-child CFG PATH      (internal)
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
SPECS = [("int8", "quark"), ("fp8-block", "fp8")]
LOAD_SPEC = ("fp8-block", "fp8")
GIB = 1024.0 ** 3
TIMED = ("view_cold_all", "view_reread", "plain_disk", "view_cold_srcwarm", "plain_cache")

T0 = time.monotonic()
LOGF = None


def log(msg):
    line = "[%6.1f s] %s" % (time.monotonic() - T0, msg)
    print(line, flush=True)
    if LOGF:
        LOGF.write(line + "\n")
        LOGF.flush()


def sh(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


# ---------------------------------------------------------------------------------------------
# load child: one from_pretrained in a fresh process
# ---------------------------------------------------------------------------------------------

def load_child(cfg, path):
    res = {"cfg": cfg, "path": path}
    t_start = time.perf_counter()
    try:
        import torch
        import transformers
        from transformers import AutoModelForCausalLM, FineGrainedFP8Config
        res["t_import_s"] = time.perf_counter() - t_start
        t = time.perf_counter()
        torch.cuda.init()
        torch.empty(1, device="cuda")
        torch.cuda.synchronize()
        res["t_cuda_init_s"] = time.perf_counter() - t
        kw = dict(device_map="cuda", dtype=torch.bfloat16)
        if cfg in ("a", "c"):
            kw["quantization_config"] = FineGrainedFP8Config(dequantize=True)
        elif cfg == "b":
            kw["quantization_config"] = FineGrainedFP8Config()
        t = time.perf_counter()
        try:
            out = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, **kw)
        except (ImportError, ValueError) as exc:
            if "accelerate" not in str(exc):
                raise
            # device_map needs accelerate here: load on the CPU, then move (recorded)
            res["fallback"] = "no device_map (%s): from_pretrained + .to('cuda')" % (
                str(exc).strip().splitlines()[0][:200])
            kw.pop("device_map")
            t = time.perf_counter()
            out = AutoModelForCausalLM.from_pretrained(path, output_loading_info=True, **kw)
            (out[0] if isinstance(out, tuple) else out).to("cuda")
        torch.cuda.synchronize()
        res["load_s"] = time.perf_counter() - t
        model, info = out if isinstance(out, tuple) else (out, {})
        res["loading_info"] = {k: len(v) for k, v in (info or {}).items()
                               if hasattr(v, "__len__")}
        # what was loaded: module class and weight dtype of one quantized projection, a
        # checksum of the (dequantized) weight for (a) == (c)
        mod = model.get_submodule("model.layers.0.mlp.down_proj")
        w = mod.weight
        res["module"] = type(mod).__name__
        res["weight_dtype"] = str(w.dtype)
        res["weight_sum"] = float(w.float().sum().item())
        res["weight_abs_sum"] = float(w.float().abs().sum().item())
        res["gpu_mem_alloc_gib"] = torch.cuda.memory_allocated() / GIB
        res["ok"] = True
    except BaseException as exc:  # record, never raise: the parent reads our JSON
        res["ok"] = False
        res["error"] = "%s: %s" % (type(exc).__name__, str(exc).strip().splitlines()[0][:500]
                                   if str(exc).strip() else "")
        traceback.print_exc()
    res["t_child_s"] = time.perf_counter() - t_start
    print("GPU-BENCH-RESULT " + json.dumps(res), flush=True)


# ---------------------------------------------------------------------------------------------
# helpers (parent)
# ---------------------------------------------------------------------------------------------

DROP_OK = [True]


def drop_caches():
    """sync + drop the page cache; False (and nothing raised) where that is not allowed."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        DROP_OK[0] = False
        return False


def same_bytes(a, b, bs=8 << 20):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(bs), fb.read(bs)
            if x != y:
                return False
            if not x:
                return True


def meminfo_cached_gib():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("Cached:"):
                return int(line.split()[1]) * 1024 / GIB
    return None


def resident(paths):
    """Fraction of the bytes of PATHS in the page cache (fincore), or None."""
    if not shutil.which("fincore"):
        return None
    r = sh(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES,SIZE"] + paths)
    if r.returncode:
        return None
    res = size = 0
    for line in r.stdout.split("\n"):
        p = line.split()
        if len(p) == 2:
            res += int(p[0])
            size += int(p[1])
    return res / size if size else None


def st_files(d):
    return sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".safetensors"))


def nbytes(paths):
    return sum(os.path.getsize(p) for p in paths)


def cat(paths):
    t = time.perf_counter()
    r = subprocess.run(["cat"] + paths, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t
    if r.returncode:
        raise RuntimeError("cat failed: %s" % r.stderr.decode(errors="replace").strip())
    return dt


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


class Mount:
    """quarkfs -f SRC MNT (foreground child, stderr into the log), unmounted on exit."""

    def __init__(self, args, src, spec, fmt):
        self.args, self.src, self.spec, self.fmt = args, src, spec, fmt
        self.mnt = tempfile.mkdtemp(prefix="quarkfs-mnt-", dir=args.work)
        self.proc = None

    def __enter__(self):
        cmd = [self.args.quarkfs, "--spec", self.spec, "--format", self.fmt, "-o", "cache=off",
               "-f", self.src, self.mnt]
        with open(self.args.quarkfs_log, "a") as lf:
            lf.write("\n==== %s\n" % " ".join(cmd))
        logf = open(self.args.quarkfs_log, "ab")
        t0 = time.perf_counter()
        try:
            self.proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT,
                                         env=self.args.qenv)
            while not os.path.ismount(self.mnt):
                if self.proc.poll() is not None:
                    raise RuntimeError("quarkfs exited %d before mounting (quarkfs.log)"
                                       % self.proc.returncode)
                if time.perf_counter() - t0 > 60:
                    raise RuntimeError("not mounted after 60 s")
                time.sleep(0.002)
            self.mount_s = time.perf_counter() - t0
            return self
        except BaseException:
            self.close()
            raise
        finally:
            logf.close()

    def close(self):
        for cmd in (["umount", self.mnt], ["umount", "-l", self.mnt]):
            if os.path.ismount(self.mnt):
                sh(cmd, timeout=60)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not os.path.ismount(self.mnt):
            os.rmdir(self.mnt)

    def __exit__(self, *exc):
        self.close()
        return False


# ---------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------

def env_facts(args):
    e = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "kernel": platform.release(),
         "nproc": os.cpu_count(), "python": platform.python_version()}
    try:
        with open("/proc/cpuinfo") as f:
            e["cpu"] = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")),
                            "?")
    except OSError:
        e["cpu"] = "?"
    with open("/proc/meminfo") as f:
        e["mem_gib"] = round(int(f.readline().split()[1]) / 1024 ** 2, 1)
    r = sh(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]) \
        if shutil.which("nvidia-smi") else None
    e["gpu"] = r.stdout.strip() if r and r.returncode == 0 else "none (no nvidia-smi)"
    for mod in ("torch", "transformers", "safetensors", "accelerate", "kernels", "triton"):
        r = sh([sys.executable, "-c", "import %s; print(%s.__version__)" % (mod, mod)])
        e[mod] = r.stdout.strip() if r.returncode == 0 else "absent"
    r = sh([args.quarkfs, "--version"], env=args.qenv)
    e["quarkfs"] = (r.stdout or r.stderr).strip()
    e["cat"] = sh(["cat", "--version"]).stdout.split("\n")[0]
    e["fincore"] = bool(shutil.which("fincore"))
    r = sh(["df", "-T", args.work])
    e["work_fs"] = r.stdout.strip().split("\n")[-1] if r.returncode == 0 else "?"
    e["drop_caches"] = "works" if drop_caches() else \
        "FAILS (not root?): every 'cold' below is NOT cold"
    e["cached_gib_after_drop"] = meminfo_cached_gib()
    return e


def genmodel(args, res):
    src = os.path.join(args.work, "src")
    if not os.path.exists(os.path.join(src, "config.json")):
        t = time.perf_counter()
        genmodel = os.path.join(HERE, "..", "fixtures", "genmodel.py")
        r = sh([sys.executable, genmodel, src, "--preset", "llama", "--layers", str(args.layers)])
        log(r.stdout.strip() + r.stderr.strip())
        if r.returncode:
            raise RuntimeError("genmodel failed")
        res["genmodel_s"] = time.perf_counter() - t
    res["src_bytes"] = nbytes(st_files(src))
    return src


def export(args, src, spec, fmt, res):
    out = os.path.join(args.work, "exp-" + spec)
    if os.path.exists(out):
        shutil.rmtree(out)
    drop_caches()
    t = time.perf_counter()
    r = sh([args.quarkfs, "export", "--no-cache", "--spec", spec, "--format", fmt, src, out],
           env=args.qenv)
    dt = time.perf_counter() - t
    if r.returncode:
        raise RuntimeError("export %s failed: %s" % (spec, r.stderr.strip()))
    res.setdefault("export", {})[spec] = {"s": dt, "bytes": nbytes(st_files(out)),
                                          "note": "source cold, output written + no fsync"}
    log("export %s/%s: %.2f s, %.3f GiB" % (spec, fmt, dt, nbytes(st_files(out)) / GIB))
    return out


def reads(args, src, exps, res):
    R = res.setdefault("reads", {})
    for spec, fmt in SPECS:
        exp = exps[spec]
        ef = st_files(exp)
        size = nbytes(ef)
        sf = st_files(src)
        rr = R.setdefault(spec, {"format": fmt, "view_bytes": size, "reps": []})
        for i in range(args.reps):
            if past(args, "reads %s rep %d" % (spec, i + 1), res):
                break
            rep = {}
            # all cold: view (source from disk) and export (from disk)
            drop_caches()
            with Mount(args, src, spec, fmt) as m:
                vf = [os.path.join(m.mnt, os.path.basename(p)) for p in ef]
                if nbytes(vf) != size:
                    raise RuntimeError("view size %d != export size %d" % (nbytes(vf), size))
                rep["res_before_view_cold"] = [resident(vf), resident(sf)]
                rep["view_cold_all"] = cat(vf)
                rep["res_before_view_reread"] = resident(vf)
                rep["view_reread"] = cat(vf)
            drop_caches()
            rep["res_before_plain_disk"] = resident(ef)
            rep["plain_disk"] = cat(ef)
            # view cold, source warm; plain from the page cache
            drop_caches()
            cat(sf)
            cat(ef)
            with Mount(args, src, spec, fmt) as m:
                vf = [os.path.join(m.mnt, os.path.basename(p)) for p in ef]
                rep["res_before_view_cold_srcwarm"] = [resident(vf), resident(sf)]
                rep["view_cold_srcwarm"] = cat(vf)
                rep["mount_s"] = m.mount_s
                if i == 0:
                    t = time.perf_counter()
                    ok = all(same_bytes(v, e) for v, e in zip(vf, ef))
                    rr["view_equals_export"] = ok
                    log("cmp view == export (%s): %s (%.1f s)" % (spec, ok,
                                                                   time.perf_counter() - t))
            rep["res_before_plain_cache"] = resident(ef)
            rep["plain_cache"] = cat(ef)
            rr["reps"].append(rep)
            log("reads %s rep %d: %s" % (spec, i + 1, ", ".join(
                "%s %.2f GiB/s" % (k, size / GIB / v) for k, v in rep.items()
                if k in TIMED)))
        write(args, res)


def past(args, what, res):
    if time.monotonic() - T0 > args.deadline:
        res.setdefault("skipped", []).append(what)
        log("deadline: skipped %s" % what)
        return True
    return False


def run_child(args, cfg, path, tag):
    t = time.perf_counter()
    logpath = os.path.join(args.out, "load-%s.log" % tag)
    with open(logpath, "w") as lf:
        try:
            r = subprocess.run([sys.executable, os.path.abspath(__file__), "--load-child", cfg,
                                path], stdout=subprocess.PIPE, stderr=lf, text=True,
                               env=dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1"),
                               timeout=args.child_timeout)
            out = r.stdout
        except subprocess.TimeoutExpired as exc:
            out = ""
            lf.write("TIMEOUT after %d s\n" % args.child_timeout)
        lf.write("\n--- stdout\n" + out)
    wall = time.perf_counter() - t
    res = None
    for line in out.splitlines():
        if line.startswith("GPU-BENCH-RESULT "):
            res = json.loads(line[len("GPU-BENCH-RESULT "):])
    if res is None:
        res = {"cfg": cfg, "ok": False, "error": "no result from the child (see %s)"
               % os.path.basename(logpath)}
    res["wall_s"] = wall
    log("load %s: %s" % (tag, ("%.2f s (process %.1f s) %s %s" % (
        res["load_s"], wall, res.get("module"), res.get("weight_dtype")))
        if res.get("ok") else "FAILED " + res.get("error", "")))
    return res


def loads(args, src, exps, res):
    L = res.setdefault("loads", {})
    spec, fmt = LOAD_SPEC
    cfgs = ["a", "b", "c"]

    def one(cfg, i):
        r = L.setdefault(cfg, [])
        drop_caches()
        if cfg == "a":
            with Mount(args, src, spec, fmt) as m:
                cold = run_child(args, cfg, m.mnt, "%s-%d-cold" % (cfg, i + 1))
                warm = run_child(args, cfg, m.mnt, "%s-%d-warm" % (cfg, i + 1))
        else:
            path = exps[spec] if cfg == "c" else src
            cold = run_child(args, cfg, path, "%s-%d-cold" % (cfg, i + 1))
            warm = run_child(args, cfg, path, "%s-%d-warm" % (cfg, i + 1))
        r.append({"cold": cold, "warm": warm})
        write(args, res)

    for i in range(args.reps):
        for cfg in cfgs:
            if past(args, "load %s rep %d" % (cfg, i + 1), res):
                continue
            one(cfg, i)
        if i == 0 and "r" not in cfgs and L.get("b") and not L["b"][0]["cold"].get("ok"):
            cfgs.append("r")   # b refused to load: time a plain bf16 load as the reference
            if not past(args, "load r rep 1", res):
                one("r", 0)
    if "r" not in cfgs:       # b loaded: the plain bf16 load still gives context, if time allows
        for i in range(args.reps):
            if past(args, "load r rep %d (optional)" % (i + 1), res):
                break
            one("r", i)


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------

def ratio_med(pairs):
    rs = [a / b for a, b in pairs if a is not None and b is not None and b > 0]
    return (statistics.median(rs), len(rs)) if rs else (None, 0)


def write(args, res):
    with open(os.path.join(args.out, "gpu-bench.json"), "w") as f:
        json.dump(res, f, indent=1, sort_keys=True)
    with open(os.path.join(args.out, "gpu-bench.md"), "w") as f:
        f.write(report(res))


def report(res):
    e = res.get("env", {})
    o = ["# quarkfs on the GPU machine (tests/gpu/gpu-bench.py)", ""]
    o.append("Machine: %s; %s cores (%s); %s GiB RAM; kernel %s; work dir fs: %s" % (
        e.get("gpu"), e.get("nproc"), e.get("cpu"), e.get("mem_gib"), e.get("kernel"),
        e.get("work_fs")))
    o.append("Versions: python %s, torch %s, transformers %s, safetensors %s, accelerate %s, "
             "kernels %s, triton %s; %s; %s" % tuple(e.get(k) for k in (
                 "python", "torch", "transformers", "safetensors", "accelerate", "kernels",
                 "triton", "quarkfs", "cat")))
    o.append("drop_caches: %s (Cached after drop: %s GiB); fincore: %s" % (
        e.get("drop_caches"), e.get("cached_gib_after_drop"), e.get("fincore")))
    o.append("Source: %.3f GiB bf16 (genmodel %s s)" % (res.get("src_bytes", 0) / GIB,
                                                         "%.1f" % res["genmodel_s"]
                                                         if "genmodel_s" in res else "-"))
    for spec, x in res.get("export", {}).items():
        o.append("Export %s: %.2f s, %.3f GiB" % (spec, x["s"], x["bytes"] / GIB))
    o.append("")
    R = res.get("reads", {})
    if R:
        o.append("## Sequential read (cat of the view's safetensors), medians")
        o.append("")
        o.append("| spec/format | view GiB | reps | what | quarkfs view | against | that | "
                 "ratio (median of per-rep) |")
        o.append("|---|---:|---:|---|---:|---|---:|---:|")
        rows = [("cold, source cold too", "view_cold_all", "plain file from disk", "plain_disk"),
                ("cold, source warm", "view_cold_srcwarm", "plain file, page cache",
                 "plain_cache"),
                ("warm re-read", "view_reread", "plain file, page cache", "plain_cache")]
        for spec, rr in R.items():
            size = rr["view_bytes"]
            reps = rr["reps"]
            for what, k, against, k2 in rows:
                a = med([r.get(k) for r in reps])
                b = med([r.get(k2) for r in reps])
                # ratio of throughputs = inverse ratio of times
                q, n = ratio_med([(r.get(k2), r.get(k)) for r in reps])
                o.append("| %s/%s | %.3f | %d | %s | %s | %s | %s | %s |" % (
                    spec, rr["format"], size / GIB, n, what,
                    "%.2f GiB/s (%.2f s)" % (size / GIB / a, a) if a else "-", against,
                    "%.2f GiB/s (%.2f s)" % (size / GIB / b, b) if b else "-",
                    "%.2f" % q if q is not None else "-"))
            o.append("")
            o.append("%s: view == export byte for byte: %s" % (spec,
                                                               rr.get("view_equals_export")))
        o.append("")
    L = res.get("loads", {})
    if L:
        names = {"a": "a: mount fp8-block/fp8 + FineGrainedFP8Config(dequantize=True)",
                 "b": "b: bf16 source + FineGrainedFP8Config() (on the fly)",
                 "c": "c: export of (a) + FineGrainedFP8Config(dequantize=True)",
                 "r": "r: bf16 source, no quantization (reference)"}
        o.append("## from_pretrained(X, device_map='cuda', dtype=bfloat16), seconds, medians")
        o.append("")
        o.append("| config | runs ok | cold load | warm load | cold process | warm process | "
                 "loaded as | loading info | error |")
        o.append("|---|---:|---:|---:|---:|---:|---|---|---|")
        for cfg in ("a", "b", "c", "r"):
            if cfg not in L:
                continue
            runs = L[cfg]
            ok = [r for r in runs if r["cold"].get("ok") and r["warm"].get("ok")]
            errs = sorted({x.get("error") for r in runs for x in (r["cold"], r["warm"])
                           if not x.get("ok")})
            first = next((x for r in runs for x in (r["cold"], r["warm"]) if x.get("ok")), {})

            def m(state, key, runs=runs):
                v = med([r[state].get(key) for r in runs if r[state].get("ok")])
                return "%.2f" % v if v is not None else "-"
            o.append("| %s | %d/%d | %s | %s | %s | %s | %s | %s | %s |" % (
                names[cfg], len(ok), len(runs), m("cold", "load_s"), m("warm", "load_s"),
                m("cold", "wall_s"), m("warm", "wall_s"),
                "%s %s" % (first.get("module", "-"), first.get("weight_dtype", "")),
                json.dumps(first.get("loading_info", {})).replace("|", "/"),
                "; ".join(x.replace("|", "/") for x in errs if x) or ""))
        o.append("")
        o.append("| ratio (median of per-rep ratios of load_s) | cold | warm |")
        o.append("|---|---:|---:|")
        for num, den in (("a", "c"), ("a", "b"), ("c", "b"), ("a", "r"), ("b", "r")):
            if num not in L or den not in L:
                continue
            cells = []
            for state in ("cold", "warm"):
                q, n = ratio_med([(x[state].get("load_s"), y[state].get("load_s"))
                                  for x, y in zip(L[num], L[den])])
                cells.append("%.2f (n=%d)" % (q, n) if q is not None else "-")
            o.append("| (%s)/(%s) | %s | %s |" % (num, den, cells[0], cells[1]))
        o.append("")
        sums = {cfg: sorted({round(x.get("weight_sum", 0.0), 3) for r in L[cfg]
                             for x in (r["cold"], r["warm"]) if x.get("ok")})
                for cfg in L}
        fb = sorted({x.get("fallback") for r in sum(L.values(), []) for x in
                     (r["cold"], r["warm"]) if x.get("fallback")})
        if fb:
            o.append("Fallback used: " + "; ".join(fb))
            o.append("")
        o.append("Checksums of model.layers.0.mlp.down_proj.weight (sum): %s" % json.dumps(sums))
        o.append("")
    if not DROP_OK[0]:
        o.append("WARNING: drop_caches failed during the run: cold rows are not cold.")
    if res.get("skipped"):
        o.append("Skipped at the deadline: " + ", ".join(res["skipped"]))
    if res.get("error"):
        o.append("ERROR: " + res["error"])
    o.append("Total: %.1f s" % res.get("total_s", time.monotonic() - T0))
    return "\n".join(o) + "\n"


def main():
    global LOGF
    if len(sys.argv) == 4 and sys.argv[1] == "--load-child":
        load_child(sys.argv[2], sys.argv[3])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quarkfs", required=True)
    ap.add_argument("--libdir", default="", help="prepended to LD_LIBRARY_PATH for quarkfs")
    ap.add_argument("--work", required=True, help="local-disk work directory")
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--deadline", type=float, default=380)
    ap.add_argument("--child-timeout", type=int, default=120)
    ap.add_argument("--sections", default="reads,loads")
    args = ap.parse_args()
    args.quarkfs = os.path.abspath(args.quarkfs)
    os.makedirs(args.work, exist_ok=True)
    os.makedirs(args.out, exist_ok=True)
    args.work = os.path.abspath(args.work)
    args.quarkfs_log = os.path.join(args.out, "quarkfs.log")
    args.qenv = dict(os.environ)
    if args.libdir:
        old = args.qenv.get("LD_LIBRARY_PATH")
        args.qenv["LD_LIBRARY_PATH"] = os.path.abspath(args.libdir) + (":" + old if old else "")
    LOGF = open(os.path.join(args.out, "gpu-bench.log"), "a")
    res = {"args": {k: v for k, v in vars(args).items() if k != "qenv"}}
    rc = 0
    try:
        res["env"] = env_facts(args)
        log("env: %s" % json.dumps(res["env"]))
        write(args, res)
        src = genmodel(args, res)
        log("source: %.3f GiB" % (res["src_bytes"] / GIB))
        exps = {spec: export(args, src, spec, fmt, res) for spec, fmt in SPECS}
        write(args, res)
        secs = args.sections.split(",")
        if "reads" in secs:
            reads(args, src, exps, res)
        if "loads" in secs:
            loads(args, src, exps, res)
    except BaseException as exc:
        res["error"] = "%s: %s" % (type(exc).__name__, exc)
        log("ERROR " + res["error"] + "\n" + traceback.format_exc())
        rc = 1
    finally:
        res["total_s"] = time.monotonic() - T0
        write(args, res)
        # leave no mount behind
        with open("/proc/mounts") as f:
            for line in f:
                p = line.split()
                if p[2].startswith("fuse") and p[1].startswith(os.path.join(args.work,
                                                                            "quarkfs-mnt-")):
                    sh(["umount", "-l", p[1]])
        log("done in %.1f s" % res["total_s"])
    return rc


if __name__ == "__main__":
    sys.exit(main())
