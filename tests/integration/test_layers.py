"""Per-layer specs (--layer GLOB=SPEC, --preset): real mounts and exports checked byte for byte
against tests/oracle/quarkref.py, which resolves the rules on its own; the refusals (formats
that cannot express them, a spec the format cannot write, a rule that matches nothing, rules
that loaders would read differently); `inspect`'s per-layer plan; the -o spelling.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qfstest as q  # noqa: E402

# Written out by hand from README "Per-layer precision", not read from the C table: the preset
# keeps q/k/v at int8-channel.
KEEP_SENSITIVE = [("*.self_attn.[qkv]_proj", "int8-channel")]

MIXED = [("model.layers.*.mlp.down_proj", "int8-channel"), ("model.layers.0.*", "fp8")]


def fitting():
    """Linear dims multiples of 128, two shards with an index: every spec quantizes here."""
    return q.gen_model("demo", "bf16", "--hidden", "256", "--intermediate", "512", "--layers",
                       "2", "--heads", "4", "--kv-heads", "2", "--vocab", "512")


def header(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))


def view_dtypes(view):
    """{tensor name: dtype} over the view's model*.safetensors."""
    out = {}
    for f in q.model_files(view):
        out.update({k: v["dtype"] for k, v in header(os.path.join(view, f)).items()
                    if k != "__metadata__"})
    return out


def same_tree(a, b):
    fa, fb = sorted(q.tree_files(a)), sorted(q.tree_files(b))
    assert fa == fb, (fa, fb)
    for rel in fa:
        x, y = q.read_bytes(os.path.join(a, rel)), q.read_bytes(os.path.join(b, rel))
        assert x == y, "%s differs from byte %d" % (rel, q.first_diff(x, y))


@q.test
def mixed_mount_export_reference():
    """int4-g128 with down_proj at int8-channel and layer 0 at fp8: the mount, the export and
    quarkref agree byte for byte; each module has its spec's tensors; the config lists both
    rules in layer_quant_config."""
    src = fitting()
    flags = q.layer_flags(MIXED)
    exp = q.export(src, "int4-g128", extra=flags)
    q.quarkref_check(src, exp, "int4-g128", layers=MIXED)
    with q.mounted(src, "int4-g128", extra=flags) as m:
        same_tree(m.path, exp)
        q.quarkref_check(src, m.path, "int4-g128", layers=MIXED)
    dt = view_dtypes(exp)
    # down_proj of layer 0 matches both rules: the first given wins (and sorts first too)
    assert dt["model.layers.0.mlp.down_proj.weight"] == "I8", dt
    assert dt["model.layers.1.mlp.down_proj.weight"] == "I8"
    assert dt["model.layers.0.self_attn.q_proj.weight"] == "F8_E4M3"
    assert "model.layers.0.self_attn.q_proj.weight_zero_point" not in dt   # fp8: no zero point
    assert dt["model.layers.1.self_attn.q_proj.weight"] == "I32"           # int4, packed
    qc = json.load(open(os.path.join(exp, "config.json")))["quantization_config"]
    assert sorted(qc["layer_quant_config"]) == sorted(g for g, _ in MIXED), qc
    assert qc["layer_quant_config"]["model.layers.0.*"]["weight"]["dtype"] == "fp8_e4m3"
    assert qc["global_quant_config"]["weight"]["dtype"] == "int4"
    assert qc["layer_type_quant_config"] == {}


@q.test
def reference_can_fail():
    """quarkref --check sees a view made without the rules as different."""
    src = fitting()
    exp = q.export(src, "int4-g128")
    q.quarkref_check(src, exp, "int4-g128", layers=MIXED, expect_ok=False)


