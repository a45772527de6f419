#!/usr/bin/env python3
"""The real loaders on the GPU machine, reading quarkfs views.

Sections (one per device call, each writing SECTION.md and SECTION.json to --out):
  vllm   vLLM offline inference (enforce_eager, Triton attention, greedy) from a mount of each
         view, from `quarkfs export` of the same view on local disk, and from the dense source;
         the mount and the export must give the same tokens (same bytes), the dense source
         similar ones.
  hf     transformers from_pretrained(MNT, device_map="cuda") per view: the quantized module
         types, and greedy generation from the mount equal to the exported copy's.
  big    a Llama-3.1-8B-shaped bf16 model (random weights made on the GPU) through a fp8-block
         mount: cat throughput of the view and from_pretrained time, mount against export.
  make-big  only write that model into WORK/llama8b-bf16 (its own process, so that a vllm run
         on it starts from a parent that never touched CUDA and can fork its engine).

Every mount is a fresh temporary directory, unmounted even on failure; quarkfs runs with
-o cache=off (export --no-cache) so the mount and the export compute their bytes independently.
"""
import argparse
import contextlib
import gc
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback

T0 = time.time()
DEVICE = os.environ.get("LOADERS_GPU_DEVICE", "cuda")   # "cpu" to try the script without a GPU


def log(msg):
    print("[%7.1f] %s" % (time.time() - T0, msg), flush=True)


# ---------------------------------------------------------------------------------------------
# quarkfs
# ---------------------------------------------------------------------------------------------

class QFS:
    def __init__(self, a):
        self.a = a
        self.logpath = os.path.join(a.out, "quarkfs.log")

    def env(self):
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = self.a.libdir + ":" + env.get("LD_LIBRARY_PATH", "")
        env["PATH"] = self.a.bindir + ":" + env.get("PATH", "/usr/bin:/bin")
        return env

    def export(self, src, spec, fmt, dest, extra=()):
        cmd = [self.a.quarkfs, "export", "--spec", spec, "--format", fmt, "--no-cache",
               *extra, src, dest]
        t = time.perf_counter()
        with open(self.logpath, "a") as lf:
            lf.write("\n==== %s\n" % " ".join(cmd))
            lf.flush()
            r = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, env=self.env())
        if r.returncode:
            raise RuntimeError("quarkfs export exited %d (quarkfs.log)" % r.returncode)
        return time.perf_counter() - t

    @contextlib.contextmanager
    def mount(self, src, spec, fmt, opts="cache=off"):
        mnt = tempfile.mkdtemp(prefix="quarkfs-mnt-")
        cmd = [self.a.quarkfs, "--spec", spec, "--format", fmt, "-o", opts, "-f", src, mnt]
        with open(self.logpath, "a") as lf:
            lf.write("\n==== %s\n" % " ".join(cmd))
        logf = open(self.logpath, "ab")
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=self.env())
        logf.close()
        try:
            t = time.perf_counter()
            while not os.path.ismount(mnt):
                if proc.poll() is not None:
                    raise RuntimeError("quarkfs exited %d before mounting" % proc.returncode)
                if time.perf_counter() - t > 60:
                    raise RuntimeError("not mounted after 60 s")
                time.sleep(0.01)
            yield mnt
        finally:
            gc.collect()
            for c in (["umount", mnt], [os.path.join(self.a.bindir, "fusermount3"), "-u", mnt],
                      ["umount", "-l", mnt]):
                if not os.path.ismount(mnt):
                    break
                subprocess.run(c, capture_output=True, env=self.env(), timeout=60)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if not os.path.ismount(mnt):
                os.rmdir(mnt)


def tree_digest(root):
    """sha256 of every regular file under root (links followed), by relative path."""
    out = {}
    for d, _, files in os.walk(root, followlinks=True):
        for f in sorted(files):
            p = os.path.join(d, f)
            h = hashlib.sha256()
            with open(p, "rb") as fh:
                for b in iter(lambda: fh.read(1 << 22), b""):
                    h.update(b)
            out[os.path.relpath(p, root)] = h.hexdigest()
    return out


