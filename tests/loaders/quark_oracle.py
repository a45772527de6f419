"""AMD Quark's own export of a Hugging Face model, for one quarkfs spec/format pair.

The oracle of the view: the source model is loaded with transformers on the CPU, quantized by
the real amd-quark (`quark.torch`, pinned in requirements.txt) with the Quark spec classes that
quarkfs names for each spec (README "Specs and formats"), frozen, and written by Quark's own
exporter (`export_safetensors`) in the custom_mode that matches the quarkfs format. Weights are
static and activations dynamic in every spec, so no calibration data is needed
(dataloader=None). lm_head is excluded, as quarkfs does by default.

Library:  export(src, spec, fmt, out, exclude=(), layers=())  ->  out   (raises QuarkCannot)
          Oracle(cache_root).get(src, spec, fmt, exclude=(), layers=())  (each recipe once)
CLI:      python quark_oracle.py --spec S [--format F] [--exclude MODULE]... [--layer GLOB=SPEC]...
                                 SRC OUT

layers: ((glob, spec), ...), Quark's layer_quant_config in that order (quarkfs's --layer).

exclude: module names (fnmatch globs) excluded besides lm_head, e.g. the modules whose shapes
quarkfs's spec cannot take (Quark pads or refuses those).

Run with the venv that has amd-quark (build-venv/bin/python).
"""

import argparse
import contextlib
import copy
import io
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "pylib"))
import stfile  # noqa: E402  the safetensors container

os.environ.setdefault("QUARK_LOG_LEVEL", "error")       # Quark logs every step at info

# The quarkfs format -> Quark's export_safetensors custom_mode.
CUSTOM_MODE = {"quark": "quark", "awq": "awq", "fp8": "fp8"}

# Pairs Quark can produce without calibration (fp8-block is no Quark scheme, compressed-tensors
# no Quark export). uint4/int4 without -gG are the g128 aliases: not repeated.
GROUPS = (32, 64, 128)
QUARK_SPECS = (["int8", "int8-channel", "w8a8-int8", "fp8", "fp8-channel"]
               + ["uint4-g%d" % g for g in GROUPS] + ["int4-g%d" % g for g in GROUPS] + ["mxfp4"])
PAIRS = ([(s, "quark") for s in QUARK_SPECS]
         + [(s, "awq") for s in QUARK_SPECS if s.startswith(("uint4", "int4"))]
         + [("fp8", "fp8")])

EXCLUDE = ["lm_head"]

ST_DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}


class QuarkCannot(Exception):
    """Quark itself refused or failed to produce this export (the message is its exception)."""


def quark_layer(spec):
    """The Quark QLayerConfig of one quarkfs spec (import of quark deferred to here)."""
    from quark.torch.quantization.config.config import (
        FP8E4M3PerChannelSpec, FP8E4M3PerTensorSpec, Int4PerGroupSpec,
        Int8PerChannelSpec, Int8PerTensorSpec, OCP_MXFP4Spec, QLayerConfig,
        Uint4PerGroupSpec)
    common = dict(scale_type="float", round_method="half_even")
    inp = None
    if spec == "int8":
        w = Int8PerTensorSpec(observer_method="min_max", symmetric=True, is_dynamic=False, **common)
    elif spec in ("int8-channel", "w8a8-int8"):
        w = Int8PerChannelSpec(ch_axis=0, symmetric=True, is_dynamic=False, **common)
        if spec == "w8a8-int8":     # dynamic per-token: per_channel on axis 1, as Quark's PTPC
            inp = Int8PerChannelSpec(ch_axis=1, symmetric=True, is_dynamic=True, **common)
    elif spec == "fp8":
        # scale_type given explicitly: the spec's default (None) serializes null, and quarkfs
        # documents "float" (the same arithmetic: the scale stays in the model dtype).
        w = FP8E4M3PerTensorSpec(observer_method="min_max", scale_type="float", is_dynamic=False)
        inp = FP8E4M3PerTensorSpec(observer_method="min_max", scale_type="float", is_dynamic=True)
    elif spec == "fp8-channel":
        w = FP8E4M3PerChannelSpec(ch_axis=0, is_dynamic=False, **common)
        inp = FP8E4M3PerChannelSpec(ch_axis=1, is_dynamic=True, **common)
    elif spec.startswith(("uint4-g", "int4-g")):
        cls = Uint4PerGroupSpec if spec.startswith("u") else Int4PerGroupSpec
        w = cls(ch_axis=-1, group_size=int(spec.split("-g")[1]), symmetric=not spec.startswith("u"),
                is_dynamic=False, **common)
    elif spec == "mxfp4":
        w = OCP_MXFP4Spec(ch_axis=-1, is_dynamic=False)
        inp = OCP_MXFP4Spec(ch_axis=-1, is_dynamic=True)
    else:
        raise QuarkCannot("%s is not a Quark scheme" % spec)
    return QLayerConfig(weight=w.to_quantization_spec(),
                        input_tensors=inp.to_quantization_spec() if inp else None)