@q.test
def preset_on_stories():
    """--preset keep-sensitive on stories260K-bf16 under int4-g32: q/k/v become int8-channel
    (in=64 fits anything), o_proj int4, the MLP stays BF16 (out=172, in=172: shapes); equal
    to quarkref with the preset's rules written by hand."""
    src = q.shared_model("bf16")
    exp = q.export(src, "int4-g32", extra=["--preset", "keep-sensitive"])
    q.quarkref_check(src, exp, "int4-g32", layers=KEEP_SENSITIVE)
    dt = view_dtypes(exp)
    for i in range(5):
        L = "model.layers.%d." % i
        for p in ("q", "k", "v"):
            assert dt[L + "self_attn.%s_proj.weight" % p] == "I8", (i, p)
        assert dt[L + "self_attn.o_proj.weight"] == "I32"
        assert dt[L + "mlp.down_proj.weight"] == "BF16"
    qc = json.load(open(os.path.join(exp, "config.json")))["quantization_config"]
    assert list(qc["layer_quant_config"]) == [KEEP_SENSITIVE[0][0]]


@q.test
def layer_rule_makes_a_shape_fit():
    """stories' down_proj (in=172) cannot take uint4-g32 but can take int8-channel through a
    rule; a rule whose spec cannot take a shape leaves it unquantized and in the exclusions."""
    src = q.shared_model("bf16")
    layers = [("*.down_proj", "int8-channel"), ("*.o_proj", "int4-g128")]
    exp = q.export(src, "uint4-g32", extra=q.layer_flags(layers))
    q.quarkref_check(src, exp, "uint4-g32", layers=layers)
    dt = view_dtypes(exp)
    assert dt["model.layers.0.mlp.down_proj.weight"] == "I8"
    assert dt["model.layers.0.self_attn.o_proj.weight"] == "BF16"   # g128 > in=64
    excl = json.load(open(os.path.join(exp, "config.json")))["quantization_config"]["exclude"]
    assert "model.layers.0.self_attn.o_proj" in excl
    assert "model.layers.0.mlp.down_proj" not in excl


@q.test
def lm_head_by_exact_name():
    """An untied lm_head is quantized only by a rule naming it exactly (a glob such as '*'
    leaves it alone), and then leaves the exclusion list; a tied one has no weight: exit 1."""
    src = q.gen_model("demo", "bf16", "--hidden", "256", "--intermediate", "512", "--layers",
                      "2", "--heads", "4", "--kv-heads", "2", "--vocab", "512", "--untied")
    layers = [("lm_head", "fp8-channel")]
    exp = q.export(src, "int4-g128", extra=q.layer_flags(layers))
    q.quarkref_check(src, exp, "int4-g128", layers=layers)
    dt = view_dtypes(exp)
    assert dt["lm_head.weight"] == "F8_E4M3", dt["lm_head.weight"]
    qc = json.load(open(os.path.join(exp, "config.json")))["quantization_config"]
    assert "lm_head" not in qc["exclude"], qc["exclude"]
    star = [("*", "fp8-channel")]
    exp = q.export(src, "int4-g128", extra=q.layer_flags(star))
    q.quarkref_check(src, exp, "int4-g128", layers=star)
    assert view_dtypes(exp)["lm_head.weight"] == "BF16"
    tied = q.gen_model("demo", "bf16")     # the generator's demo model ties lm_head
    res = q.quarkfs("inspect", "--spec", "int8", "--layer", "lm_head=fp8", tied)
    assert res.returncode == 1 and "not tied to the embeddings" in res.stderr, res


