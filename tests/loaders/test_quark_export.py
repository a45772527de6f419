"""AMD Quark's own exporter as the oracle of the view.

For every spec Quark can produce without calibration, in each of its export modes that quarkfs
writes (custom_mode "quark", "awq", "fp8": tests/loaders/quark_oracle.py), the real amd-quark
quantizes the source model on the CPU and exports it; quarkfs mounts the same source with the
matching --spec/--format; the two are compared:

  * every tensor of every model*.safetensors: names, dtypes, shapes, bytes (headers parsed
    here); for a one-file source, the whole file byte for byte;
  * config.json: quantization_config key by key (recursively; every differing key is reported
    with both values); the rest of config.json may differ only in TRANSFORMERS_REWRITES;
  * the other files both directories hold: equal bytes (generation_config.json: as config.json).

And Quark's own importer (import_model_from_safetensors) loads the mount: every quantized
Linear comes back as Quark's QParamsLinear whose dequantized weight equals the view's tensors
dequantized by tests/quality/quality.py's numpy dequantizer, element for element.

Models: stories260K-bf16/-f16/-f32 from ../shared/models (skipped with the reason when absent)
and a generated model whose Linear dims are multiples of 128, so that g128 quantizes something.

Every difference Quark's export shows is either fixed in quarkfs or listed in ALLOWED below with
its cause in the amd-quark 0.13 source; the allowance is applied narrowly (a name mapping, one
file layout) and the bytes behind it are still compared. The explained_* cases assert that Quark
still pads, refuses and renames as ALLOWED says, so those entries fail once they no longer apply
instead of hiding a difference.

Run: QUARKFS=build/quarkfs build-venv/bin/python tests/loaders/test_quark_export.py [filter]
"""

import contextlib
import gc
import importlib.util
import io
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))
sys.path.insert(0, HERE)

import qfstest as q  # noqa: E402
import quark_oracle as qo  # noqa: E402

try:
    import quark.torch  # noqa: F401,E402  (first import JIT-compiles Quark's C++ extension)
    QUARK_MISSING = None
except Exception as exc:       # noqa: BLE001
    QUARK_MISSING = "amd-quark cannot be imported here (%s: %s); install tests/loaders/" \
                    "requirements.txt into build-venv" % (type(exc).__name__, exc)

ORACLE = qo.Oracle(q.tmpdir("quark"))

# tests/quality/quality.py's numpy dequantizer of a view (independent of the C code and of
# Quark).
_spec = importlib.util.spec_from_file_location(
    "quality", os.path.join(q.SOURCE_ROOT, "tests", "quality", "quality.py"))
quality = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quality)

# ---------------------------------------------------------------------------------------------
# The explained differences (amd-quark 0.13, transformers 5.17; paths below quark/ are in
# build-venv/lib/python3.11/site-packages/quark)
# ---------------------------------------------------------------------------------------------

