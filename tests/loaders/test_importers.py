#!/usr/bin/env python3
"""transformers' own quantized loaders read quarkfs mounts, on the CPU, for every valid
spec/format pair of `quarkfs --list-specs`.

    build-venv/bin/python tests/loaders/test_importers.py [filter]      # from the repo root
    env: QUARKFS (binary), QUARKFS_SHARED (models/, corpus/), LOADER_REPORT_DIR (the table)

Each pair is mounted from two sources and loaded once per mount with
`AutoModelForCausalLM.from_pretrained(MNT, dtype=torch.float32)` through the loader its format
is for (see LOADERS): stories260K-bf16 (a real trained Llama, from ../shared) and a generated
Llama whose dimensions are multiples of 128 (tests/fixtures/genmodel.py), where the g128 and
fp8-block specs quantize something. On every load:

  1. classes: the modules the view stores quantized became the loader's quantized module class
     (counted), every other Linear (lm_head, modules the spec cannot take) is a plain nn.Linear
     holding the source weight; no missing or unexpected checkpoint keys;
  2. weights: the loader's dequantized weight of each quantized module equals the view's tensors
     dequantized by tests/quality/quality.py's numpy dequantizer (independent of the C code),
     exactly where the loader dequantizes in float32, else within the tolerance LOADERS states and why;
  3. generation (generated model): 16 greedy tokens and the logits from the mount equal those
     from the same view written by `quarkfs export`, loaded the same way;
  4. perplexity (stories260K): on the first 50 corpus sequences with quality.py's split and
     token count (5003 predicted tokens), beside the perplexity of the view's numpy-dequantized
     weights put into transformers' dense model, which isolates what the loader adds (activation
     quantization, its own arithmetic). The dense BF16 source must give the published 4.3940.

Pairs no transformers loader is meant to read (INCOMPATIBLE) are loaded too; the test asserts
the misreading that the loader's source predicts and marks the row INCOMPATIBLE.
A markdown table (one row per pair) goes to LOADER_REPORT_DIR/importers.md (default
build/loader-report/) and is printed.
"""

import contextlib
import gc
import importlib.metadata
import io
import math
import os
import sys
import time
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "integration"))
sys.path.insert(0, os.path.join(REPO, "tests", "quality"))

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# the first Quark load imports amd-quark, which parses transformers' model sources: 25-50 s
os.environ.setdefault("QUARKFS_TEST_TIMEOUT", "300")

import numpy as np  # noqa: E402

import qfstest as q  # noqa: E402
import quality as qual  # noqa: E402  numpy dequantizer, corpus split (independent of the C code)

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402

# The models are tiny: one thread is faster than two, and far faster on a shared, busy machine
# (stories260K perplexity 0.5 s with one thread, 5-13 s with two at load average 17).
torch.set_num_threads(1)
transformers.logging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
warnings.filterwarnings("ignore")

CORPUS = os.path.join(q.SHARED, "corpus", "tinystories.tok512.u16")
NSEQ = 50
GEN_ARGS = ["--hidden", "256", "--intermediate", "512", "--layers", "2", "--heads", "4",
            "--kv-heads", "2", "--vocab", "512"]
PROMPT = [1, 15, 27, 99, 123, 200, 311, 402]
NEW_TOKENS = 16


def version(pkg):
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------
# The loaders, one per format
# ---------------------------------------------------------------------------------------------

class Loader:
    """How one of transformers' quantized loaders shows its work.

    cls: the class name of its quantized modules; qmods(model): {name: module} of those;
    weight(module): its dequantized weight [out, in] as float32 (before any forward, unless
    `after_forward`); tol: relative tolerance of (2) (0 = bit-exact) and why."""

    def __init__(self, name, pkgs, cls, qmods, weight, tol=0.0, why="", after_forward=False,
                 kwargs=None):
        self.name, self.pkgs, self.cls = name, pkgs, cls
        self.qmods, self.weight, self.tol, self.why = qmods, weight, tol, why
        self.after_forward = after_forward
        self.kwargs = kwargs or (lambda: {})

    def versions(self):
        return ", ".join("%s %s" % (p, version(p)) for p in ["transformers"] + self.pkgs)


def _quark_qmods(model):
    from quark.torch.export.nn.modules.qparamslinear import QParamsLinear
    return {n: m for n, m in model.named_modules() if isinstance(m, QParamsLinear)}


