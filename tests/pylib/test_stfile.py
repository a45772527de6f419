"""tests/pylib/stfile.py, the safetensors plumbing the oracle, the generator and the other tools
share: headers written and read back against bytes worked out by hand here, the file order of
tensors, and a refusal (naming the file) for each way a header can be broken. No mount.

Run: /usr/bin/python3 tests/pylib/test_stfile.py [name-filter]   (meson: suite unit)
"""

import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "integration"))
import qfstest as q  # noqa: E402
import stfile  # noqa: E402

# One F32 tensor "a" of shape [2] after metadata {"format": "pt"}, counted by hand:
# {"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}
# is 1 + 14 + 1 + 15 + 1 + 3 + 1 + 1 + 7 + 1 + 5 + 1 + 7 + 1 + 3 + 1 + 14 + 1 + 5 + 1 + 1 = 85
# bytes, padded with 3 spaces to 88 = 0x58.
ONE_F32_TEXT = (b'{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],'
                b'"data_offsets":[0,8]}}   ')
ONE_F32 = b"\x58\x00\x00\x00\x00\x00\x00\x00" + ONE_F32_TEXT


class T:
    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype


def expect_refusal(raw, words):
    try:
        stfile.parse_header(raw, "shard.safetensors")
    except stfile.HeaderError as exc:
        msg = str(exc)
        assert msg.startswith("shard.safetensors: ") and words in msg, msg
        return
    raise AssertionError("accepted %r (expected a refusal saying %r)" % (raw[:40], words))


@q.test
def header_bytes_by_hand():
    assert len(ONE_F32_TEXT) == 88
    got = stfile.header_bytes([("a", "F32", [2], 8)], {"format": "pt"})
    assert got == ONE_F32, got


@q.test
def header_without_metadata():
    # {"x":{"dtype":"U8","shape":[],"data_offsets":[0,1]}} = 52 bytes, 4 spaces -> 56 = 0x38
    got = stfile.header_bytes([("x", "U8", (), 1)], None)
    want = (b"\x38" + b"\x00" * 7
            + b'{"x":{"dtype":"U8","shape":[],"data_offsets":[0,1]}}' + b" " * 4)
    assert got == want, got


@q.test
def offsets_back_to_back_in_the_order_given():
    raw = stfile.header_bytes([("b", "I8", [3], 3), ("a", "F16", [2, 2], 8)], {})
    header, start = stfile.parse_header(raw, "mem")
    assert start == len(raw)
    assert header["b"]["data_offsets"] == [0, 3] and header["a"]["data_offsets"] == [3, 11]


@q.test
def read_back_from_a_file():
    path = os.path.join(q.TMP, "one.safetensors")
    with open(path, "wb") as f:
        f.write(ONE_F32 + struct.pack("<2f", 1.5, -2.0))
    header, start = stfile.read_header(path)
    assert start == 96, start
    assert header == {"__metadata__": {"format": "pt"},
                      "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, header
    pairs, _ = stfile.read_header(path, pairs=True)
    assert [k for k, _ in pairs] == ["__metadata__", "a"], pairs


@q.test
def file_order_is_dtype_rank_then_name_bytes():
    ts = [T("b", "BF16"), T("d", "I8"), T("a", "BF16"), T("c", "F32"), T("Z", "BF16"),
          T("\u00e9", "BF16")]
    # F32 ranks above BF16 above I8; within BF16, UTF-8 bytes: "Z" 0x5a < "a" < "b" < 0xc3 0xa9
    assert [t.name for t in stfile.file_order(ts)] == ["c", "Z", "a", "b", "\u00e9", "d"]


@q.test
def broken_headers_refused_with_the_file_name():
    expect_refusal(b"\x05\x00\x00", "header too small")
    expect_refusal(struct.pack("<Q", 100_000_001), "header too large")
    expect_refusal(struct.pack("<Q", 16) + b"{}", "runs past the end")
    expect_refusal(struct.pack("<Q", 8) + b"{nojson}", "not valid JSON")
    expect_refusal(struct.pack("<Q", 8) + b"[1,2,3] ", "not a JSON object")
    expect_refusal(struct.pack("<Q", 2) + b"\xff\xfe", "not valid JSON")


@q.test
def numel_of_shapes():
    assert stfile.numel([]) == 1
    assert stfile.numel([2, 3, 4]) == 24
    assert stfile.numel([0, 5]) == 0


if __name__ == "__main__":
    q.main(skip_exit=False)
