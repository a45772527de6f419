"""The Python plumbing the test tools share: the safetensors container (header read and write,
the dtype order of tensors in a file) and the re-run under Debian's python3 when numpy is missing.

No numerics live here. The quantizers that bit-exactness is judged by (tests/oracle/quarkref.py,
tests/quality/quality.py, the loader tests) each keep their own arithmetic, apart from each other
and from the C code; what they share is only how a safetensors file is laid out. Standard library
only, so that an interpreter without numpy can import it and re-run itself.

Import it from a tool under tests/ with
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                    "pylib"))
    import stfile
"""

import json
import os
import struct
import sys

# safetensors' Dtype enum in ascending order. A file written by safetensors (and the quarkfs
# view) orders its tensors by this rank descending, then by name's UTF-8 bytes.
DTYPE_ORDER = ["BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3", "F8_E8M0",
               "F8_E4M3FNUZ", "F8_E5M2FNUZ", "I16", "U16", "F16", "BF16", "I32", "U32", "F32",
               "C64", "F64", "I64", "U64"]
DTYPE_RANK = {name: i for i, name in enumerate(DTYPE_ORDER)}

HEADER_LIMIT = 100_000_000      # bytes of JSON header; safetensors refuses larger ones

DEBIAN_PY = "/usr/bin/python3"  # has Debian's python3-numpy
REEXEC_ENV = "QUARKFS_PY_REEXEC"


class HeaderError(ValueError):
    """A safetensors header that cannot be read; the message names the file."""


def import_numpy(is_main):
    """numpy, or, when this interpreter lacks it and the caller is the main script, the same
    command re-run once under Debian's python3 (a virtualenv's python may lack numpy). Raises
    ImportError when neither works."""
    try:
        import numpy
        return numpy
    except ImportError:
        if (is_main and os.path.exists(DEBIAN_PY)
                and os.path.realpath(sys.executable) != os.path.realpath(DEBIAN_PY)
                and not os.environ.get(REEXEC_ENV)):
            os.environ[REEXEC_ENV] = "1"
            os.execv(DEBIAN_PY, [DEBIAN_PY] + sys.argv)
        raise


def numpy_python():
    """The interpreter to run a numpy tool with: Debian's python3 where it exists, else this
    one."""
    return DEBIAN_PY if os.path.exists(DEBIAN_PY) else sys.executable


def parse_header(raw, name, pairs=False):
    """(header, data start) from the first bytes of a safetensors file; raw must hold at least
    the 8-byte length and the JSON text. header is the JSON object as a dict, __metadata__
    included, or with pairs=True its (key, value) pairs in file order. name is the file's name
    for HeaderError's message."""
    if len(raw) < 8:
        raise HeaderError("%s: header too small (%d bytes, the length alone takes 8)"
                          % (name, len(raw)))
    (n,) = struct.unpack("<Q", raw[:8])
    if n > HEADER_LIMIT:
        raise HeaderError("%s: header too large (%d bytes)" % (name, n))
    if len(raw) < 8 + n:
        raise HeaderError("%s: invalid header length %d: it runs past the end of the file"
                          % (name, n))
    hook = list if pairs else None
    try:
        header = json.loads(bytes(raw[8:8 + n]).decode("utf-8"), object_pairs_hook=hook)
    except (UnicodeDecodeError, ValueError) as exc:
        raise HeaderError("%s: header is not valid JSON: %s" % (name, exc)) from exc
    if not isinstance(header, list if pairs else dict):
        raise HeaderError("%s: header is not a JSON object" % name)
    return header, 8 + n


def read_header(path, pairs=False):
    """(header, data start) of the safetensors file at path, as parse_header."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) == 8:
            n = struct.unpack("<Q", head)[0]
            head += f.read(n) if n <= HEADER_LIMIT else b""
    return parse_header(head, path, pairs)


def numel(shape):
    """Number of elements of a tensor of this shape (1 for a scalar, 0 with a 0 dimension)."""
    n = 1
    for d in shape:
        n *= d
    return n


def file_order(tensors):
    """tensors (objects with .name and .dtype) in the order a safetensors file stores them."""
    return sorted(tensors, key=lambda t: (-DTYPE_RANK[t.dtype], t.name.encode("utf-8")))


def header_bytes(entries, metadata):
    """The bytes before the data of a safetensors file: the little-endian u64 length, then the
    compact JSON header padded with spaces to a multiple of 8. entries are (name, dtype, shape,
    nbytes) in data order, laid out back to back from offset 0; metadata (a dict of strings, or
    None to leave the key out) comes first."""
    header = {} if metadata is None else {"__metadata__": metadata}
    offset = 0
    for name, dtype, shape, nbytes in entries:
        header[name] = {"dtype": dtype, "shape": list(shape),
                        "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text