def _quark_weight(m):
    # what QParamsLinear.forward multiplies with: its weight quantizer applied to the stored codes
    return m.weight_quantizer(m.weight.data).float()


def _ct_qmods(model):
    return {n: m for n, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and getattr(m, "quantization_scheme", None) is not None}


def _fp8_qmods(model):
    from transformers.integrations.finegrained_fp8 import FP8Linear
    return {n: m for n, m in model.named_modules() if isinstance(m, FP8Linear)}


def _fp8_kwargs():
    from transformers import FineGrainedFP8Config
    # FP8Linear's matmul is the finegrained-fp8 Triton kernel (GPU only); on a CPU the loader
    # dequantizes at load (Fp8Dequantize), which it also picks by itself without a GPU.
    return {"quantization_config": FineGrainedFP8Config(dequantize=True)}


def _awq_qmods(model):
    from gptqmodel.nn_modules.qlinear import AWQuantLinear
    return {n: m for n, m in model.named_modules() if isinstance(m, AWQuantLinear)}


def _awq_weight(m):
    # gptqmodel's own dequantizer of the AWQ GEMM layout (x @ W: [in, out])
    return m.awq_weight_dequantize(device="cpu", dtype=torch.float32).t().float()


LOADERS = {
    "quark": Loader("transformers+amd-quark", ["amd-quark"], "QParamsLinear", _quark_qmods,
                    _quark_weight),
    "compressed-tensors": Loader(
        "transformers+compressed-tensors", ["compressed-tensors"],
        "nn.Linear with a compressed-tensors quantization_scheme", _ct_qmods,
        lambda m: m.weight.data.float(), after_forward=True),
    "fp8": Loader(
        "transformers FineGrainedFP8 (dequantize=True)", ["torch"],
        "nn.Linear (dequantized at load; FP8Linear needs a GPU kernel)", _fp8_qmods,
        lambda m: m.weight.data.float(), kwargs=_fp8_kwargs),
    "awq": Loader(
        "transformers+gptqmodel", ["gptqmodel"], "TorchAtenAwqLinear", _awq_qmods, _awq_weight,
        tol=2.0 ** -10,
        why="gptqmodel keeps AWQ scales in float16 and dequantizes (q - z) * s in float16: one "
            "float16 rounding of each product (relative 2^-11), checked at 2^-10"),
}

# Pairs `quarkfs --list-specs` lists for no transformers loader, and what the loader's source
# says it does with them; the test asserts that behaviour.
INCOMPATIBLE = {
    ("fp8", "fp8"): "transformers' fp8 loader pairs each weight with `weight_scale_inv` "
                    "(integrations/finegrained_fp8.py, Fp8Dequantize.convert); the per-tensor "
                    "view holds Quark's `weight_scale`, reported unexpected and ignored: the "
                    "weights load as unscaled e4m3 values",
}
for _g in ("", "-g32", "-g64", "-g128"):
    INCOMPATIBLE[("int4" + _g, "awq")] = (
        "the AWQ GEMM layout has no symmetric variant: gptqmodel reads every nibble as unsigned "
        "0..15 with the stored zero point, so the view's two's-complement int4 codes "
        "(zero_point false) come out wrong wherever they are negative")


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------

def list_pairs():
    return qual.list_pairs(q.QUARKFS)