ALLOWED = {
    "awq-key-names": (
        "custom_mode='awq' names: Quark's AWQ save renaming (weight -> qweight, weight_scale -> "
        "scales, weight_zero_point -> qzeros) is applied by transformers >= 5.6 to every key, "
        "the broad 'weight' rule first: X.scales comes out as X.qscales, X.qzeros as X.qqzeros, "
        "and every unquantized tensor X.weight (norms, embeddings) as X.qweight. Quark warns of "
        "it itself (transformers#46650). quarkfs writes AutoAWQ's names (qweight, scales, "
        "qzeros; other tensors keep .weight). Compared after mapping the names; bytes, dtypes "
        "and shapes must be equal.",
        "quark/torch/export/api.py:108-124 (_warn_if_awq_export_keys_are_corrupted), "
        "api.py:285-287 (QUARK_AWQ_WEIGHT_CONVERSIONS set for custom_mode 'awq'), "
        "quark/torch/export/constants.py:82-86 (AWQ_SAVE_MAP), constants.py:165-167"),
    "awq-algo-config": (
        "custom_mode='awq' is accepted only when the QConfig's algo_config names AWQ; the AWQ "
        "algorithm needs calibration data and rescales weights, which quarkfs does not do (it "
        "writes round-to-nearest weights in the AWQ layout). The oracle names AWQConfig() in "
        "the config after quantizing, so Quark's exporter writes its awq layout of the same "
        "round-to-nearest weights; the algorithm never runs.",
        "quark/torch/export/main_export/quant_config_parser.py:226-244 (get_custom_config), "
        "quark/torch/export/api.py:350-363"),
    "shape-exclusions": (
        "A weight whose shape the spec cannot take stays unquantized in quarkfs and is named in "
        "the config's exclusion list (never padded). Quark instead zero-pads the last MX block "
        "of a row whose length is not a multiple of 32 (mxfp4: down_proj in=172 becomes U8 "
        "[64, 86] + scale [64, 6]) and refuses the whole model when a 4-bit group does not "
        "divide the input dim (ValueError). The oracle therefore passes those modules, found "
        "here from the source shapes and the README's rules, to Quark's exclude; "
        "explained_mxfp4_padding and explained_int4_group_refused check Quark's behaviour.",
        "quark/torch/quantization/utils.py:215-220 (pad_to_blocks), :222-230 "
        "(reshape_to_blocks, used by PerBlockMXObserver.forward, observer.py:762-763); "
        "quark/torch/quantization/observer/observer.py:1085-1088 (group_size ValueError)"),
    "exclude-order": (
        "Order of the exclusion list (exclude / modules_to_not_convert / ignored_layers): "
        "Quark replaces the list it was given by the full names of the modules it excluded, in "
        "the model's module order (lm_head last); quarkfs, which never sees the model class, "
        "writes the names sorted. Matching is by name (fnmatch, set semantics), so the lists "
        "are compared as sets; a name missing or added on either side is still a difference.",
        "quark/torch/quantization/model_transformation.py:286-349 (config.exclude = "
        "exclude_fullname)"),
    "sharding": (
        "File layout of a sharded source: quarkfs keeps the source's files (1:1, same names, "
        "same index); Quark saves through transformers' save_pretrained, which writes one "
        "model.safetensors below max_shard_size (50GB in transformers 5). Every tensor is "
        "compared by name across the files instead.",
        "quark/torch/export/safetensors.py:429-485 (export_hf_model -> save_pretrained)"),
}

# config.json keys outside quantization_config that transformers rewrites when saving (Quark
# saves through model.save_pretrained; the view keeps the source's own text):
TRANSFORMERS_REWRITES = {
    "transformers_version": "stamped with the saving transformers' version",
    "torch_dtype": "transformers 5 writes the model dtype as 'dtype' and drops 'torch_dtype'",
    "dtype": "transformers 5 writes the model dtype as 'dtype' and drops 'torch_dtype'",
    "rope_scaling": "transformers 5 folds rope_theta/rope_scaling into 'rope_parameters'",
    "rope_theta": "transformers 5 folds rope_theta/rope_scaling into 'rope_parameters'",
    "rope_parameters": "transformers 5 folds rope_theta/rope_scaling into 'rope_parameters'",
    "pad_token_id": "LlamaConfig's default (null) is written out when the source omits it",
}

GEN_CONFIG_REWRITES = {"transformers_version"}

EXCLUSION_KEYS = ("exclude", "modules_to_not_convert", "ignored_layers")

# ---------------------------------------------------------------------------------------------
# Models and the modules quarkfs leaves unquantized by shape (README "Specs and formats")
# ---------------------------------------------------------------------------------------------


def fitting_model():
    """All Linear dims multiples of 128 (k/v: 2 kv heads x 64), two shards, tied lm_head."""
    return q.gen_model("demo", "bf16", "--hidden", "256", "--intermediate", "512", "--layers",
                       "2", "--heads", "4", "--kv-heads", "2", "--vocab", "512")


