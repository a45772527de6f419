"""Read paths of a mount: sizes, sequential, random, mmap, threads, eviction, EOF.

Every byte read from a mount is compared with the export of the same model and spec; the
export itself is first checked against tests/oracle/quarkref.py, so the expected bytes never come
from quarkfs alone. Each read mode runs on a fresh mount (cold page cache and tensor cache).
"""

import json
import mmap
import os
import random
import struct
import threading

import qfstest as q

PAGE = mmap.PAGESIZE
MODELS = {
    # name: (genmodel arguments, spec)
    "demo": (("demo", "bf16"), "int8"),
    # a 13 MB view file: a whole-file read spans many 1 MiB FUSE requests, tensors of 2.9 MB
    "big": (("demo", "bf16", "--hidden", "1024", "--intermediate", "2816", "--layers", "2"),
            "int8-channel"),
}
_setup = {}


def model(name):
    """(src, spec, export dir, {relpath: bytes of the export}) -- export checked by quarkref."""
    if name not in _setup:
        gen, spec = MODELS[name]
        src = q.gen_model(*gen)
        out = q.export(src, spec)
        q.quarkref_check(src, out, spec)
        files = {rel: q.read_bytes(os.path.join(out, rel)) for rel in q.tree_files(out)}
        assert any(len(b) > (8 << 20) for b in files.values()) or name != "big", \
            "the big model's files are not big"
        _setup[name] = (src, spec, out, files)
    return _setup[name]


def read_all_fd(fd, chunk, size, what):
    """Read a file with os.read(chunk) until EOF; every read but the last must be full."""
    parts, pos = [], 0
    while True:
        b = os.read(fd, chunk)
        if not b:
            break
        want = min(chunk, size - pos)
        assert len(b) == want, "%s: short read of %d bytes at %d (expected %d)" % (
            what, len(b), pos, want)
        parts.append(b)
        pos += len(b)
    return b"".join(parts)


def tensor_spans(files):
    """[(relpath, name, begin, end)] of every tensor in the view's safetensors files."""
    out = []
    for rel, data in files.items():
        if rel.endswith(".safetensors"):
            header, _, start = q.st_header_of(data, rel)
            for k, v in header.items():
                b, e = v["data_offsets"]
                out.append((rel, k, start + b, start + e))
    return sorted(out)


# ---------------------------------------------------------------------------------------------

def sizes(name):
    src, spec, out, files = model(name)
    with q.mounted(src, spec) as m:
        # the very first operation on each file is a stat of its path (no listing before)
        first = {rel: os.stat(m.p(rel)).st_size for rel in files}
        for rel, data in files.items():
            assert first[rel] == len(data), "%s: first stat says %d bytes, the export has %d" % (
                rel, first[rel], len(data))
        for _ in range(5):
            for rel in files:
                assert os.stat(m.p(rel)).st_size == first[rel], "%s: size changed" % rel
                assert os.lstat(m.p(rel)).st_size == first[rel], "%s: lstat size" % rel
        for rel, data in files.items():
            with open(m.p(rel), "rb") as f:
                assert os.fstat(f.fileno()).st_size == len(data)
                got = f.read()
            q.assert_bytes_equal(got, data, rel)
            assert os.stat(m.p(rel)).st_size == len(data), "%s: size changed after a read" % rel
        names = sorted(e.name for e in os.scandir(m.path))
        assert names == sorted(os.listdir(src)), names
        for rel in files:
            assert os.stat(m.p(rel)).st_size == first[rel], "%s: size changed after listing" % rel


def sequential(name, chunk):
    src, spec, out, files = model(name)
    with q.mounted(src, spec) as m:
        for rel, data in files.items():
            fd = os.open(m.p(rel), os.O_RDONLY)
            try:
                if chunk is None:
                    got = os.read(fd, len(data) + 4096)   # one read call for the whole file
                    assert len(got) == len(data), "%s: whole-file read got %d of %d bytes" % (
                        rel, len(got), len(data))
                    assert os.read(fd, 4096) == b"", "%s: data after EOF" % rel
                else:
                    got = read_all_fd(fd, chunk, len(data), rel)
            finally:
                os.close(fd)
            q.assert_bytes_equal(got, data, "%s (chunk %s)" % (rel, chunk))
            with open(m.p(rel), "rb") as f:        # buffered whole-file read, page cache warm
                q.assert_bytes_equal(f.read(), data, "%s (f.read())" % rel)