@contextlib.contextmanager
def quiet():
    """Loaders print banners and progress to stdout/stderr: keep them out of the test log."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        yield out


def load(path, fmt):
    """(model, loading_info, seconds) of path through the loader for fmt."""
    kw = dict(dtype=torch.float32, device_map="cpu", output_loading_info=True)
    if fmt in LOADERS:
        kw.update(LOADERS[fmt].kwargs())
    t = time.monotonic()
    with quiet():
        model, info = AutoModelForCausalLM.from_pretrained(path, **kw)
    model.eval()
    return model, info, time.monotonic() - t


def linears(model):
    return {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


def forward(model, ids):
    with torch.no_grad(), quiet():         # compressed-tensors decompresses (with a progress bar)
        return model(torch.tensor([ids])).logits[0]


def generate(model):
    with torch.no_grad(), quiet():
        out = model.generate(torch.tensor([PROMPT]), max_new_tokens=NEW_TOKENS, do_sample=False,
                             pad_token_id=0)
    return out[0, len(PROMPT):].tolist()


def perplexity(model, seqs):
    """quality.py's convention: each sequence alone from its BOS, every next token predicted,
    mean negative log-likelihood over all predicted tokens (float64 softmax)."""
    nll, n = 0.0, 0
    with torch.no_grad(), quiet():
        for s in seqs:
            ids = torch.from_numpy(s.astype(np.int64))[None]
            lp = torch.log_softmax(model(ids).logits[0, :-1].double(), dim=-1)
            nll -= float(lp[torch.arange(len(s) - 1), ids[0, 1:]].sum())
            n += len(s) - 1
    return math.exp(nll / n), n


def rel_diff(a, b):
    """max |a - b| / max(|b|, tiny) over the elements."""
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(np.max(d / np.maximum(np.abs(b.astype(np.float64)), 1e-30))) if d.size else 0.0


class Ctx:
    """What is shared by the tests: models, the dense reference, the corpus, the report rows."""
    src_tensors = {}
    seqs = None
    dense = None            # transformers' dense stories260K-bf16 (float32), for swapped weights
    rows = {}               # (spec, fmt) -> dict of table columns
    ref_row = None


def stories():
    path = q.shared_model("bf16")
    if not os.path.exists(CORPUS):
        raise q.Skip("%s is missing" % CORPUS)
    if Ctx.seqs is None:
        Ctx.seqs = qual.load_corpus(CORPUS, NSEQ)
    return path


def generated():
    return q.gen_model("demo", "bf16", *GEN_ARGS)


def source_tensors(src):
    if src not in Ctx.src_tensors:
        Ctx.src_tensors[src] = qual.read_model_dir(src)[1]
    return Ctx.src_tensors[src]


def dense_model(src):
    if Ctx.dense is None:
        Ctx.dense = load(src, None)[0]
    return Ctx.dense


def ppl_of_weights(src, W):
    """Perplexity of transformers' dense source model with the weights W swapped in."""
    model = dense_model(src)
    sd = model.state_dict()
    saved = {}
    with torch.no_grad():
        for name, w in W.items():
            if name in sd and w.dtype == np.float32:
                saved[name] = sd[name].clone()
                sd[name].copy_(torch.from_numpy(w))
        try:
            return perplexity(model, Ctx.seqs)[0]
        finally:
            for name, w in saved.items():
                sd[name].copy_(w)


# ---------------------------------------------------------------------------------------------
# One load, all checks
# ---------------------------------------------------------------------------------------------

def view_weights(src, mnt):
    """(view tensors, {name: float32 weight}, info) by quality.py's numpy dequantizer, which also
    asserts the view's own consistency (quantized set = candidates - config's exclusions)."""
    T = qual.read_model_dir(mnt)[1]
    W, vinfo = qual.dequantize_view(mnt, source_tensors(src))
    return T, W, vinfo