def quark_config(spec, exclude=(), layers=()):
    """The Quark QConfig of quarkfs's spec, with layers = ((glob, spec), ...) as Quark's
    layer_quant_config (quarkfs's --layer GLOB=SPEC, in that order)."""
    from quark.torch.quantization.config.config import QConfig
    # Quark writes the list verbatim; quarkfs writes its exclusions sorted. A layer rule naming
    # lm_head quantizes it (quarkfs --layer lm_head=SPEC): then it is not excluded.
    cfg = QConfig(global_quant_config=quark_layer(spec),
                  layer_quant_config={g: quark_layer(s) for g, s in layers},
                  exclude=sorted((set(EXCLUDE) - {g for g, _ in layers}) | set(exclude)))
    return cfg


def source_dtype(src):
    """The floating dtype of the source's 2-D weights (read from the safetensors headers)."""
    counts = {}
    for name in sorted(os.listdir(src)):
        if not (name.startswith("model") and name.endswith(".safetensors")):
            continue
        header, _ = stfile.read_header(os.path.join(src, name))
        for k, v in header.items():
            if k != "__metadata__" and v["dtype"] in ST_DTYPES and len(v["shape"]) == 2:
                counts[v["dtype"]] = counts.get(v["dtype"], 0) + 1
    if not counts:
        raise QuarkCannot("%s: no BF16/F16/F32 2-D tensor" % src)
    return ST_DTYPES[max(counts, key=counts.get)]


@contextlib.contextmanager
def _quiet(log):
    """Quark and transformers print progress bars and info lines: keep them in log."""
    with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
        yield


def quantize(src, spec, log=None, exclude=(), layers=()):
    """The model of SRC quantized and frozen by Quark (weights real-quantized at export)."""
    import torch
    from transformers import AutoModelForCausalLM
    from quark.torch import ModelQuantizer
    cfg = quark_config(spec, exclude, layers)
    log = log if log is not None else io.StringIO()
    try:
        with _quiet(log):
            model = AutoModelForCausalLM.from_pretrained(
                src, dtype=getattr(torch, source_dtype(src)), device_map="cpu")
            model.eval()
            quantizer = ModelQuantizer(cfg)
            # Quark 0.13 asks for calibration data when weight-only layers and layers with
            # (dynamic) activations are mixed (config_verification.py: is_act_dynamic is and-ed
            # over the layers, and a weight-only layer counts as not dynamic); dynamic
            # activations keep no scales and weights are min-max, so one short batch of token
            # ids changes no exported byte.
            data = [torch.tensor([[1, 2, 3, 4]])] if layers else None
            model = quantizer.quantize_model(model, dataloader=data)
            model = quantizer.freeze(model)
    except Exception as exc:       # noqa: BLE001 - the reason is reported, the case skipped
        raise QuarkCannot("quantize_model/freeze raised %s: %s" % (type(exc).__name__, exc)) from exc
    return model