def err_lines(exc, logpath=None, start=0, limit=14):
    """The lines of an error that matter: the exception, and Error lines the engine logged."""
    lines = ["%s: %s" % (type(exc).__name__, str(exc)[:600])]
    if logpath and os.path.exists(logpath):
        with open(logpath, "rb") as fh:
            fh.seek(start)
            seg = fh.read().decode("utf-8", "replace").splitlines()
        keep = [s for s in seg if ("Error" in s or "error:" in s or "Exception" in s
                                   or "not supported" in s or "Unsupported" in s)
                and "Traceback" not in s]
        lines += [s[:400] for s in keep[-limit:]]
    return lines


class Deadline(Exception):
    pass


@contextlib.contextmanager
def alarm(seconds):
    def hit(signum, frame):
        raise Deadline("timed out after %d s" % seconds)
    old = signal.signal(signal.SIGALRM, hit)
    signal.alarm(int(seconds))
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def write_report(a, name, rows, head, columns):
    with open(os.path.join(a.out, name + ".json"), "w") as fh:
        json.dump({"head": head, "rows": rows}, fh, indent=1, default=str)
    md = ["# %s" % name, ""] + ["- %s: %s" % kv for kv in head.items()] + [""]
    md.append("| " + " | ".join(columns) + " |")
    md.append("|" + "---|" * len(columns))
    for r in rows:
        md.append("| " + " | ".join(str(r.get(c, "")).replace("|", "/").replace("\n", " ")
                                    for c in columns) + " |")
    for r in rows:
        if r.get("error"):
            md += ["", "**%s %s %s**:" % (r.get("model"), r.get("view"), r.get("where", "")), "```"]
            md += r["error"] + ["```"]
    with open(os.path.join(a.out, name + ".md"), "w") as fh:
        fh.write("\n".join(md) + "\n")


def seq_agree(x, y):
    """Fraction of generated positions where two greedy runs give the same token."""
    n = same = 0
    for s, t in zip(x, y):
        for i in range(max(len(s), len(t))):
            n += 1
            same += i < len(s) and i < len(t) and s[i] == t[i]
    return round(same / n, 4) if n else None


def first_diff(x, y):
    """Per prompt: index of the first differing token (len if none)."""
    out = []
    for s, t in zip(x, y):
        i = 0
        while i < min(len(s), len(t)) and s[i] == t[i]:
            i += 1
        out.append(i)
    return out


# ---------------------------------------------------------------------------------------------
# vLLM
# ---------------------------------------------------------------------------------------------

VLLM_VIEWS = [("int8", "quark"), ("fp8", "quark"), ("w8a8-int8", "quark"),
              ("fp8-block", "fp8"), ("w8a8-int8", "compressed-tensors"),
              ("fp8", "compressed-tensors"), ("int4-g128", "compressed-tensors"),
              ("uint4-g128", "awq")]


def describe_model(model):
    """Runs inside vLLM's worker: the linear method of two layer-0 projections."""
    out = {}
    for name, mod in model.named_modules():
        if name.endswith("layers.0.self_attn.qkv_proj") or name.endswith("layers.0.mlp.down_proj"):
            qm = getattr(mod, "quant_method", None)
            d = type(qm).__name__
            sch = getattr(mod, "scheme", None)
            if sch is not None:
                d += "/" + type(sch).__name__
            for holder in (sch, qm):
                k = getattr(holder, "kernel", None) if holder is not None else None
                if k is not None:
                    d += "/" + type(k).__name__
                    break
            w = getattr(mod, "weight", None)
            if w is None:
                w = getattr(mod, "qweight", None)
            if w is not None:
                d += " %s%s" % (str(w.dtype).replace("torch.", ""), tuple(w.shape))
            out[name.split("layers.0.")[-1]] = d
    return out