def check_load(src, mnt, spec, fmt, model, info, row, tag):
    """Checks (1) and (2) on a model loaded from mnt; fills row; returns the view's weights."""
    loader = LOADERS[fmt]
    incompatible = (spec, fmt) in INCOMPATIBLE
    T, W, vinfo = view_weights(src, mnt)
    quantized = set(vinfo["quantized"])
    row["%s quantized" % tag] = "%d/%d" % (len(quantized), len(vinfo["candidates"]))

    # (1) classes and keys
    missing = sorted(k for k in info["missing_keys"] if k != "lm_head.weight")
    unexpected = sorted(info["unexpected_keys"])
    lins = linears(model)
    if fmt == "fp8":
        # dequantize=True: plain nn.Linear, checked below against the dequantized view
        assert not loader.qmods(model), "FP8Linear modules on a CPU load with dequantize=True"
        qmods = {n: lins[n] for n in quantized}
    else:
        qmods = loader.qmods(model)
        if " " not in loader.cls:                     # a concrete class name
            wrong = sorted(n for n, mod in qmods.items() if type(mod).__name__ != loader.cls)
            assert not wrong, "%s: %s are not %s" % (tag, wrong[:4], loader.cls)
        assert set(qmods) == quantized, (
            "%s: the loader's quantized modules (%s) are not the view's quantized modules: "
            "only loader %s, only view %s" % (tag, loader.cls, sorted(set(qmods) - quantized)[:4],
                                              sorted(quantized - set(qmods))[:4]))
    if incompatible and fmt == "fp8" and quantized:
        want = sorted(m + ".weight_scale" for m in quantized)
        assert unexpected == want and not missing, (
            "fp8/fp8: expected exactly the weight_scale tensors unexpected, got unexpected %s "
            "missing %s" % (unexpected[:4], missing[:4]))
    else:
        assert not missing and not unexpected, "%s: missing keys %s, unexpected keys %s" % (
            tag, missing[:6], unexpected[:6])
    for n, m in lins.items():
        if n in quantized:
            continue
        assert type(m) is torch.nn.Linear, "%s: %s is %s, not a plain nn.Linear" % (
            tag, n, type(m).__name__)
        assert getattr(m, "quantization_scheme", None) is None, "%s: %s has a scheme" % (tag, n)
        w = W.get(n + ".weight")
        if w is None and n == "lm_head":
            w = W["model.embed_tokens.weight"]        # tied head
        assert np.array_equal(m.weight.data.float().numpy(), w), \
            "%s: unquantized %s differs from the source weight" % (tag, n)
    row["%s modules" % tag] = len(qmods)

    # (2) dequantized weights
    if loader.after_forward:
        forward(model, PROMPT)                        # compressed-tensors decompresses here
    worst, exact = 0.0, True
    for n in sorted(quantized):
        got = loader.weight(qmods[n]).numpy()
        want = W[n + ".weight"]
        if incompatible and fmt == "fp8":
            raw = qual.fp8_to_f32(T[n + ".weight"])
            assert np.array_equal(got, raw), "fp8/fp8 %s: not the unscaled e4m3 values" % n
            assert not np.array_equal(got, want)
            continue
        assert got.shape == want.shape, "%s: %s shape %s, view %s" % (tag, n, got.shape, want.shape)
        if not np.array_equal(got, want):
            exact = False
            worst = max(worst, rel_diff(got, want))
    if incompatible and fmt == "awq" and quantized:
        assert not exact and worst > 0.01, (
            "%s: the AWQ loader read symmetric int4 right (rel. diff %.3g): update INCOMPATIBLE"
            % (tag, worst))
        row["%s weights" % tag] = "misread (max rel. %.2g)" % worst
        return W
    if not quantized or incompatible:
        row["%s weights" % tag] = "—" if not quantized else "unscaled (weight_scale ignored)"
        return W
    assert exact or worst <= loader.tol, (
        "%s: %s's dequantized weights differ from the view's (max relative %.3g, tolerance %.3g)"
        % (tag, loader.name, worst, loader.tol))
    row["%s weights" % tag] = "bit-exact" if exact else "max rel. %.2g" % worst
    return W


def on_stories(src, path, spec, fmt, row):
    model = None
    try:
        if fmt == "awq" and not view_weights(src, path)[2]["quantized"]:
            try:
                model, info, _ = load(path, fmt)
            except UnboundLocalError as exc:
                # transformers' replace_with_awq_linear sets has_been_replaced only when it
                # replaces a Linear, then reads it: a view whose every Linear is listed in
                # modules_to_not_convert (nothing here takes the spec) cannot load
                assert "has_been_replaced" in str(exc), exc
                row["status"] = ("; ".join(x for x in [row["status"]] if x != "ok") + (
                    "; " if row["status"] != "ok" else "") + "LOADER BUG: nothing quantized, every Linear in "
                                 "modules_to_not_convert -> transformers %s integrations/awq.py "
                                 "replace_with_awq_linear: UnboundLocalError: %s"
                                 % (version("transformers"), exc))
                row["stories quantized"] = "0/%d" % len(view_weights(src, path)[2]["candidates"])
                row["stories modules"] = row["stories weights"] = "—"
                print("     %s" % row["status"], flush=True)
                return
        else:
            model, info, _ = load(path, fmt)
        row["stories loads"] = "yes"
        W = check_load(src, path, spec, fmt, model, info, row, "stories")
        ppl, n = perplexity(model, Ctx.seqs)
        assert n == qual.REF_NPRED, "%d predicted tokens, expected %d" % (n, qual.REF_NPRED)
        assert math.isfinite(ppl), ppl
        row["stories runs"] = "yes"
        row["PPL"] = ppl
        row["PPL dense"] = ppl_of_weights(src, W)
    finally:
        model = None            # its tensors may map files of the mount, which must go
        gc.collect()