def export_model(model, fmt, out, log=None):
    """Quark's export_safetensors of a quantized model (a copy: export converts modules)."""
    from quark.torch import export_safetensors
    mode = CUSTOM_MODE[fmt]
    model = copy.deepcopy(model)
    if mode == "awq":
        # custom_mode "awq" is only accepted when the config lists the AWQ algorithm
        # (quant_config_parser.py, get_custom_config). AWQ itself needs calibration data and
        # rescales weights; quarkfs writes plain round-to-nearest weights in the AWQ layout, so
        # the algorithm is named in the config only, after quantization, and never run.
        from quark.torch.quantization.config.config import AWQConfig
        model.quant_config.algo_config = [AWQConfig()]
    log = log if log is not None else io.StringIO()
    try:
        with _quiet(log):
            export_safetensors(model, out, custom_mode=mode, weight_format="real_quantized",
                               pack_method="reorder")
    except Exception as exc:       # noqa: BLE001
        raise QuarkCannot("export_safetensors(custom_mode=%r) raised %s: %s"
                          % (mode, type(exc).__name__, exc)) from exc
    return out


def export(src, spec, fmt, out, log=None, exclude=(), layers=()):
    """Quantize SRC with Quark for spec (and layers) and export it in fmt's custom_mode into
    OUT."""
    return export_model(quantize(src, spec, log, exclude, layers), fmt, out, log)


class Oracle:
    """Quark's exports under cache_root, each (src, spec) quantized once and each
    (src, spec, fmt) exported once; a failure is remembered and raised again."""

    def __init__(self, cache_root):
        self.root = cache_root
        self.models, self.exports, self.logs = {}, {}, {}

    def get(self, src, spec, fmt, exclude=(), layers=()):
        key = (os.path.realpath(src), spec, tuple(sorted(exclude)), tuple(layers), fmt)
        if key not in self.exports:
            mkey = key[:4]
            log = self.logs.setdefault(mkey, io.StringIO())
            try:
                if mkey not in self.models:
                    try:
                        self.models[mkey] = quantize(src, spec, log, exclude, layers)
                    except QuarkCannot as exc:
                        self.models[mkey] = exc
                if isinstance(self.models[mkey], QuarkCannot):
                    raise self.models[mkey]
                out = os.path.join(self.root, "quark-%d" % len(self.exports))
                self.exports[key] = export_model(self.models[mkey], fmt, out, log)
            except QuarkCannot as exc:
                self.exports[key] = exc
        if isinstance(self.exports[key], QuarkCannot):
            raise self.exports[key]
        return self.exports[key]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spec", required=True, choices=QUARK_SPECS)
    ap.add_argument("--format", default="quark", choices=sorted(CUSTOM_MODE))
    ap.add_argument("--exclude", action="append", default=[], metavar="MODULE",
                    help="also exclude this module (repeatable; lm_head always is)")
    ap.add_argument("--layer", action="append", default=[], metavar="GLOB=SPEC",
                    help="layer_quant_config entry (repeatable, in order)")
    ap.add_argument("--verbose", action="store_true", help="show Quark's own output")
    ap.add_argument("src")
    ap.add_argument("out")
    a = ap.parse_args()
    if (a.spec, a.format) not in PAIRS:
        ap.error("Quark has no %s export of %s" % (a.format, a.spec))
    log = sys.stderr if a.verbose else io.StringIO()
    try:
        export(a.src, a.spec, a.format, a.out, log, a.exclude,
               [tuple(x.rsplit("=", 1)) for x in a.layer])
    except QuarkCannot as exc:
        print("quark_oracle: %s" % exc, file=sys.stderr)
        if not a.verbose:
            print(log.getvalue()[-4000:], file=sys.stderr)
        return 1
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