def random_reads(name, seed):
    src, spec, out, files = model(name)
    rng = random.Random(seed)
    spans = tensor_spans(files)
    with q.mounted(src, spec) as m:
        fds = {rel: os.open(m.p(rel), os.O_RDONLY) for rel in files}
        try:
            rels = sorted(files)
            for i in range(600):
                rel = rng.choice(rels)
                data = files[rel]
                size = len(data)
                kind = rng.random()
                if kind < 0.3 and spans:          # around a tensor boundary
                    _, _, b, e = rng.choice([s for s in spans if s[0] == rel] or spans[:1])
                    off = max(0, min(size, rng.choice([b, e]) + rng.randint(-9, 9)))
                else:
                    off = rng.randrange(0, size + 1)
                length = rng.choice([1, rng.randint(1, 64), rng.randint(1, 70000),
                                     rng.randint(1, 3 << 20)])
                got = os.pread(fds[rel], length, off)
                q.assert_bytes_equal(got, data[off:off + length],
                                     "%s pread(len=%d, off=%d) #%d" % (rel, length, off, i))
        finally:
            for fd in fds.values():
                os.close(fd)


def direct_reads(name, seed, opts=()):
    """O_DIRECT: the kernel forwards each read with its own offset and length to the daemon
    (no page-cache rounding), so view_read sees arbitrary, unaligned ranges."""
    src, spec, out, files = model(name)
    rng = random.Random(seed)
    with q.mounted(src, spec, opts=opts) as m:
        for rel in sorted(files):
            data = files[rel]
            try:
                fd = os.open(m.p(rel), os.O_RDONLY | os.O_DIRECT)
            except OSError as exc:
                raise AssertionError("open(O_DIRECT) of %s: %s" % (rel, exc))
            try:
                for i in range(150):
                    off = rng.randrange(len(data) + 1)
                    n = rng.choice([1, 3, rng.randint(1, 5000), rng.randint(1, 1 << 20)])
                    q.assert_bytes_equal(os.pread(fd, n, off), data[off:off + n],
                                         "%s O_DIRECT pread(%d, %d) #%d" % (rel, n, off, i))
            finally:
                os.close(fd)


def direct_threads(name, opts, rounds=60):
    """8 threads of O_DIRECT reads at random ranges (many spanning several tensors), so that
    computations, waits, evictions and recomputations of the engine overlap."""
    src, spec, out, files = model(name)
    rels = sorted(r for r in files if r.endswith(".safetensors"))
    with q.mounted(src, spec, opts=opts) as m:
        def reader(i):
            rng = random.Random(3000 + i)
            fds = {rel: os.open(m.p(rel), os.O_RDONLY | os.O_DIRECT) for rel in rels}
            try:
                for k in range(rounds):
                    rel = rng.choice(rels)
                    data = files[rel]
                    off = rng.randrange(len(data))
                    n = rng.randint(1, 4 << 20)
                    q.assert_bytes_equal(os.pread(fds[rel], n, off), data[off:off + n],
                                         "thread %d: %s pread(%d, %d) #%d" % (i, rel, n, off, k))
            finally:
                for fd in fds.values():
                    os.close(fd)
        run_threads(8, reader)