def vllm_section(a):
    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    os.environ.setdefault("VLLM_USE_FLASHINFER_SAMPLER", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    qfs = QFS(a)
    vlog = os.path.join(a.out, "vllm.log")
    head = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    rows = []
    try:
        t = time.perf_counter()
        import torch
        import vllm
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt
        head.update(vllm=vllm.__version__, torch=torch.__version__,
                    import_s=round(time.perf_counter() - t, 1))
        import transformers
        head["transformers"] = transformers.__version__
        try:
            import compressed_tensors
            head["compressed_tensors"] = compressed_tensors.__version__
        except Exception as exc:          # vLLM's compressed-tensors method needs it
            head["compressed_tensors"] = "import failed: %r" % exc
    except Exception as exc:
        head["import_error"] = traceback.format_exc().splitlines()[-25:]
        log("vllm import failed: %r" % exc)
        write_report(a, "vllm", rows, head, ["model", "view"])
        return 1
    log("vllm %s imported in %.1f s" % (vllm.__version__, head["import_s"]))
    views = VLLM_VIEWS
    if a.views:
        views = [tuple(v.split("/")) for v in a.views.split(",")]

    def run(path, prompts):
        """One engine: load, describe, greedy generate; always shut down."""
        res = {}
        start = os.path.getsize(vlog) if os.path.exists(vlog) else 0
        llm = None
        t = time.perf_counter()
        try:
            with alarm(a.run_timeout):
                llm = LLM(model=path, skip_tokenizer_init=True, enforce_eager=True,
                          attention_config={"backend": a.attn_backend},
                          gpu_memory_utilization=a.gpu_mem, max_model_len=256, max_num_seqs=8,
                          seed=0)
                res["load_s"] = round(time.perf_counter() - t, 1)
                try:
                    res["modules"] = llm.apply_model(describe_model)[0]
                except Exception as exc:
                    res["modules"] = "apply_model: %r" % exc
                sp = SamplingParams(temperature=0.0, max_tokens=a.max_tokens, ignore_eos=True,
                                    detokenize=False)
                t2 = time.perf_counter()
                outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], sp,
                                    use_tqdm=False)
                res["gen_s"] = round(time.perf_counter() - t2, 2)
                res["tokens"] = [list(o.outputs[0].token_ids) for o in outs]
        except BaseException as exc:
            sys.stdout.flush()
            sys.stderr.flush()
            res["error"] = err_lines(exc, vlog, start)
            if isinstance(exc, KeyboardInterrupt):
                raise
        finally:
            if llm is not None:
                with contextlib.suppress(Exception):
                    llm.llm_engine.engine_core.shutdown()
            del llm
            gc.collect()
        return res

    import random
    for mi, (name, src) in enumerate(a.model):
        if mi:
            views = [tuple(v.split("/")) for v in a.views_rest.split(",")]
        with open(os.path.join(src, "config.json")) as fh:
            vocab = json.load(fh)["vocab_size"]
        rng = random.Random(1234)
        prompts = [[rng.randrange(3, vocab) for _ in range(12)] for _ in range(4)]
        log("%s: dense source" % name)
        dense = run(src, prompts)
        rows.append({"model": name, "view": "dense (source)", "where": "source",
                     "loads_mount": "load_s" in dense,
                     "runs_mount": "tokens" in dense, "load_s": dense.get("load_s"),
                     "modules": dense.get("modules"), "error": dense.get("error"),
                     "tokens": dense.get("tokens")})
        log("  -> %s" % ("ok" if "tokens" in dense else dense.get("error", ["?"])[0]))
        for spec, fmt in views:
            view = "%s/%s" % (spec, fmt)
            row = {"model": name, "view": view}
            rows.append(row)
            if time.time() - T0 > a.deadline:
                row["skipped"] = "deadline"
                continue
            log("%s %s: mount" % (name, view))
            try:
                with qfs.mount(src, spec, fmt) as mnt:
                    rm = run(mnt, prompts)      # first, so vLLM reads a cold view
                    dm = tree_digest(mnt)
            except Exception as exc:
                dm, rm = None, {"error": err_lines(exc)}
            log("  mount -> %s" % ("ok" if "tokens" in rm else rm.get("error", ["?"])[0][:200]))
            exp = os.path.join(a.work, "export-%s-%s-%s" % (name, spec, fmt))
            re_ = {}
            try:
                subprocess.run(["rm", "-rf", exp])
                row["export_s"] = round(qfs.export(src, spec, fmt, exp), 2)
                de = tree_digest(exp)
                row["bytes_equal"] = dm == de if dm is not None else None
                if dm is not None and dm != de:
                    row["bytes_differ"] = sorted(k for k in set(dm) | set(de)
                                                 if dm.get(k) != de.get(k))
                re_ = run(exp, prompts)
            except Exception as exc:
                re_ = {"error": err_lines(exc)}
            log("  export -> %s" % ("ok" if "tokens" in re_ else re_.get("error", ["?"])[0][:200]))
            row.update(loads_mount="load_s" in rm, runs_mount="tokens" in rm,
                       loads_export="load_s" in re_, runs_export="tokens" in re_,
                       load_s=rm.get("load_s"), load_export_s=re_.get("load_s"),
                       gen_s=rm.get("gen_s"), modules=rm.get("modules") or re_.get("modules"),
                       tokens=rm.get("tokens"))
            if "tokens" in rm and "tokens" in re_:
                row["tokens_mount_eq_export"] = rm["tokens"] == re_["tokens"]
            if "tokens" in rm and "tokens" in dense:
                row["agree_dense"] = seq_agree(rm["tokens"], dense["tokens"])
                row["first_diff_dense"] = first_diff(rm["tokens"], dense["tokens"])
            if "error" in rm:
                row["where"] = "mount"
                row["error"] = rm["error"]
            elif "error" in re_:
                row["where"] = "export"
                row["error"] = re_["error"]
            subprocess.run(["rm", "-rf", exp])
    head["finished_s"] = round(time.time() - T0, 1)
    write_report(a, "vllm", rows, head,
                 ["model", "view", "loads_mount", "runs_mount", "loads_export", "runs_export",
                  "bytes_equal", "tokens_mount_eq_export", "agree_dense", "first_diff_dense",
                  "load_s", "load_export_s", "modules", "skipped"])
    return 0