def on_generated(src, path, spec, fmt, row):
    """(greedy tokens, logits of PROMPT); with a row, checks (1) and (2) first."""
    model = None
    try:
        model, info, _ = load(path, fmt)
        if row is not None:
            row["generated loads"] = "yes"
            check_load(src, path, spec, fmt, model, info, row, "generated")
        out = generate(model), forward(model, PROMPT)
        if row is not None:
            row["generated runs"] = "yes"
        return out
    finally:
        model = None
        gc.collect()


def run_pair(spec, fmt):
    try:
        _run_pair(spec, fmt)
    except q.Skip as exc:
        Ctx.rows.setdefault((spec, fmt), {"loader": LOADERS[fmt].name,
                                          "versions": LOADERS[fmt].versions()})
        Ctx.rows[(spec, fmt)]["status"] = "skipped: %s" % exc
        raise
    except Exception as exc:
        Ctx.rows.setdefault((spec, fmt), {"loader": LOADERS[fmt].name,
                                          "versions": LOADERS[fmt].versions()})
        Ctx.rows[(spec, fmt)]["status"] = "FAIL: %s" % (str(exc).splitlines() or [
            type(exc).__name__])[0][:200]
        raise


def _run_pair(spec, fmt):
    loader = LOADERS[fmt]
    if fmt == "awq":
        try:
            import gptqmodel  # noqa: F401
        except Exception as exc:        # noqa: BLE001 - the exact reason goes into the skip
            raise q.Skip("transformers %s loads AWQ only through gptqmodel, which does not "
                         "import here (torch %s): %s: %s" % (
                             version("transformers"), version("torch"), type(exc).__name__, exc))
    row = Ctx.rows.setdefault((spec, fmt), {"loader": loader.name, "versions": loader.versions()})
    row["status"] = "INCOMPATIBLE" if (spec, fmt) in INCOMPATIBLE else "ok"
    for k in ("stories loads", "stories runs", "generated loads", "generated runs"):
        row[k] = "no"

    # stories260K: classes, weights, perplexity
    try:
        src = stories()
    except q.Skip as exc:
        src, skipped = None, exc
    if src is not None:
        with q.mounted(src, spec, fmt=fmt) as m:
            on_stories(src, m.path, spec, fmt, row)
    # generated model: classes, weights, mount vs export generation
    gsrc = generated()
    exported = q.export(gsrc, spec, fmt=fmt)
    with q.mounted(gsrc, spec, fmt=fmt) as m:
        toks_m, logits_m = on_generated(gsrc, m.path, spec, fmt, row)
    toks_e, logits_e = on_generated(gsrc, exported, spec, fmt, None)
    assert len(toks_m) >= 1 and toks_m == toks_e, \
        "greedy tokens from the mount %s != from the export %s" % (toks_m, toks_e)
    assert torch.equal(logits_m, logits_e), "logits from the mount differ from the export's"
    row["generation"] = "= export (%d tokens)" % len(toks_m)
    if (spec, fmt) in INCOMPATIBLE:
        print("     INCOMPATIBLE %s/%s (as asserted): %s" % (spec, fmt, INCOMPATIBLE[(spec, fmt)]),
              flush=True)
    if src is None:
        raise q.Skip("the generated model's checks passed; stories260K's (perplexity) skipped: %s"
                     % skipped)


@q.test
def dense_reference():
    """transformers' dense Llama on the BF16 source gives the published perplexity."""
    src = stories()
    model = dense_model(src)
    ppl, n = perplexity(model, Ctx.seqs)
    assert n == qual.REF_NPRED, n
    Ctx.ref_row = ppl
    assert abs(ppl - qual.REF_PPL["bf16"]) < 5e-4, \
        "dense BF16 PPL %.5f, published %.4f" % (ppl, qual.REF_PPL["bf16"])


# Per-layer recipes (--layer / --preset: Quark's layer_quant_config, format quark only), loaded
# by transformers + amd-quark; the rules are written out here, not read from quarkfs.
MIXED_RECIPES = {
    "int4-g32 --preset keep-sensitive": ("int4-g32", ["--preset", "keep-sensitive"]),
    "int4-g128 + down_proj int8-channel + layer 0 fp8": (
        "int4-g128", ["--layer", "model.layers.*.mlp.down_proj=int8-channel",
                      "--layer", "model.layers.0.*=fp8"]),
}