def mmap_reads(name, access, seed):
    src, spec, out, files = model(name)
    rng = random.Random(seed)
    with q.mounted(src, spec) as m:
        for rel, data in sorted(files.items()):
            if not data:
                continue
            with open(m.p(rel), "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=access)
                try:
                    assert len(mm) == len(data), "%s: mmap length %d" % (rel, len(mm))
                    pages = list(range((len(data) + PAGE - 1) // PAGE))
                    rng.shuffle(pages)
                    for p in pages:
                        a = p * PAGE
                        q.assert_bytes_equal(mm[a:a + PAGE], data[a:a + PAGE],
                                             "%s mmap page %d" % (rel, p))
                    # a few unaligned slices and single bytes
                    for _ in range(50):
                        a = rng.randrange(len(data))
                        b = min(len(data), a + rng.randint(1, 3 * PAGE))
                        assert mm[a:b] == data[a:b], "%s mmap[%d:%d]" % (rel, a, b)
                        assert mm[a] == data[a]
                    if access == mmap.ACCESS_COPY:
                        # a private mapping may be written; the file must not change
                        mm[0:4] = b"\xff\xfe\xfd\xfc"
                        assert mm[0:4] == b"\xff\xfe\xfd\xfc"
                finally:
                    mm.close()
            with open(m.p(rel), "rb") as f:
                q.assert_bytes_equal(f.read(), data, "%s after mmap" % rel)


def run_threads(n, target):
    """Start n threads running target(i), join them, re-raise the first exception."""
    errors = []

    def wrap(i):
        try:
            target(i)
        except BaseException as exc:      # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
        assert not t.is_alive(), "a reader thread hangs"
    if errors:
        raise errors[0]


def threads_random_tensors(name, opts=(), rounds=40):
    src, spec, out, files = model(name)
    spans = tensor_spans(files)
    with q.mounted(src, spec, opts=opts) as m:
        def reader(i):
            rng = random.Random(1000 + i)
            fds = {}
            try:
                for _ in range(rounds):
                    rel, tname, b, e = rng.choice(spans)
                    fd = fds.get(rel) or fds.setdefault(rel, os.open(m.p(rel), os.O_RDONLY))
                    got = os.pread(fd, e - b, b)
                    q.assert_bytes_equal(got, files[rel][b:e], "thread %d: %s %s" % (i, rel, tname))
            finally:
                for fd in fds.values():
                    os.close(fd)
        run_threads(8, reader)


def threads_same_tensor(name, opts=(), count=4):
    """All 8 threads read the same (largest) tensors at once, each on a fresh, cold mount."""
    src, spec, out, files = model(name)
    spans = sorted(tensor_spans(files), key=lambda s: s[3] - s[2], reverse=True)[:count]
    for rel, tname, b, e in spans:
        with q.mounted(src, spec, opts=opts) as m:
            barrier = threading.Barrier(8)
            results = [None] * 8

            def reader(i):
                fd = os.open(m.p(rel), os.O_RDONLY)
                try:
                    barrier.wait(30)
                    results[i] = os.pread(fd, e - b, b)
                finally:
                    os.close(fd)
            run_threads(8, reader)
            for i, got in enumerate(results):
                q.assert_bytes_equal(got, files[rel][b:e], "thread %d: %s %s" % (i, rel, tname))


def small_cache(name):
    """-o cache_mem=1M: tensors bigger than the budget, eviction, recomputation: same bytes."""
    src, spec, out, files = model(name)
    spans = tensor_spans(files)
    with q.mounted(src, spec, opts=["cache_mem=1M"]) as m:
        for rnd in range(3):
            for rel, data in sorted(files.items()):
                fd = os.open(m.p(rel), os.O_RDONLY)
                try:
                    # drop the kernel's copy so that the daemon must serve (and recompute) again
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    got = read_all_fd(fd, 1 << 20, len(data), rel)
                finally:
                    os.close(fd)
                q.assert_bytes_equal(got, data, "%s round %d" % (rel, rnd))
        rng = random.Random(7)
        order = list(spans)
        rng.shuffle(order)
        for rel, tname, b, e in order:          # tensors in random order, page cache dropped
            fd = os.open(m.p(rel), os.O_RDONLY)
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                q.assert_bytes_equal(os.pread(fd, e - b, b), files[rel][b:e], "%s %s" % (rel, tname))
            finally:
                os.close(fd)

        def reader(i):
            r = random.Random(500 + i)
            for _ in range(25):
                rel, tname, b, e = r.choice(spans)
                fd = os.open(m.p(rel), os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    got = os.pread(fd, e - b, b)
                finally:
                    os.close(fd)
                q.assert_bytes_equal(got, files[rel][b:e], "thread %d: %s %s" % (i, rel, tname))
        run_threads(8, reader)


def past_eof(name):
    src, spec, out, files = model(name)
    with q.mounted(src, spec) as m:
        for rel, data in files.items():
            size = len(data)
            fd = os.open(m.p(rel), os.O_RDONLY)
            try:
                assert os.pread(fd, 0, 0) == b""
                for off, n in ((size, 1), (size, 4096), (size + 1, 1), (size + 4095, 100),
                               (size + (64 << 20), 1 << 20)):
                    got = os.pread(fd, n, off)
                    assert got == b"", "%s: pread(%d, %d) past EOF returned %d bytes" % (
                        rel, n, off, len(got))
                tail = os.pread(fd, 1 << 20, max(0, size - 10))
                assert tail == data[-10:], "%s: read across EOF returned %r" % (rel, tail)
                os.lseek(fd, 0, os.SEEK_END)
                assert os.read(fd, 100) == b""
                assert os.lseek(fd, 0, os.SEEK_CUR) == size
            finally:
                os.close(fd)
            with open(m.p(rel), "rb") as f:
                f.seek(size + 12345)
                assert f.read() == b""


for _name in MODELS:
    q.add_test("%s/sizes_exact_and_stable" % _name, lambda n=_name: sizes(n))
    for _chunk in (4096, 1 << 20, None):
        q.add_test("%s/sequential_%s" % (_name, _chunk or "whole"),
                   lambda n=_name, c=_chunk: sequential(n, c))
    q.add_test("%s/random_reads" % _name, lambda n=_name: random_reads(n, 42))
    q.add_test("%s/o_direct_reads" % _name, lambda n=_name: direct_reads(n, 77))
    q.add_test("%s/mmap_access_read" % _name, lambda n=_name: mmap_reads(n, mmap.ACCESS_READ, 1))
    q.add_test("%s/mmap_access_copy" % _name, lambda n=_name: mmap_reads(n, mmap.ACCESS_COPY, 2))
    q.add_test("%s/threads_random_tensors" % _name, lambda n=_name: threads_random_tensors(n))
    q.add_test("%s/threads_same_tensor" % _name, lambda n=_name: threads_same_tensor(n))
    q.add_test("%s/past_eof" % _name, lambda n=_name: past_eof(n))
q.add_test("big/cache_mem_1M", lambda: small_cache("big"))
q.add_test("big/cache_mem_1M_o_direct", lambda: direct_reads("big", 78, opts=["cache_mem=1M"]))
q.add_test("big/o_direct_threads", lambda: direct_threads("big", []))
q.add_test("big/cache_mem_1M_o_direct_threads", lambda: direct_threads("big", ["cache_mem=1M"]))
q.add_test("big/cache_mem_3M_o_direct_threads", lambda: direct_threads("big", ["cache_mem=3M"]))
q.add_test("big/cache_mem_0_o_direct_threads", lambda: direct_threads("big", ["cache_mem=0"], 20))
q.add_test("big/cache_mem_1M_threads_same_tensor",
           lambda: threads_same_tensor("big", opts=["cache_mem=1M"]))


def _single_threaded():
    """-s (single-threaded FUSE loop) with 8 concurrent readers still serves identical bytes."""
    src, spec, out, files = model("big")
    spans = tensor_spans(files)
    with q.mounted(src, spec, extra=["-s"]) as m:
        def reader(i):
            rng = random.Random(2000 + i)
            for _ in range(10):
                rel, tname, b, e = rng.choice(spans)
                with open(m.p(rel), "rb") as f:
                    f.seek(b)
                    q.assert_bytes_equal(f.read(e - b), files[rel][b:e], "%s %s" % (rel, tname))
        run_threads(8, reader)


def _quarkref_module():
    import importlib
    import sys
    sys.path.insert(0, os.path.join(q.SOURCE_ROOT, "tests", "oracle"))
    try:
        return importlib.import_module("quarkref")
    finally:
        sys.path.pop(0)


def offsets_beyond_4gib(spec="int8"):
    """A sparse source whose 4.5 GiB passthrough tensor pushes the quantized tensors past 4 GiB
    in both the source and the view: exact size, header, tensors and sampled passthrough bytes
    (expected values from quarkref's plan and kernels, used as a library; no full export)."""
    import numpy as np
    ref = _quarkref_module()
    src = q.tmpdir("sparse")
    with open(os.path.join(src, "config.json"), "w") as f:
        f.write('{"model_type": "llama"}\n')
    rng = np.random.default_rng(9)
    huge_n = (4 << 30) // 4 + 123457               # I32 elements: 4 GiB + 482 KiB
    w1 = (rng.standard_normal([64, 128]) * 0.05).astype(np.float32)
    u = w1.view(np.uint32).astype(np.uint64)
    w1_raw = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2").tobytes()   # BF16
    w2_raw = (rng.standard_normal([96, 64]) * 0.05).astype("<f4").tobytes()     # F32
    huge_bytes = huge_n * 4
    header = {"__metadata__": {"format": "pt"},
              "model.huge_ids": {"dtype": "I32", "shape": [huge_n], "data_offsets": [0, huge_bytes]},
              "model.layers.0.mlp.up_proj.weight": {"dtype": "BF16", "shape": [64, 128],
                  "data_offsets": [huge_bytes, huge_bytes + len(w1_raw)]},
              "model.layers.0.mlp.down_proj.weight": {"dtype": "F32", "shape": [96, 64],
                  "data_offsets": [huge_bytes + len(w1_raw), huge_bytes + len(w1_raw) + len(w2_raw)]}}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    start = 8 + len(text)
    path = os.path.join(src, "model.safetensors")
    markers = [0, 4095, (1 << 31) - 3, (1 << 32) - 5, (1 << 32) + 7, huge_bytes - 9]
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(start + huge_bytes)             # a hole: reads as zeros, takes no space
        for i, off in enumerate(markers):
            f.seek(start + off)
            f.write(bytes((i * 37 + k) % 251 + 1 for k in range(9))[:huge_bytes - off])
        f.seek(start + huge_bytes)
        f.write(w1_raw + w2_raw)
    if os.stat(path).st_blocks * 512 > (256 << 20):
        os.unlink(path)
        raise q.Skip("the temporary filesystem does not keep files sparse")
    plan = ref.plan_view(src, spec)
    fplan = plan.safetensors["model.safetensors"]
    quant = ref.Quantizer(fplan)
    quant.compute_scales()
    outs = {t.name: t for t in fplan.outputs}
    hlen = len(fplan.header)
    w_out = outs["model.layers.0.mlp.up_proj.weight"]
    assert hlen + w_out.begin > (1 << 32), "the quantized weight does not land past 4 GiB"
    huge_out = outs["model.huge_ids"]
    src_huge = start                                # source offset of the huge tensor's byte 0
    with q.mounted(src, spec) as m:
        vp = m.p("model.safetensors")
        assert os.stat(vp).st_size == fplan.size, (os.stat(vp).st_size, fplan.size)
        with open(vp, "rb") as f, open(path, "rb") as s:
            fd = f.fileno()
            q.assert_bytes_equal(os.pread(fd, hlen, 0), fplan.header, "header")
            for t in fplan.outputs:
                if t is huge_out:
                    continue
                exp = b"".join(bytes(memoryview(c)) for c in quant.chunks(t))
                q.assert_bytes_equal(os.pread(fd, t.nbytes, hlen + t.begin), exp, t.name)
            # the huge passthrough tensor: markers, 2/4 GiB boundaries, random samples
            samples = [(mk - 100, 300) for mk in markers]
            samples += [((1 << 32) - hlen - 50, 100), ((1 << 31) - hlen - 50, 100),
                        (huge_bytes - 4096, 4096)]
            r = random.Random(4)
            samples += [(r.randrange(huge_bytes), r.randint(1, 200000)) for _ in range(30)]
            for off, n in samples:
                off = max(0, min(off, huge_bytes - 1))
                n = min(n, huge_bytes - off)
                got = os.pread(fd, n, hlen + huge_out.begin + off)
                exp = os.pread(s.fileno(), n, src_huge + off)
                q.assert_bytes_equal(got, exp, "huge_ids[%d:%d]" % (off, off + n))
            # a read across the passthrough/quantized boundary, past 4 GiB
            b = hlen + huge_out.end - 1000
            exp = os.pread(s.fileno(), 1000, src_huge + huge_bytes - 1000)
            for t in sorted(fplan.outputs, key=lambda t: t.begin):
                if t.begin >= huge_out.end and len(exp) < 2000:
                    exp += b"".join(bytes(memoryview(c)) for c in quant.chunks(t))
            q.assert_bytes_equal(os.pread(fd, 2000, b), exp[:2000], "across the boundary")
            # mmap a window past 4 GiB
            gran = mmap.ALLOCATIONGRANULARITY
            woff = (hlen + w_out.begin) // gran * gran
            length = hlen + w_out.end - woff
            mm = mmap.mmap(fd, length, access=mmap.ACCESS_COPY, offset=woff)
            try:
                exp = b"".join(bytes(memoryview(c)) for c in quant.chunks(w_out))
                a = hlen + w_out.begin - woff
                q.assert_bytes_equal(mm[a:a + w_out.nbytes], exp, "mmap past 4 GiB")
            finally:
                mm.close()
            assert os.pread(fd, 10, fplan.size) == b""


q.add_test("sparse/offsets_beyond_4GiB_int8", lambda: offsets_beyond_4gib("int8"))
q.add_test("sparse/offsets_beyond_4GiB_fp8_channel", lambda: offsets_beyond_4gib("fp8-channel"))
q.add_test("big/single_threaded_loop_threads", _single_threaded)

if __name__ == "__main__":
    q.main()