# ---------------------------------------------------------------------------------------------
# transformers
# ---------------------------------------------------------------------------------------------

HF_VIEWS = [("fp8-block", "fp8"), ("fp8", "fp8"), ("w8a8-int8", "compressed-tensors"),
            ("fp8", "compressed-tensors"), ("int4-g128", "compressed-tensors"),
            ("int8", "quark"), ("fp8", "quark"), ("w8a8-int8", "quark"),
            ("uint4-g128", "quark")]


def hf_section(a):
    qfs = QFS(a)
    head = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    rows = []
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    head.update(torch=torch.__version__, transformers=transformers.__version__)
    for mod in ("compressed_tensors", "quark"):
        try:
            m = __import__(mod)
            head[mod] = getattr(m, "__version__", "?")
        except Exception as exc:
            head[mod] = "import failed: %r" % exc
    views = HF_VIEWS
    if a.views:
        views = [tuple(v.split("/")) for v in a.views.split(",")]

    def run(path, ids, kw=None):
        res = {}
        model = None
        t = time.perf_counter()
        try:
            with alarm(a.run_timeout):
                model = AutoModelForCausalLM.from_pretrained(path, device_map=DEVICE, **(kw or {}))
                if DEVICE == "cuda":
                    torch.cuda.synchronize()
                res["load_s"] = round(time.perf_counter() - t, 1)
                mods = {}
                for n, m in model.named_modules():
                    if n.endswith("layers.0.self_attn.q_proj") or n.endswith("layers.0.mlp.down_proj"):
                        ps = ",".join("%s:%s" % (k, str(p.dtype).replace("torch.", ""))
                                      for k, p in list(m.named_parameters(recurse=False))[:3])
                        mods[n.split("layers.0.")[-1]] = "%s(%s)" % (type(m).__name__, ps)
                res["modules"] = mods
                with torch.no_grad():
                    out = model.generate(ids.to(DEVICE), max_new_tokens=a.max_tokens,
                                         do_sample=False, pad_token_id=0)
                res["tokens"] = out[:, ids.shape[1]:].tolist()
        except BaseException as exc:
            res["error"] = ["%s: %s" % (type(exc).__name__, str(exc)[:800])] + \
                [s for s in traceback.format_exc().splitlines() if s.startswith("  File")][-4:]
            if isinstance(exc, KeyboardInterrupt):
                raise
        finally:
            del model
            gc.collect()
            if DEVICE == "cuda":
                torch.cuda.empty_cache()
        return res

    for name, src in a.model:
        with open(os.path.join(src, "config.json")) as fh:
            vocab = json.load(fh)["vocab_size"]
        g = torch.Generator().manual_seed(1234)
        ids = torch.randint(3, vocab, (2, 12), generator=g)
        log("%s: dense" % name)
        dense = run(src, ids)
        rows.append({"model": name, "view": "dense (source)", "loads_mount": "load_s" in dense,
                     "runs_mount": "tokens" in dense, "load_s": dense.get("load_s"),
                     "modules": dense.get("modules"), "error": dense.get("error")})
        for spec, fmt in views:
            view = "%s/%s" % (spec, fmt)
            row = {"model": name, "view": view}
            rows.append(row)
            if time.time() - T0 > a.deadline:
                row["skipped"] = "deadline"
                continue
            log("%s %s" % (name, view))
            tries = [None]
            if fmt == "fp8":
                tries.append({"quantization_config":
                              transformers.FineGrainedFP8Config(dequantize=True)})
            for kw in tries:
                try:
                    with qfs.mount(src, spec, fmt) as mnt:
                        rm = run(mnt, ids, kw)
                except Exception as exc:
                    rm = {"error": err_lines(exc)}
                if "tokens" in rm or kw is tries[-1]:
                    break
                row["first_try_error"] = rm.get("error", ["?"])[:2]
            row["kwargs"] = "dequantize=True" if kw else ""
            exp = os.path.join(a.work, "hfexport-%s-%s-%s" % (name, spec, fmt))
            subprocess.run(["rm", "-rf", exp])
            re_ = {}
            if "tokens" in rm:
                try:
                    qfs.export(src, spec, fmt, exp)
                    re_ = run(exp, ids, kw)
                except Exception as exc:
                    re_ = {"error": err_lines(exc)}
            subprocess.run(["rm", "-rf", exp])
            row.update(loads_mount="load_s" in rm, runs_mount="tokens" in rm,
                       runs_export="tokens" in re_, load_s=rm.get("load_s"),
                       load_export_s=re_.get("load_s"), modules=rm.get("modules"))
            if "tokens" in rm and "tokens" in re_:
                row["tokens_mount_eq_export"] = rm["tokens"] == re_["tokens"]
            if "tokens" in rm and "tokens" in dense:
                row["agree_dense"] = seq_agree(rm["tokens"], dense["tokens"])
            if "error" in rm or "error" in re_:
                row["error"] = rm.get("error") or re_.get("error")
                row["where"] = "mount" if "error" in rm else "export"
            log("  -> %s" % ("ok eq=%s" % row.get("tokens_mount_eq_export") if "tokens" in rm
                             else row["error"][0][:200]))
    head["finished_s"] = round(time.time() - T0, 1)
    write_report(a, "hf", rows, head,
                 ["model", "view", "kwargs", "loads_mount", "runs_mount", "runs_export",
                  "tokens_mount_eq_export", "agree_dense", "load_s", "load_export_s", "modules",
                  "skipped"])
    return 0