@q.test
def refusals():
    """Formats without per-layer configs, a spec the format cannot write, bad syntax and an
    unknown preset exit 2 naming the rule; a rule matching nothing and rules the sorted config
    would give another meaning exit 1 naming the module or glob."""
    src = fitting()
    cases = [
        (["--spec", "uint4-g128", "--format", "awq", "--layer", "*.down_proj=uint4-g32"], 2,
         ["'*.down_proj=uint4-g32'", "format awq cannot express per-layer specs"]),
        (["--spec", "fp8", "--format", "fp8", "--layer", "*.down_proj=fp8"], 2,
         ["format fp8 cannot express"]),
        (["--spec", "int4-g128", "--format", "compressed-tensors", "--layer", "x=int8-channel"],
         2, ["compressed-tensors", "--format quark"]),
        (["--spec", "int8", "--layer", "*.o_proj=fp8-block"], 2,
         ["fp8-block cannot be written in format quark"]),
        (["--spec", "int8", "--layer", "no-equals-sign"], 2, ["GLOB=SPEC"]),
        (["--spec", "int8", "--layer", "*.o_proj=int9"], 2, ["unknown spec 'int9'"]),
        (["--spec", "int8", "--preset", "fast"], 2, ["unknown preset 'fast'", "keep-sensitive"]),
        (["--spec", "int8", "--layer", "*.nothing_here=fp8"], 1,
         ["'*.nothing_here=fp8' matches no quantizable module"]),
        # user order: b.* first; sorted, "*.q_proj" comes first and would win for layer 0's q
        (["--spec", "int8", "--layer", "model.layers.0.*=fp8", "--layer", "*.q_proj=int4-g128"],
         1, ["model.layers.0.self_attn.q_proj", "sorted key order"]),
    ]
    for args, rc, words in cases:
        for cmd in (["inspect"], ["export", "--no-cache"]):
            out = q.tmppath("refused")
            res = q.run([q.QUARKFS] + cmd + args + [src] + ([out] if cmd[0] == "export" else []))
            assert res.returncode == rc, (args, cmd, res)
            for w in words:
                assert w in res.stderr, (w, args, res.stderr)
            assert not os.path.exists(out) or not os.listdir(out), out


@q.test
def inspect_shows_the_plan():
    """The table names each module's spec and the rule that gave it; --json carries "spec"."""
    src = fitting()
    flags = q.layer_flags(MIXED)
    res = q.quarkfs("inspect", "--spec", "int4-g128", *flags, src)
    assert res.returncode == 0, res
    line = [ln for ln in res.stdout.splitlines()
            if ln.startswith("model.layers.1.mlp.down_proj.weight")][0]
    assert "quantized int8-channel (--layer 'model.layers.*.mlp.down_proj')" in line, line
    line = [ln for ln in res.stdout.splitlines()
            if ln.startswith("model.layers.1.self_attn.q_proj.weight")][0]
    assert line.rstrip().endswith("quantized"), line
    res = q.quarkfs("inspect", "--json", "--spec", "int4-g128", *flags, src)
    rows = {r["name"]: r for r in json.loads(res.stdout)["tensors"]}
    assert rows["model.layers.0.self_attn.k_proj.weight"]["spec"] == "fp8"
    assert rows["model.layers.1.self_attn.k_proj.weight"]["spec"] == "int4-g128"
    assert "spec" not in rows["model.norm.weight"]


@q.test
def spec_all_and_list_specs():
    """inspect --spec all with a preset: every quark spec gets a row with the rules, fp8-block
    (fp8 or compressed-tensors only) a row saying why not; --list-specs names the preset."""
    src = fitting()
    res = q.quarkfs("inspect", "--spec", "all", "--preset", "keep-sensitive", src)
    assert res.returncode == 0, res
    rows = {ln.split()[0]: ln for ln in res.stdout.splitlines()[1:] if ln.strip()}
    assert "per-layer rules (--layer, --preset) need --format quark" in rows["fp8-block"]
    assert "mxfp4" in rows and "int4-g128" in rows
    res = q.quarkfs("--list-specs")
    assert res.returncode == 0 and "keep-sensitive" in res.stdout, res


@q.test
def o_spelling_and_vllm_warning():
    """-o layer=A=S:B=S is --layer A=S --layer B=S (bytes equal); q/k/v given different specs
    get the warning that vLLM refuses it."""
    src = fitting()
    exp = q.export(src, "int4-g128", extra=q.layer_flags(MIXED))
    with q.mounted(src, "int4-g128",
                   opts=["layer=" + ":".join("%s=%s" % r for r in MIXED)]) as m:
        same_tree(m.path, exp)
    res = q.quarkfs("inspect", "--spec", "int4-g128", "--layer", "*.k_proj=int8-channel", src)
    assert res.returncode == 0, res
    assert "vLLM fuses q_proj, k_proj, v_proj" in res.stderr, res.stderr


if __name__ == "__main__":
    q.main()
