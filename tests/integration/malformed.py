#!/usr/bin/env python3
"""The malformed-model corpus: every case is built on demand from a generated model, so the
repository holds no binary blobs.

    python3 tests/integration/malformed.py OUT [CASE...]    build cases into OUT/CASE
    python3 tests/integration/malformed.py --list           one line per case

Each case starts from the `demo` model of tests/fixtures/genmodel.py (bf16, two shards and an index,
config.json, generation_config.json) plus a `tokenizer.json` and `extra/notes.txt`, and damages
one file. A Case says what quarkfs must do with it:

  verdict     "refused"   the view cannot be built: mount, export and inspect exit 1;
              "eio"       the view is built; the damaged file answers EIO, every other file is
                          served; export exits 1 (it cannot write that file), inspect exits 0
                          (a table that lists the file as broken);
              "read-eio"  as "eio", but the damage is only seen when the data is read (NaN/Inf
                          weights: sizes come from the headers); inspect exits 0 and lists
                          every tensor;
              "left-out"  the entry is left out of the view with a warning; everything else
                          is served; export and inspect exit 0;
              "served"    every file is served (the damage cannot matter to a reader, or the
                          view repairs it), with a warning naming the file;
  bad         the relative path of the damaged file (every message must name it);
  words       the problem: the message naming `bad` must contain one of these (lower case);
  user        the case needs quarkfs to obey mode bits, which root does not: the test runs it
              without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, and inspect/export also as this uid.

Used by tests/integration/test_malformed.py; the table of cases and outcomes is in
tests/RELIABILITY.md.
"""

import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "pylib"))
import stfile  # noqa: E402  which python has numpy
SOURCE_ROOT = os.path.abspath(os.environ.get("QUARKFS_SOURCE_ROOT") or os.path.join(HERE, "..", ".."))
GENMODEL = os.path.join(SOURCE_ROOT, "tests", "fixtures", "genmodel.py")
PY = stfile.numpy_python()

SHARD_A = "model-00001-of-00002.safetensors"
SHARD_B = "model-00002-of-00002.safetensors"
INDEX = "model.safetensors.index.json"
NOBODY = 65534

NAN_BITS = b"\xc0\x7f"   # bf16 quiet NaN
INF_BITS = b"\x80\x7f"   # bf16 +Inf


class Case:
    def __init__(self, name, build, verdict, bad, words, user=None, doc=""):
        self.name, self.build, self.verdict, self.bad = name, build, verdict, bad
        self.words, self.user, self.doc = list(words), user, doc

    def __repr__(self):
        return "Case(%s)" % self.name


# ---------------------------------------------------------------------------------------------
# safetensors helpers (independent of quarkfs)
# ---------------------------------------------------------------------------------------------