def ties_model():
    """The fitting model with every Linear weight on a rounding-tie grid (one file): per group
    of 32 inputs, s = 2^k, elements (m - a) * s with m, a half-integers in 0..15.5, the first
    two -a * s and (15 - a) * s. uint4-g32 then has s exact, mn / s = -a a tie for the zero
    point, and x / s a tie for most elements, with odd and even zero points alike."""
    key = "ties-model"
    if key in q._model_cache:
        return q._model_cache[key]
    import numpy as np
    import torch
    from safetensors.torch import save_file
    fit = fitting_model()
    tensors = {}
    for f in q.model_files(fit):
        for name, (dtype, shape, raw) in read_st(os.path.join(fit, f))[1].items():
            t = torch.frombuffer(bytearray(raw), dtype=torch.bfloat16).reshape(shape)
            tensors[name] = t.clone()
    rng = np.random.default_rng(11)
    for name, t in tensors.items():
        if t.dim() != 2 or "embed" in name or not name.endswith("proj.weight"):
            continue
        rows, cols = t.shape
        s = np.exp2(rng.integers(-9, -2, (rows, cols // 32, 1)).astype(np.float64))
        a = rng.integers(0, 31, (rows, cols // 32, 1)) / 2.0
        m = rng.integers(0, 31, (rows, cols // 32, 32)) / 2.0
        x = (m - a) * s
        x[..., 0], x[..., 1] = -a[..., 0] * s[..., 0], (15 - a[..., 0]) * s[..., 0]
        tensors[name] = torch.from_numpy(x.reshape(rows, cols).astype(np.float32)).to(
            torch.bfloat16)          # exact: at most 5 significant bits
    out = q.tmpdir("ties")
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    for f in ("config.json", "generation_config.json"):
        with open(os.path.join(fit, f), "rb") as src, open(os.path.join(out, f), "wb") as dst:
            dst.write(src.read())
    q._model_cache[key] = out
    return out


MODELS = {
    "fit": fitting_model,
    "untied": lambda: q.gen_model("demo", "bf16", "--hidden", "256", "--intermediate", "512",
                                  "--layers", "2", "--heads", "4", "--kv-heads", "2", "--vocab",
                                  "512", "--untied"),
    "ties": ties_model,
    "stories-bf16": lambda: q.shared_model("bf16"),
    "stories-f16": lambda: q.shared_model("f16"),
    "stories-f32": lambda: q.shared_model("f32"),
}


def read_st(path):
    """(metadata, {name: (dtype, shape, bytes)}, whole file bytes) of a safetensors file."""
    with open(path, "rb") as f:
        data = f.read()
    header, meta, base = q.st_header_of(data, path)
    out = {}
    for name, v in header.items():
        b, e = v["data_offsets"]
        out[name] = (v["dtype"], list(v["shape"]), data[base + b:base + e])
    return meta, out, data


def model_tensors(root):
    """{name: (dtype, shape, bytes)} over every model*.safetensors directly in root."""
    out = {}
    for f in q.model_files(root):
        _, tensors, _ = read_st(os.path.join(root, f))
        dup = set(out) & set(tensors)
        assert not dup, "%s: tensors in two files: %s" % (root, sorted(dup)[:5])
        out.update(tensors)
    return out


def group_of(spec):
    m = re.match(r"u?int4-g(\d+)$", spec)
    return int(m.group(1)) if m else None


def layer_spec(module, spec, layers):
    """The spec Quark's quantizer gives module under layer_quant_config = layers ((glob, spec),
    in order): an exact key first, then the first fnmatch match
    (quark/torch/quantization/model_transformation.py, setup_config_per_layer)."""
    import fnmatch
    for glob, s in layers:
        if glob == module:
            return s
    for glob, s in layers:
        if fnmatch.fnmatch(module, glob):
            return s
    return spec


def shape_excluded(src, spec, layers=()):
    """Linear modules of src the spec cannot take, by the documented rules: 4-bit groups must
    divide in and out must be a multiple of 8 (int32 packing along the output dim); MXFP4 needs
    in to be a multiple of 32. Candidates: 2-D float *.weight, not embeddings, not lm_head.
    With layers, each module's own spec decides."""
    out = []
    for name, (dtype, shape, _) in sorted(model_tensors(src).items()):
        if (not name.endswith(".weight") or len(shape) != 2 or dtype not in qo.ST_DTYPES
                or "embed" in name or name == "lm_head.weight"):
            continue
        rows, cols = shape
        spec_m = layer_spec(name[:-len(".weight")], spec, layers)
        g = group_of(spec_m)
        if (g and (cols % g or rows % 8)) or (spec_m == "mxfp4" and cols % 32):
            out.append(name[:-len(".weight")])
    return out


# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------

def quark_awq_name(view_name, quantized_modules):
    """The name Quark 0.13 + transformers 5.17 gives the view's tensor in custom_mode 'awq'
    (ALLOWED['awq-key-names'])."""
    module, _, leaf = view_name.rpartition(".")
    if module in quantized_modules:
        return module + "." + {"qweight": "qweight", "scales": "qscales",
                               "qzeros": "qqzeros"}.get(leaf, leaf)
    return module + ".qweight" if leaf == "weight" else view_name


def dict_diff(a, b, path=""):
    """['path: view=... quark=...'] for every key whose value differs (recursively)."""
    out = []
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            p = "%s.%s" % (path, k) if path else k
            if k not in a:
                out.append("%s: missing in the view, quark=%r" % (p, b[k]))
            elif k not in b:
                out.append("%s: view=%r, missing in quark's export" % (p, a[k]))
            else:
                out += dict_diff(a[k], b[k], p)
    elif a != b or type(a) is not type(b):
        out.append("%s: view=%r quark=%r" % (path, a, b))
    return out


def compare(view, quark, fmt, src, problems):
    """Append to problems every difference of the view from Quark's export; returns the number
    of tensors compared."""
    vt, qt = model_tensors(view), model_tensors(quark)
    if fmt == "awq":
        quantized = {n.rpartition(".")[0] for n in vt if n.endswith(".qweight")}
        vt = {quark_awq_name(n, quantized): t for n, t in vt.items()}
    for n in sorted(set(vt) - set(qt))[:10]:
        problems.append("tensor %s only in the view %s" % (n, vt[n][:2]))
    for n in sorted(set(qt) - set(vt))[:10]:
        problems.append("tensor %s only in quark's export %s" % (n, qt[n][:2]))
    bad = 0
    for n in sorted(set(vt) & set(qt)):
        (vd, vs, vb), (qd, qs, qb) = vt[n], qt[n]
        if (vd, vs) != (qd, qs):
            problems.append("tensor %s: view %s %s, quark %s %s" % (n, vd, vs, qd, qs))
        elif vb != qb:
            bad += 1
            if bad <= 10:
                i = q.first_diff(vb, qb)
                problems.append("tensor %s %s %s: bytes differ from byte %d of %d (view %s, "
                                "quark %s)" % (n, vd, vs, i, len(vb), vb[i:i + 8].hex(),
                                              qb[i:i + 8].hex()))
    if bad > 10:
        problems.append("... %d tensors with different bytes in all" % bad)

    vf, qf = q.model_files(view), q.model_files(quark)
    if len(q.model_files(src)) == 1 and fmt != "awq":
        if vf != qf:
            problems.append("files: view %s, quark %s" % (vf, qf))
        else:
            for f in vf:
                _, _, vbytes = read_st(os.path.join(view, f))
                _, _, qbytes = read_st(os.path.join(quark, f))
                if vbytes != qbytes:
                    i = q.first_diff(vbytes, qbytes)
                    problems.append("%s: the files differ from byte %d (view %r, quark %r)"
                                    % (f, i, vbytes[i:i + 40], qbytes[i:i + 40]))

    vc = json.load(open(os.path.join(view, "config.json")))
    qc = json.load(open(os.path.join(quark, "config.json")))
    vq, qq = vc.get("quantization_config") or {}, qc.get("quantization_config") or {}
    for key in EXCLUSION_KEYS:      # ALLOWED["exclude-order"]: same names, any order
        if (isinstance(vq.get(key), list) and isinstance(qq.get(key), list)
                and sorted(vq[key]) == sorted(qq[key])):
            qq[key] = vq[key]
    for d in dict_diff(vc.pop("quantization_config", None), qc.pop("quantization_config", None),
                       "quantization_config"):
        problems.append("config.json " + d)
    for d in dict_diff({k: v for k, v in vc.items() if k not in TRANSFORMERS_REWRITES},
                       {k: v for k, v in qc.items() if k not in TRANSFORMERS_REWRITES}):
        problems.append("config.json " + d)

    skip = {"config.json", "model.safetensors.index.json"} | set(vf) | set(qf)
    for rel in sorted(set(q.tree_files(view)) & set(q.tree_files(quark)) - skip):
        a, b = os.path.join(view, rel), os.path.join(quark, rel)
        if rel == "generation_config.json":
            ga, gb = json.load(open(a)), json.load(open(b))
            for d in dict_diff({k: v for k, v in ga.items() if k not in GEN_CONFIG_REWRITES},
                               {k: v for k, v in gb.items() if k not in GEN_CONFIG_REWRITES}):
                problems.append("generation_config.json " + d)
        elif q.read_bytes(a) != q.read_bytes(b):
            problems.append("%s differs" % rel)
    for rel in sorted(set(q.tree_files(quark)) - set(q.tree_files(view)) - skip):
        problems.append("%s only in quark's export" % rel)
    return len(set(vt) & set(qt))


def require_quark():
    if QUARK_MISSING:
        raise q.Skip(QUARK_MISSING)


def quark_export(src, spec, fmt, exclude=(), layers=()):
    require_quark()
    try:
        return ORACLE.get(src, spec, fmt, exclude, layers)
    except qo.QuarkCannot as exc:
        raise q.Skip("Quark cannot produce %s/%s of %s: %s" % (fmt, spec, src, exc))


def add_pair(model, spec, fmt):
    def case():
        src = MODELS[model]()
        exclude = shape_excluded(src, spec)
        qdir = quark_export(src, spec, fmt, exclude)
        problems = []
        with q.mounted(src, spec, fmt=fmt) as m:
            n = compare(m.path, qdir, fmt, src, problems)
        if problems:
            raise AssertionError("%s/%s of %s differs from Quark's export (%d problems):\n  %s"
                                 % (fmt, spec, model, len(problems), "\n  ".join(problems)))
        assert n > 0, "no tensor compared"
        # the case must quantize something, or it compares only passthrough tensors
        quantized = [t for t in model_tensors(qdir).values() if t[0] not in qo.ST_DTYPES]
        if not quantized and group_of(spec) != 128:
            raise AssertionError("Quark quantized nothing in %s/%s of %s" % (fmt, spec, model))
    q.add_test("%s/%s/%s" % (model, fmt, spec), case)


# The generated model and stories-bf16 get every pair; f16/f32 the quark format with the
# 4-bit specs at g32 only (their awq/fp8 layouts are the same tensors renamed, and on stories
# g64/g128 leave little or nothing quantized: both are compared on the other two models).
for _model in MODELS:
    if _model == "untied":          # for the lm_head recipe below only
        continue
    for _spec, _fmt in qo.PAIRS:
        if _model in ("stories-f16", "stories-f32") and (
                _fmt != "quark" or group_of(_spec) in (64, 128)):
            continue
        if _model == "ties" and (_spec not in ("int8", "fp8", "mxfp4") and group_of(_spec) != 32):
            continue
        add_pair(_model, _spec, _fmt)


# Per-layer recipes (quarkfs --layer / --preset; Quark's layer_quant_config): the same recipe
# given to Quark's quantizer as layer_quant_config, in the same order. The preset's rule is
# written out here from README "Per-layer precision", not read from quarkfs.
KEEP_SENSITIVE = [("*.self_attn.[qkv]_proj", "int8-channel")]
MIXED = {
    # weight-only layers beside fp8 layers with dynamic activations (the oracle needs a
    # dataloader then: quark_oracle.quantize)
    "int4-g128+down-int8ch+layer0-fp8": (
        "fit", "int4-g128", [("model.layers.*.mlp.down_proj", "int8-channel"),
                             ("model.layers.0.*", "fp8")], []),
    # a rule that makes down_proj (in=172) quantizable, and an MX layer
    "uint4-g32+down-int8ch+o-mxfp4": (
        "stories-bf16", "uint4-g32", [("*.mlp.down_proj", "int8-channel"),
                                      ("*.self_attn.o_proj", "mxfp4")], []),
    "int4-g32+preset-keep-sensitive": (
        "stories-bf16", "int4-g32", KEEP_SENSITIVE, ["--preset", "keep-sensitive"]),
    "int4-g128+preset-keep-sensitive": (
        "fit", "int4-g128", KEEP_SENSITIVE, ["--preset", "keep-sensitive"]),
    # an untied lm_head, quantized because a rule names it
    "int4-g128+lm_head-fp8ch": (
        "untied", "int4-g128", [("lm_head", "fp8-channel")], []),
}


def add_mixed(name):
    def case():
        model, spec, layers, flags = MIXED[name]
        src = MODELS[model]()
        qdir = quark_export(src, spec, "quark", shape_excluded(src, spec, layers), layers)
        problems = []
        with q.mounted(src, spec, extra=flags or q.layer_flags(layers)) as m:
            n = compare(m.path, qdir, "quark", src, problems)
        if problems:
            raise AssertionError("%s of %s differs from Quark's export (%d problems):\n  %s"
                                 % (name, model, len(problems), "\n  ".join(problems)))
        assert n > 0, "no tensor compared"
        lq = json.load(open(os.path.join(qdir, "config.json")))["quantization_config"]
        assert sorted(lq["layer_quant_config"]) == sorted(g for g, _ in layers), lq
    q.add_test("mixed/%s" % name, case)


for _name in MIXED:
    add_mixed(_name)


# ---------------------------------------------------------------------------------------------
# Quark's importer on the mount
# ---------------------------------------------------------------------------------------------

def import_and_compare(path, expect, info, src_tensors, problems):
    """Quark's import_model_from_safetensors of the view at path, each weight compared with
    expect (numpy-dequantized view). A function of its own: the loaded model maps the view's
    files, and every reference to it must be gone before the unmount."""
    import torch
    from quark.torch.export.api import import_model_from_safetensors
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            loaded = import_model_from_safetensors(None, path, device="cpu")
    except Exception as exc:    # noqa: BLE001
        problems.append("Quark's importer failed: %s: %s\n%s" % (type(exc).__name__, exc,
                                                                log.getvalue()[-3000:]))
        return
    for mod in info["quantized"]:
        layer = loaded.get_submodule(mod)
        if type(layer).__name__ != "QParamsLinear":
            problems.append("%s imported as %s" % (mod, type(layer).__name__))
            continue
        with torch.no_grad():
            w = layer._get_qweight(layer.weight)
        ref = torch.from_numpy(expect[mod + ".weight"]).to(w.dtype)
        if w.shape != ref.shape or not torch.equal(w, ref):
            bad = (w.float() != ref.float()).sum().item() if w.shape == ref.shape else -1
            problems.append("%s: Quark dequantizes %s %s, numpy %s; %d elements differ"
                            % (mod, w.dtype, tuple(w.shape), tuple(ref.shape), bad))
    for name in src_tensors:     # Linear weights left unquantized load as the source's
        mod = name[:-len(".weight")]
        if name.endswith(".weight") and mod in info["candidates"] and mod not in info["quantized"]:
            got = loaded.get_submodule(mod).weight.detach().float().numpy()
            if not (got == expect[name]).all():
                problems.append("unquantized %s differs after import" % mod)


def add_import(model, spec, fmt, flags=(), name=None):
    def case():
        require_quark()
        src = MODELS[model]()
        _, src_tensors = quality.read_model_dir(src)
        problems = []
        with q.mounted(src, spec, fmt=fmt, extra=flags) as m:
            expect, info = quality.dequantize_view(m.path, src_tensors)
            import_and_compare(m.path, expect, info, src_tensors, problems)
            gc.collect()
        if problems:
            raise AssertionError("Quark's import of the %s/%s mount of %s (%d problems):\n  %s"
                                 % (fmt, spec, model, len(problems), "\n  ".join(problems)))
        assert info["quantized"], "nothing quantized"
    q.add_test("import/%s/%s/%s" % (model, fmt, name or spec), case)


for _spec, _fmt in qo.PAIRS:
    add_import("fit", _spec, _fmt)
add_import("stories-bf16", "mxfp4", "quark")       # with modules left unquantized by shape
add_import("stories-bf16", "uint4-g32", "awq")
for _name, (_model, _spec, _layers, _flags) in MIXED.items():     # each module its own layout
    add_import(_model, _spec, "quark", _flags or q.layer_flags(_layers), "mixed/" + _name)


# ---------------------------------------------------------------------------------------------
# The allowances still describe Quark
# ---------------------------------------------------------------------------------------------

@q.test
def explained_mxfp4_padding():
    """Without the shape exclusions Quark pads stories' down_proj (in=172) to whole MX blocks,
    where the view leaves it unquantized: ALLOWED['shape-exclusions']."""
    src = q.shared_model("bf16")
    qdir = quark_export(src, "mxfp4", "quark")
    qt, st = model_tensors(qdir), model_tensors(src)
    padded = shape_excluded(src, "mxfp4")
    assert padded, "stories has no row length that is not a multiple of 32"
    for mod in padded:
        rows, cols = st[mod + ".weight"][1]
        want = {mod + ".weight": ("U8", [rows, cols // 2]),
                mod + ".weight_scale": ("U8", [rows, -(-cols // 32)])}
        got = {n: qt[n][:2] for n in want if n in qt}
        assert got == want, "Quark no longer pads %s: %s (expected %s)" % (mod, got, want)
    with q.mounted(src, "mxfp4") as m:
        vt = model_tensors(m.path)
        excl = json.load(open(m.p("config.json")))["quantization_config"]["exclude"]
    for mod in padded:
        assert vt[mod + ".weight"] == st[mod + ".weight"], "%s is not the source's" % mod
        assert mod + ".weight_scale" not in vt and mod in excl, (mod, excl)


@q.test
def explained_int4_group_refused():
    """Without the shape exclusions Quark refuses a group that does not divide the input dim
    (the whole model), where the view leaves those modules unquantized."""
    require_quark()
    src = q.shared_model("bf16")
    try:
        ORACLE.get(src, "int4-g32", "quark")
    except qo.QuarkCannot as exc:
        assert "not divisible by group_size=32" in str(exc), exc
    else:
        raise AssertionError("Quark quantized int4-g32 of stories (in=172) without exclusions")


@q.test
def explained_awq_key_names():
    """Quark's awq export really carries the corrupted names (ALLOWED['awq-key-names'])."""
    qdir = quark_export(fitting_model(), "uint4-g128", "awq")
    names = set(model_tensors(qdir))
    for want in ("model.layers.0.mlp.up_proj.qscales", "model.layers.0.mlp.up_proj.qqzeros",
                 "model.layers.0.input_layernorm.qweight", "model.embed_tokens.qweight"):
        assert want in names, "%s not in Quark's awq export: the allowance is stale" % want
    assert not any(n.endswith((".scales", ".qzeros")) and not n.endswith(
        (".qscales", ".qqzeros")) for n in names)


@q.test
def comparison_can_fail():
    """A view that is not Quark's export is caught: int8 vs Quark's int8-channel, and a
    config key changed."""
    src = q.shared_model("bf16")
    qdir = quark_export(src, "int8-channel", "quark")
    problems = []
    with q.mounted(src, "int8") as m:
        compare(m.path, qdir, "quark", src, problems)
    assert any("weight_scale" in p for p in problems), problems
    assert any("quantization_config.global_quant_config.weight.qscheme" in p
               for p in problems), problems


if __name__ == "__main__":
    q.main()