def run_mixed(name):
    """One per-layer recipe through transformers + amd-quark: checks (1) and (2) (each module's
    dequantized weight against quality.py's numpy reading of its own layer config), the
    perplexity on stories260K, and greedy tokens and logits from the mount = the export's."""
    spec, flags = MIXED_RECIPES[name]
    row = Ctx.rows.setdefault((name, "quark"), {"loader": LOADERS["quark"].name,
                                                "versions": LOADERS["quark"].versions()})
    row["status"] = "ok"
    src = stories()
    with q.mounted(src, spec, extra=flags) as m:
        model = None
        try:
            model, info, _ = load(m.path, "quark")
            row["stories loads"] = "yes"
            W = check_load(src, m.path, spec, "quark", model, info, row, "stories")
            ppl, n = perplexity(model, Ctx.seqs)
            assert n == qual.REF_NPRED and math.isfinite(ppl), (n, ppl)
            row["stories runs"] = "yes"
            row["PPL"], row["PPL dense"] = ppl, ppl_of_weights(src, W)
        finally:
            model = None
            gc.collect()
    gsrc = generated()
    exported = q.export(gsrc, spec, extra=flags)
    with q.mounted(gsrc, spec, extra=flags) as m:
        toks_m, logits_m = on_generated(gsrc, m.path, spec, "quark", row)
    toks_e, logits_e = on_generated(gsrc, exported, spec, "quark", None)
    assert toks_m == toks_e and torch.equal(logits_m, logits_e), "mount and export differ"
    row["generation"] = "= export (%d tokens)" % len(toks_m)


def register():
    for spec, fmt in list_pairs():
        q.add_test("%s/%s" % (spec, fmt), lambda s=spec, f=fmt: run_pair(s, f))
    for name in MIXED_RECIPES:
        q.add_test("mixed/%s" % name, lambda n=name: run_mixed(n))


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

def report():
    if not Ctx.rows and Ctx.ref_row is None:
        return
    lines = ["| loader | versions | spec | format | loads (stories260K / generated) | runs "
             "| quantized modules "
             "(stories260K / generated) | weights vs numpy (stories / generated) | PPL | PPL of "
             "the view's weights, dense | mount = export | status |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    if Ctx.ref_row is not None:
        lines.append("| transformers (dense) | transformers %s, torch %s | BF16 source | — | yes | "
                     "yes | — | — | %.4f | — | — | reference (published %.4f) |"
                     % (version("transformers"), version("torch"), Ctx.ref_row,
                        qual.REF_PPL["bf16"]))
    for (spec, fmt) in list_pairs() + [(n, "quark") for n in MIXED_RECIPES]:
        r = Ctx.rows.get((spec, fmt))
        if r is None:
            continue
        mods = "%s / %s" % (
            "%s of %s" % (r.get("stories modules", "?"), r.get("stories quantized", "?")),
            "%s of %s" % (r.get("generated modules", "?"), r.get("generated quantized", "?")))
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s / %s | %s | %s | %s | %s |" % (
            r["loader"], r["versions"], spec, fmt,
            "%s / %s" % (r.get("stories loads", "—"), r.get("generated loads", "—")),
            "%s / %s" % (r.get("stories runs", "—"), r.get("generated runs", "—")), mods,
            r.get("stories weights", "?"), r.get("generated weights", "?"),
            "%.4f" % r["PPL"] if "PPL" in r else "—",
            "%.4f" % r["PPL dense"] if "PPL dense" in r else "—",
            r.get("generation", "—"), r.get("status", "?")))
    notes = ["- %s/%s: %s" % (sp, f, why) for (sp, f), why in INCOMPATIBLE.items()
              if (sp, f) in Ctx.rows]
    if notes:
        notes = ["", "INCOMPATIBLE (asserted, not passed silently):", ""] + notes
    notes += ["", "Tolerance: awq: %s; every other loader bit-exact." % LOADERS["awq"].why]
    lines += notes
    text = ("CPU, float32, stories260K-bf16 perplexity on the first %d sequences of %s "
            "(%d predicted tokens); quantized modules = the loader's quantized modules of the "
            "view's quantized/candidate modules.\n\n" % (NSEQ, os.path.basename(CORPUS),
                                                          qual.REF_NPRED)) + "\n".join(lines) + "\n"
    out = os.environ.get("LOADER_REPORT_DIR") or os.path.join(REPO, "build", "loader-report")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "importers.md"), "w") as f:
        f.write(text)
    print(text)
    print("wrote %s" % os.path.join(out, "importers.md"), flush=True)


def main():
    register()
    try:
        q.main()
    finally:
        report()


if __name__ == "__main__":
    main()