def read_st(path):
    """(header length, header text bytes, data bytes) of a safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        text = f.read(n)
        data = f.read()
    return n, text, data


def write_st(path, text, data, length=None):
    """A safetensors file from raw header text (padded with spaces to 8) and data bytes."""
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text) if length is None else length) + text + data)


def edit_header(path, fn):
    """Replace the header by fn(header dict) (the data stays); fn may return raw bytes."""
    _, text, data = read_st(path)
    h = json.loads(text)
    out = fn(h)
    if not isinstance(out, bytes):
        out = json.dumps(out, separators=(",", ":")).encode()
    write_st(path, out, data)


def by_offset(h):
    return sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"][0])


def a_weight(h):
    """The first 2-D *_proj.weight in file order (a quantization candidate)."""
    return [k for k in by_offset(h) if k.endswith("_proj.weight")][0]


def patch_element(path, tensor, element, bits):
    n, text, _ = read_st(path)
    info = json.loads(text)[tensor]
    with open(path, "r+b") as f:
        f.seek(8 + n + info["data_offsets"][0] + element * len(bits))
        f.write(bits)


# ---------------------------------------------------------------------------------------------
# damages (each takes the case directory)
# ---------------------------------------------------------------------------------------------

def truncated_data(d):
    p = os.path.join(d, SHARD_B)
    os.truncate(p, os.path.getsize(p) - 1000)


def truncated_in_header(d):
    p = os.path.join(d, SHARD_B)
    n, _, _ = read_st(p)
    os.truncate(p, 8 + n // 2)


def header_length_past_eof(d):
    p = os.path.join(d, SHARD_A)
    with open(p, "r+b") as f:
        f.write(struct.pack("<Q", os.path.getsize(p) + 1))


def header_length_huge(d):
    with open(os.path.join(d, SHARD_A), "r+b") as f:
        f.write(struct.pack("<Q", (1 << 64) - 1))


def header_over_100mb(d):
    """A header length of 100,000,001 (safetensors' limit is 100,000,000) in a sparse file that
    really is that large, so only the limit can refuse it (not the end of the file)."""
    p = os.path.join(d, SHARD_B)
    with open(p, "r+b") as f:
        f.write(struct.pack("<Q", 100_000_001))
    os.truncate(p, 8 + 100_000_001 + 4096)


def five_byte_file(d):
    os.truncate(os.path.join(d, SHARD_B), 5)


def empty_shard(d):
    os.truncate(os.path.join(d, SHARD_A), 0)


def invalid_json(d):
    p = os.path.join(d, SHARD_B)
    _, text, data = read_st(p)
    write_st(p, text[: len(text) // 2].replace(b"}", b",") + b'"x":', data)


def invalid_utf8(d):
    """A tensor name holding the bytes ff fe (never valid UTF-8)."""
    p = os.path.join(d, SHARD_B)
    _, text, data = read_st(p)
    h = json.loads(text)
    k = a_weight(h)
    raw = json.dumps(h, separators=(",", ":")).encode()
    write_st(p, raw.replace(json.dumps(k).encode(), json.dumps(k).encode()[:-1] + b"\xff\xfe\"", 1), data)


def duplicate_key(d):
    """The same tensor name twice, with different offsets (which one is meant?)."""
    p = os.path.join(d, SHARD_B)
    _, text, data = read_st(p)
    h = json.loads(text)
    ks = by_offset(h)
    a, b = ks[0], ks[1]
    items = []
    for k in h:
        v = h[k]
        items.append((b if k == a else k, v))     # a's entry renamed to b: b appears twice
    raw = b"{" + b",".join(json.dumps(k).encode() + b":" + json.dumps(v, separators=(",", ":")).encode()
                           for k, v in items) + b"}"
    write_st(p, raw, data)


def duplicate_key_same_offsets(d):
    """A tensor listed twice over the same bytes, first as U8 then as its own dtype: a checker
    that keeps the first entry and a loader that keeps the last see different tensors (the
    format says duplicate keys are disallowed)."""
    p = os.path.join(d, SHARD_A)
    _, text, data = read_st(p)
    h = json.loads(text)
    k = a_weight(h)
    b, e = h[k]["data_offsets"]
    decoy = {"dtype": "U8", "shape": [e - b], "data_offsets": [b, e]}
    raw = json.dumps(h, separators=(",", ":")).encode()
    first = json.dumps(k).encode() + b":" + json.dumps(decoy, separators=(",", ":")).encode() + b","
    write_st(p, b"{" + first + raw[1:], data)


def overlap_first_two(h):
    """Header h with its second tensor (by offset) starting where the first starts; sizes
    stay consistent with the shapes. Also used by test_errors.py."""
    ks = by_offset(h)
    a, b = ks[0], ks[1]
    sa = h[a]["data_offsets"][1] - h[a]["data_offsets"][0]
    sb = h[b]["data_offsets"][1] - h[b]["data_offsets"][0]
    h[b]["data_offsets"] = [h[a]["data_offsets"][0], h[a]["data_offsets"][0] + sb]
    if sb > sa:
        h[a]["data_offsets"] = [h[b]["data_offsets"][0], h[b]["data_offsets"][0] + sa]
    return h


def overlapping_offsets(d):
    edit_header(os.path.join(d, SHARD_A), overlap_first_two)


def gapped_offsets(d):
    """16 bytes of padding before the second tensor (safetensors has no holes)."""
    p = os.path.join(d, SHARD_B)
    _, text, data = read_st(p)
    h = json.loads(text)
    ks = by_offset(h)
    cut = h[ks[1]]["data_offsets"][0]
    for k in ks[1:]:
        h[k]["data_offsets"] = [x + 16 for x in h[k]["data_offsets"]]
    write_st(p, json.dumps(h, separators=(",", ":")).encode(), data[:cut] + b"\0" * 16 + data[cut:])


def shape_size_mismatch(d):
    def fn(h):
        k = a_weight(h)
        h[k]["shape"] = [h[k]["shape"][0], h[k]["shape"][1] + 1]
        return h
    edit_header(os.path.join(d, SHARD_B), fn)


def shape_product_overflow(d):
    def fn(h):
        h[a_weight(h)]["shape"] = [1 << 32, 1 << 32, 1 << 32]
        return h
    edit_header(os.path.join(d, SHARD_A), fn)


def size_overflow(d):
    """A shape product that fits 64 bits but whose byte size (x 16 bits) does not."""
    def fn(h):
        h[a_weight(h)]["shape"] = [1 << 31, 1 << 31]
        return h
    edit_header(os.path.join(d, SHARD_B), fn)


def unknown_dtype(d):
    def fn(h):
        h[a_weight(h)]["dtype"] = "BF17"
        return h
    edit_header(os.path.join(d, SHARD_B), fn)


def header_not_object(d):
    edit_header(os.path.join(d, SHARD_A), lambda h: b"[1,2,3]")


def nan_weight(d):
    p = os.path.join(d, SHARD_B)
    _, text, _ = read_st(p)
    patch_element(p, a_weight(json.loads(text)), 17, NAN_BITS)


def inf_weight(d):
    p = os.path.join(d, SHARD_A)
    _, text, _ = read_st(p)
    patch_element(p, a_weight(json.loads(text)), 3, INF_BITS)


def write_text(d, rel, text):
    with open(os.path.join(d, rel), "w") as f:
        f.write(text)


def config_not_json(d):
    write_text(d, "config.json", '{"model_type": "llama", "hidden_size": 256,,}\n')


def config_empty(d):
    write_text(d, "config.json", "")


def config_invalid_utf8(d):
    with open(os.path.join(d, "config.json"), "r+b") as f:
        text = f.read()
        f.seek(0)
        f.write(text.replace(b'"llama"', b'"ll\xffma"'))


def already_quantized(d):
    p = os.path.join(d, "config.json")
    cfg = json.load(open(p))
    cfg["quantization_config"] = {"quant_method": "fp8", "activation_scheme": "dynamic"}
    write_text(d, "config.json", json.dumps(cfg, indent=2))


def index_not_json(d):
    write_text(d, INDEX, '{"metadata": {"total_size": 1}, "weight_map": {')


def index_empty(d):
    write_text(d, INDEX, "")


def index_missing_file(d):
    """The index maps a tensor to a shard that does not exist."""
    p = os.path.join(d, INDEX)
    idx = json.load(open(p))
    idx["weight_map"]["model.layers.9.mlp.up_proj.weight"] = "model-00003-of-00003.safetensors"
    write_text(d, INDEX, json.dumps(idx, indent=2, sort_keys=True) + "\n")


def index_missing_tensor(d):
    """The index maps a tensor to a shard that exists but does not hold it."""
    p = os.path.join(d, INDEX)
    idx = json.load(open(p))
    idx["weight_map"]["model.layers.9.mlp.up_proj.weight"] = SHARD_A
    write_text(d, INDEX, json.dumps(idx, indent=2, sort_keys=True) + "\n")


def empty_passthrough(d):
    write_text(d, "tokenizer.json", "")


def dir_named_safetensors(d):
    """A directory named like a shard (model-00003-of-00003.safetensors/) with a file in it."""
    sub = os.path.join(d, "model-00003-of-00003.safetensors")
    os.mkdir(sub)
    write_text(d, "model-00003-of-00003.safetensors/readme.txt", "not a shard\n")


def fifo_shard(d):
    """A FIFO named like a shard: opening it would block until a writer comes."""
    os.mkfifo(os.path.join(d, "model-00003-of-00003.safetensors"))


def fifo_config(d):
    os.remove(os.path.join(d, "config.json"))
    os.mkfifo(os.path.join(d, "config.json"))


def dangling_symlink_shard(d):
    os.symlink("blobs/no-such-blob", os.path.join(d, "model-00003-of-00003.safetensors"))


def shard_unreadable(d):
    os.chmod(os.path.join(d, SHARD_B), 0)


def config_unreadable(d):
    os.chmod(os.path.join(d, "config.json"), 0)


def passthrough_unreadable(d):
    os.chmod(os.path.join(d, "tokenizer.json"), 0)


def dir_unreadable(d):
    os.chmod(os.path.join(d, "extra"), 0)


HEADER = ["header"]
CASES = [
    Case("truncated_data", truncated_data, "eio", SHARD_B, ["not fully covered"],
         doc="1000 bytes cut off the end of the data"),
    Case("truncated_in_header", truncated_in_header, "eio", SHARD_B, ["invalid header length"],
         doc="file cut in the middle of its JSON header"),
    Case("header_length_past_eof", header_length_past_eof, "eio", SHARD_A,
         ["invalid header length"], doc="u64 header length = file size + 1"),
    Case("header_length_huge", header_length_huge, "eio", SHARD_A, ["header too large"],
         doc="u64 header length = 2^64 - 1"),
    Case("header_over_100mb", header_over_100mb, "eio", SHARD_B, ["header too large"],
         doc="header length 100,000,001 in a 100 MB sparse file"),
    Case("five_byte_file", five_byte_file, "eio", SHARD_B, ["header too small"],
         doc="5-byte shard"),
    Case("empty_shard", empty_shard, "eio", SHARD_A, ["header too small"], doc="0-byte shard"),
    Case("invalid_json", invalid_json, "eio", SHARD_B, ["invalid json"],
         doc="header cut and patched into broken JSON"),
    Case("invalid_utf8", invalid_utf8, "eio", SHARD_B, ["invalid utf-8"],
         doc="tensor name with bytes ff fe"),
    Case("duplicate_key", duplicate_key, "eio", SHARD_B, ["duplicate"],
         doc="one tensor name twice with different offsets"),
    Case("duplicate_key_same_offsets", duplicate_key_same_offsets, "eio", SHARD_A, ["duplicate"],
         doc="one tensor name twice over the same bytes (U8, then BF16)"),
    Case("overlapping_offsets", overlapping_offsets, "eio", SHARD_A, ["overlaps"],
         doc="second tensor starts inside the first"),
    Case("gapped_offsets", gapped_offsets, "eio", SHARD_B, ["hole"],
         doc="16 padding bytes between two tensors"),
    Case("shape_size_mismatch", shape_size_mismatch, "eio", SHARD_B, ["need"],
         doc="shape x dtype != data_offsets size"),
    Case("shape_product_overflow", shape_product_overflow, "eio", SHARD_A, ["overflows"],
         doc="shape [2^32, 2^32, 2^32]"),
    Case("size_overflow", size_overflow, "eio", SHARD_B, ["overflows"],
         doc="shape [2^31, 2^31] of BF16: 2^62 elements, 2^66 bits"),
    Case("unknown_dtype", unknown_dtype, "eio", SHARD_B, ["unknown dtype"], doc="dtype BF17"),
    Case("header_not_object", header_not_object, "eio", SHARD_A, ["not a json object"],
         doc="header [1,2,3]"),
    Case("nan_weight", nan_weight, "read-eio", SHARD_B, ["nan", "non-finite", "finite"],
         doc="one NaN in a quantized weight"),
    Case("inf_weight", inf_weight, "read-eio", SHARD_A, ["nan", "inf", "non-finite", "finite"],
         doc="one +Inf in a quantized weight"),
    Case("config_not_json", config_not_json, "refused", "config.json", ["json"],
         doc="config.json with a syntax error"),
    Case("config_empty", config_empty, "refused", "config.json", ["json"],
         doc="0-byte config.json"),
    Case("config_invalid_utf8", config_invalid_utf8, "refused", "config.json",
         ["utf-8", "json"], doc="config.json with a byte ff"),
    Case("already_quantized", already_quantized, "refused", "config.json", ["quantiz"],
         doc="config.json already has a quantization_config"),
    Case("index_not_json", index_not_json, "eio", INDEX, ["json"], doc="index cut short"),
    Case("index_empty", index_empty, "eio", INDEX, ["json"], doc="0-byte index"),
    Case("index_missing_file", index_missing_file, "served", INDEX,
         ["model-00003-of-00003.safetensors"], doc="weight_map names a shard that is not there"),
    Case("index_missing_tensor", index_missing_tensor, "served", INDEX,
         ["model.layers.9.mlp.up_proj.weight"], doc="weight_map names a tensor its shard lacks"),
    Case("empty_passthrough", empty_passthrough, "served", "tokenizer.json", [],
         doc="0-byte tokenizer.json (a valid empty file: no message needed)"),
    Case("dir_named_safetensors", dir_named_safetensors, "served",
         "model-00003-of-00003.safetensors", [],
         doc="a directory model-00003-of-00003.safetensors/ (shown as a directory)"),
    Case("fifo_shard", fifo_shard, "left-out", "model-00003-of-00003.safetensors",
         ["not a regular file"], doc="a FIFO named like a shard (never opened)"),
    Case("fifo_config", fifo_config, "left-out", "config.json", ["not a regular file"],
         doc="config.json is a FIFO (never opened)"),
    Case("dangling_symlink_shard", dangling_symlink_shard, "left-out",
         "model-00003-of-00003.safetensors", ["no such file"],
         doc="a shard symlink to a missing blob"),
    Case("shard_unreadable", shard_unreadable, "eio", SHARD_B, ["permission denied"],
         user=NOBODY, doc="shard mode 000 (quarkfs obeying mode bits)"),
    Case("config_unreadable", config_unreadable, "refused", "config.json", ["permission denied"],
         user=NOBODY, doc="config.json mode 000 (quarkfs obeying mode bits)"),
    Case("passthrough_unreadable", passthrough_unreadable, "open-eacces", "tokenizer.json",
         ["permission denied"], user=NOBODY,
         doc="tokenizer.json mode 000 (quarkfs obeying mode bits)"),
    Case("dir_unreadable", dir_unreadable, "served", "extra", ["permission denied"],
         user=NOBODY, doc="extra/ mode 000 (quarkfs obeying mode bits): shown empty"),
]
BY_NAME = {c.name: c for c in CASES}


# ---------------------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------------------

def build_base(out):
    """The intact model every case starts from."""
    res = subprocess.run([PY, GENMODEL, out, "--preset", "demo", "--dtype", "bf16"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        raise RuntimeError("genmodel failed: %s" % res.stdout.decode(errors="replace"))
    write_text(out, "tokenizer.json", json.dumps({"version": "1.0", "model": {"type": "BPE"}}) + "\n")
    os.mkdir(os.path.join(out, "extra"))
    write_text(out, "extra/notes.txt", "a file in a subdirectory\n")
    return out


def build_case(case, base, out):
    """Copy the intact model to out (a new directory) and apply the case's damage."""
    shutil.copytree(base, out, symlinks=True)
    case.build(out)
    if case.user is not None:       # the unprivileged user must reach the directory
        os.chmod(out, 0o755)
    return out


def good_parts(case, d):
    """Relative paths (files) of the case directory that the view must serve intact."""
    out = []
    for root, dirs, files in os.walk(d):
        for name in files:
            p = os.path.join(root, name)
            rel = os.path.relpath(p, d)
            if rel == case.bad or rel.startswith(case.bad + "/"):
                continue
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and st.st_mode & 0o444:
                out.append(rel)
    return sorted(out)


def main(argv):
    if argv[1:] == ["--list"]:
        for c in CASES:
            print("%-24s %-11s %-34s %s" % (c.name, c.verdict, c.bad, c.doc))
        return 0
    if len(argv) < 2:
        print(__doc__)
        return 2
    out = argv[1]
    names = argv[2:] or [c.name for c in CASES]
    os.makedirs(out, exist_ok=True)
    base = build_base(tempfile.mkdtemp(prefix="malformed-base-", dir=out) + "/m")
    for n in names:
        build_case(BY_NAME[n], base, os.path.join(out, n))
        print(os.path.join(out, n))
    shutil.rmtree(os.path.dirname(base))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