# ---------------------------------------------------------------------------------------------
# Llama-3.1-8B-shaped model
# ---------------------------------------------------------------------------------------------

def make_big(path, layers, shards):
    """Llama-3.1-8B shapes, bf16, N(0, 0.02) weights drawn on the GPU, saved in `shards` files."""
    import torch
    from safetensors.torch import save_file
    H, I, V, NH, KV = 4096, 14336, 128256, 32, 8
    D = H // NH
    os.makedirs(path, exist_ok=True)
    names = [("model.embed_tokens.weight", (V, H))]
    for i in range(layers):
        p = "model.layers.%d." % i
        names += [(p + "input_layernorm.weight", (H,)), (p + "post_attention_layernorm.weight", (H,)),
                  (p + "self_attn.q_proj.weight", (H, H)), (p + "self_attn.k_proj.weight", (KV * D, H)),
                  (p + "self_attn.v_proj.weight", (KV * D, H)), (p + "self_attn.o_proj.weight", (H, H)),
                  (p + "mlp.gate_proj.weight", (I, H)), (p + "mlp.up_proj.weight", (I, H)),
                  (p + "mlp.down_proj.weight", (H, I))]
    names += [("model.norm.weight", (H,)), ("lm_head.weight", (V, H))]
    total = sum(2 * __import__("math").prod(s) for _, s in names)
    per = total / shards
    g = torch.Generator(device="cuda").manual_seed(0)
    weight_map, cur, acc, k = {}, {}, 0, 1
    fname = lambda k: "model-%05d-of-%05d.safetensors" % (k, shards)

    def flush():
        save_file(cur, os.path.join(path, fname(k)), metadata={"format": "pt"})
        cur.clear()
    for n, s in names:
        if len(s) == 1:
            t = torch.ones(s, dtype=torch.bfloat16)
        else:
            t = (torch.randn(s, device="cuda", generator=g, dtype=torch.float32) * 0.02) \
                .to(torch.bfloat16).cpu()
        cur[n] = t
        weight_map[n] = fname(k)
        acc += t.numel() * 2
        if acc >= per * k and k < shards:
            flush()
            k += 1
    flush()
    with open(os.path.join(path, "model.safetensors.index.json"), "w") as fh:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, fh)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": H,
           "intermediate_size": I, "num_hidden_layers": layers, "num_attention_heads": NH,
           "num_key_value_heads": KV, "head_dim": D, "vocab_size": V, "hidden_act": "silu",
           "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
           "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                            "original_max_position_embeddings": 8192, "rope_type": "llama3"},
           "tie_word_embeddings": False, "torch_dtype": "bfloat16", "bos_token_id": 128000,
           "eos_token_id": 128001, "attention_bias": False, "mlp_bias": False}
    with open(os.path.join(path, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=1)
    return total


def drop_caches():
    with contextlib.suppress(Exception):
        subprocess.run(["sync"])
        with open("/proc/sys/vm/drop_caches", "w") as fh:
            fh.write("3\n")
        return True
    return False


def cat_tree(root):
    """Read every file under root once (1 MiB reads), like cat > /dev/null; bytes, seconds."""
    n = 0
    t = time.perf_counter()
    for d, _, files in os.walk(root, followlinks=True):
        for f in sorted(files):
            with open(os.path.join(d, f), "rb", buffering=0) as fh:
                while True:
                    b = fh.read(1 << 20)
                    if not b:
                        break
                    n += len(b)
    return n, time.perf_counter() - t


def big_section(a):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM
    qfs = QFS(a)
    spec, fmt = a.big_view.split("/")
    head = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "view": a.big_view, "layers": a.big_layers, "cpus": os.cpu_count()}
    rows = []
    src = os.path.join(a.work, "llama8b-bf16")
    t = time.perf_counter()
    total = make_big(src, a.big_layers, 4)
    head["source_bytes"] = total
    head["make_s"] = round(time.perf_counter() - t, 1)
    log("source %.2f GiB made in %.1f s" % (total / 2**30, head["make_s"]))
    torch.cuda.empty_cache()

    def load(path, label, **kw):
        r = {"what": label}
        with contextlib.suppress(Exception):
            r["dropped_caches"] = drop_caches()
        t = time.perf_counter()
        try:
            with alarm(a.run_timeout):
                m = AutoModelForCausalLM.from_pretrained(path, device_map="cuda", **kw)
                torch.cuda.synchronize()
                r["seconds"] = round(time.perf_counter() - t, 2)
                q = m.model.layers[0].self_attn.q_proj
                r["q_proj"] = "%s %s" % (type(q).__name__, str(q.weight.dtype))
                ids = torch.tensor([[128000, 791, 4062, 374, 264, 1296]], device="cuda")
                with torch.no_grad():
                    out = m.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=0)
                r["tokens"] = out[0, ids.shape[1]:].tolist()
                del m
        except BaseException as exc:
            r["error"] = ["%s: %s" % (type(exc).__name__, str(exc)[:600])]
        gc.collect()
        torch.cuda.empty_cache()
        log("%s: %s" % (label, r.get("seconds", r.get("error"))))
        return r

    # 1. from_pretrained from a fresh mount (nothing quantized yet, no disk cache)
    try:
        with qfs.mount(src, spec, fmt) as mnt:
            rows.append(load(mnt, "from_pretrained(mount), cold view"))
    except Exception as exc:
        rows.append({"what": "from_pretrained(mount)", "error": err_lines(exc)})
    # 2. cat of a fresh mount, twice (second: quarkfs memory cache 1G + page cache)
    try:
        with qfs.mount(src, spec, fmt) as mnt:
            drop_caches()
            n, s = cat_tree(mnt)
            rows.append({"what": "cat view, cold (quantizing)", "bytes": n, "seconds": round(s, 2),
                         "MB_s": round(n / s / 1e6)})
            log("cat cold: %d B in %.2f s" % (n, s))
            n, s = cat_tree(mnt)
            rows.append({"what": "cat view, again (page cache)", "bytes": n, "seconds": round(s, 2),
                         "MB_s": round(n / s / 1e6)})
    except Exception as exc:
        rows.append({"what": "cat view", "error": err_lines(exc)})
    # 3. the source itself, for scale
    drop_caches()
    n, s = cat_tree(src)
    rows.append({"what": "cat source (local disk, cold)", "bytes": n, "seconds": round(s, 2),
                 "MB_s": round(n / s / 1e6)})
    # 4. export, then from_pretrained from the exported copy
    exp = os.path.join(a.work, "llama8b-export")
    subprocess.run(["rm", "-rf", exp])
    drop_caches()
    try:
        es = qfs.export(src, spec, fmt, exp)
        eb = sum(os.path.getsize(os.path.join(exp, f)) for f in os.listdir(exp))
        rows.append({"what": "quarkfs export", "bytes": eb, "seconds": round(es, 2),
                     "MB_s": round(eb / es / 1e6)})
        r = load(exp, "from_pretrained(export), cold page cache")
        rows.append(r)
        if rows[0].get("tokens") and r.get("tokens"):
            head["tokens_mount_eq_export"] = rows[0]["tokens"] == r["tokens"]
    except Exception as exc:
        rows.append({"what": "export", "error": err_lines(exc)})
    rows.append(load(src, "from_pretrained(bf16 source), cold page cache"))
    subprocess.run(["rm", "-rf", exp])
    head["finished_s"] = round(time.time() - T0, 1)
    write_report(a, "big", rows, head, ["what", "bytes", "seconds", "MB_s", "q_proj", "tokens",
                                        "dropped_caches"])
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("section", choices=["vllm", "hf", "big", "make-big"])
    p.add_argument("--quarkfs", required=True)
    p.add_argument("--libdir", required=True)
    p.add_argument("--bindir", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--model", action="append", default=[], type=lambda s: tuple(s.split("=", 1)),
                   help="NAME=DIR, repeatable")
    p.add_argument("--views", default="", help="spec/format,... (default: the section's list)")
    p.add_argument("--views-rest", default="int8/quark,fp8/quark,w8a8-int8/quark",
                   help="vllm: the views of the second and later models")
    p.add_argument("--deadline", type=float, default=400, help="no new view after S seconds")
    p.add_argument("--run-timeout", type=float, default=150)
    p.add_argument("--max-tokens", type=int, default=24)
    p.add_argument("--attn-backend", default="TRITON_ATTN",
                   help="vllm: attention backend (the FlashAttention libraries are not carried)")
    p.add_argument("--gpu-mem", type=float, default=0.25, help="vllm: gpu_memory_utilization")
    p.add_argument("--big-view", default="fp8-block/fp8")
    p.add_argument("--big-layers", type=int, default=32)
    a = p.parse_args()
    os.makedirs(a.work, exist_ok=True)
    if a.section == "make-big":       # its own process: vLLM's parent must not touch CUDA
        make_big(os.path.join(a.work, "llama8b-bf16"), a.big_layers, 4)
        return 0
    return {"vllm": vllm_section, "hf": hf_section, "big": big_section}[a.section](a)


if __name__ == "__main__":
    sys.exit(main())
