"""Repeat loads: a remount on a complete disk cache knows the source without reading it (source
memos), a source changed in place is hashed again (never served stale), memos survive being
moved to another copy of a Hugging Face blob and are ignored when damaged, and the disk writer
drops entries rather than letting readers wait.

Expected bytes come from `quarkfs export --no-cache` of the same source (the demo model's int8
export is checked against tests/oracle/quarkref.py). "Not read" is checked two ways: the daemon's
source_reads counter, and, independently, the page cache: the source's pages are dropped
before the remount and, after the whole view was read, mincore(2) shows that the inner pages of
its quantized tensors were never brought back (kernel readahead from the unquantized tensors
next to them can reach a few MiB into them, so a margin of twice the device's readahead plus
1 MiB is left out at both ends).
"""

import ctypes
import ctypes.util
import errno
import hashlib
import mmap
import os
import shutil
import time

import qfstest as q

MEMO_MAGIC = b"QFSMEMO1"
WARNING = "quarkfs: warning:"


def cache_opts(cache, *more):
    """Mount options of these tests: the disk cache, without complete view files (a remount
    would serve those by passthrough, and no engine counter would move; test_view_files.py
    tests them)."""
    return ["cache_dir=" + cache, "view_files=off"] + list(more)


def view_of(src, spec="int8", fmt=None):
    """{rel: bytes} of the no-cache export of src."""
    out = q.export(src, spec, fmt=fmt)
    return {rel: q.read_bytes(os.path.join(out, rel)) for rel in q.tree_files(out)}


def read_all(m, files):
    got = {rel: q.read_bytes(m.p(rel)) for rel in sorted(files)}
    for rel in sorted(files):
        q.assert_bytes_equal(got[rel], files[rel], rel)


def n_quantized(src, spec="int8"):
    import json
    res = q.quarkfs("inspect", *(q.view_flags(spec) + [src, "--json"]))
    assert res.returncode == 0, res
    return [t for t in json.loads(res.stdout)["tensors"] if t["quantized"]]


def settled_copy(src):
    """A private copy, older than one second (a file changed within the last second is hashed
    but not remembered, srcid.h)."""
    c = q.copy_model(src)
    time.sleep(1.1)
    return c


def memos(cache):
    d = os.path.join(cache, "memo")
    return sorted(os.path.join(d, f) for f in os.listdir(d)) if os.path.isdir(d) else []


def check_memo(path):
    """A memo file: the entry header with magic QFSMEMO1, its key the file name, an empty weight
    part, and the checksum of its body (recomputed with libxxhash)."""
    data = q.read_bytes(path)
    magic, version, _, key, sl, wl, ssum, _ = q.CACHE_HEADER.unpack_from(data)
    assert magic == MEMO_MAGIC and version == 1 and wl == 0, path
    assert key.hex() + ".qfm" == os.path.basename(path), path
    assert len(data) == q.CACHE_HEADER.size + sl, path
    assert q.xxh3_64(data[q.CACHE_HEADER.size:]) == ssum, path
    assert os.stat(path).st_mode & 0o777 == 0o600, path


def status(m):
    return q.status_settled(m.path)


def fill(src, files, cache, spec="int8"):
    """A mount that reads the whole view on cache; its status. The memos are written when it
    unmounts (at the latest)."""
    with q.mounted(src, spec, opts=cache_opts(cache)) as m:
        read_all(m, files)
        return status(m)


# --- mincore ---------------------------------------------------------------------------------

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
PAGE = mmap.PAGESIZE


def resident_pages(path, begin, end):
    """How many pages of path in [begin, end) are in the page cache (mincore)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        assert addr not in (None, ctypes.c_void_p(-1).value), os.strerror(ctypes.get_errno())
        try:
            vec = ctypes.create_string_buffer((size + PAGE - 1) // PAGE)
            assert _libc.mincore(addr, size, vec) == 0, os.strerror(ctypes.get_errno())
            return sum(b & 1 for b in vec.raw[begin // PAGE:(end + PAGE - 1) // PAGE])
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)


def drop_pages(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def readahead_bytes(path):
    """The readahead of the device holding path (bytes), 128 KiB if unknown."""
    dev = os.stat(path).st_dev
    try:
        with open("/sys/dev/block/%d:%d/queue/read_ahead_kb" % (os.major(dev), os.minor(dev))) as f:
            return int(f.read()) * 1024
    except OSError:
        pass
    try:   # a partition: its disk's queue
        with open("/sys/dev/block/%d:%d/../queue/read_ahead_kb" % (os.major(dev),
                                                                   os.minor(dev))) as f:
            return int(f.read()) * 1024
    except OSError:
        return 128 << 10


# --- tests -----------------------------------------------------------------------------------

@q.test
def remount_reads_no_source():
    """First mount: every quantized tensor is hashed (memo_rehashes) and written; a memo per
    shard appears. Remount on that cache: every byte right, nothing quantized, every key from
    the memo (memo_hits), source_reads 0; and the inner pages of the quantized tensors, dropped
    from the page cache before the remount, are still not resident after the whole view was
    read; with the memos removed, the same check finds those pages read. The 1-layer llama
    preset: gate/up/down are 86 MiB of bf16 each."""
    src = settled_copy(q.gen_model("llama", "bf16", "--layers", "1"))
    files = view_of(src)
    qt = n_quantized(src)
    n = len(qt)
    cache = q.tmpdir("cache")
    st = fill(src, files, cache)
    assert st["tensors_quantized"] == n and st["memo_rehashes"] == n, st
    assert st["memo_hits"] == 0 and st["source_reads"] >= n, st
    assert st["cache_queue"]["written"] == n == st["disk_writes"], st
    assert st["cache_queue"]["dropped"] == 0 and st["cache_queue"]["queued"] == 0, st
    for k in ("queued", "bytes", "written", "dropped"):
        assert type(st["cache_queue"][k]) is int, st
    shards = q.model_files(src)
    ms = memos(cache)
    with_weights = {t["file"] for t in qt}        # one memo per shard with quantized tensors
    assert len(ms) == len(with_weights), (ms, with_weights)
    for p in ms:
        check_memo(p)
    # the pages to watch: each big quantized tensor minus the readahead margins
    margin = 2 * readahead_bytes(src) + (1 << 20)
    watch = []
    for rel in shards:
        path = os.path.join(src, rel)
        for t in qt:
            if t["file"] == rel:
                b, e = q.tensor_ranges(path)[t["name"]]
                if e - b > 3 * margin:
                    watch.append((path, t["name"], b + margin, e - margin))
    assert len(watch) >= 3, "no tensor is large enough to watch: %s" % watch
    for rel in shards:
        drop_pages(os.path.join(src, rel))
    still = sum(resident_pages(p, b, e) for p, _, b, e in watch)
    if still:
        raise q.Skip("POSIX_FADV_DONTNEED left %d pages of the source resident: the page cache "
                     "cannot tell here whether they were read" % still)
    with q.mounted(src, opts=cache_opts(cache)) as m:
        read_all(m, files)
        st = status(m)
    assert st["tensors_quantized"] == 0 and st["disk_writes"] == 0, st
    assert st["memo_hits"] >= n and st["memo_rehashes"] == 0, st
    assert st["source_reads"] == 0, st
    assert st["disk_hits"] >= n, st
    read = {name: resident_pages(p, b, e) for p, name, b, e in watch}
    print("    %d tensors, resident inner pages after the remount: %s" % (n, read))
    assert not any(read.values()), "the remount read source pages of: %s" % read
    # The same check sees a read: without the memos the keys need the source hashed.
    for p in memos(cache):
        os.unlink(p)
    for rel in shards:
        drop_pages(os.path.join(src, rel))
    with q.mounted(src, opts=cache_opts(cache)) as m:
        read_all(m, files)
        st = status(m)
    assert st["memo_rehashes"] == n and st["tensors_quantized"] == 0, st
    read = {name: resident_pages(p, b, e) for p, name, b, e in watch}
    print("    without the memos: %s" % read)
    assert all(read.values()), "hashing the source left no page resident: %s" % read


def change_in_place(path, name, keep_mtime):
    """Negate every bf16 element of tensor name in place (same size); optionally put the old
    mtime back, so that only the change time tells."""
    sb = os.stat(path)
    q.negate_tensor(path, name)
    if keep_mtime:
        os.utime(path, ns=(sb.st_atime_ns, sb.st_mtime_ns))
        assert os.stat(path).st_mtime_ns == sb.st_mtime_ns


def changed_between_mounts(keep_mtime):
    """A shard changed in place between two mounts on one cache: the remount serves the new
    bytes (the export of the changed source), rehashes every tensor of that shard, quantizes the
    changed tensor alone, and takes the other shard's keys from its memo."""
    src = settled_copy(q.gen_model("demo", "bf16"))
    files = view_of(src)
    qt = n_quantized(src)
    cache = q.tmpdir("cache")
    fill(src, files, cache)
    shard, other = q.model_files(src)
    in_shard = [t for t in qt if t["file"] == shard]
    name = in_shard[0]["name"]
    change_in_place(os.path.join(src, shard), name, keep_mtime)
    time.sleep(1.1)
    new_files = view_of(src)
    assert new_files[shard] != files[shard]
    with q.mounted(src, opts=cache_opts(cache)) as m:
        read_all(m, new_files)
        st = status(m)
    assert st["tensors_quantized"] == 1, st
    assert st["memo_rehashes"] == len(in_shard), (len(in_shard), st)
    assert st["memo_hits"] >= len(qt) - len(in_shard), st


q.add_test("changed_in_place_is_rehashed", lambda: changed_between_mounts(False))
q.add_test("changed_in_place_mtime_restored_is_rehashed", lambda: changed_between_mounts(True))


@q.test
def changed_during_mount_mtime_restored_is_rehashed():
    """A mount whose memo of a shard is loaded (one tensor read) sees that shard edited in
    place with its mtime put back: the edited tensor is hashed again (its change time moved),
    never looked up in the memo, so it is served from its new bytes, as the export of the
    edited source has them, not from the entry of its old bytes. view_files=off: the engine
    serves every byte."""
    src = settled_copy(q.gen_model("demo", "bf16", "--hidden", "1024", "--intermediate", "2816"))
    files = view_of(src)
    qt = n_quantized(src)
    cache = q.tmpdir("cache")
    fill(src, files, cache)
    shard = q.model_files(src)[0]
    in_shard = [t["name"] for t in qt if t["file"] == shard]
    assert len(in_shard) >= 3, in_shard   # the last: not the one a reader's prefetch makes
    # cache_mem=4M and 2.75 MiB weights: no room to prefetch past the one read (a prefetched
    # weight was made before the edit, a snapshot of the old bytes)
    with q.mounted(src, opts=cache_opts(cache, "cache_mem=4M")) as m:
        b, e = q.tensor_ranges(m.p(shard))[in_shard[0]]
        with open(m.p(shard), "rb") as f:         # loads the shard's memo (a memo hit)
            f.seek(b)
            assert f.read(e - b) == files[shard][b:e]
        change_in_place(os.path.join(src, shard), in_shard[-1], keep_mtime=True)
        b1, e1 = q.tensor_ranges(m.p(shard))[in_shard[-1]]
        with open(m.p(shard), "rb") as f:
            f.seek(b1)
            got = f.read(e1 - b1)
        print("    ", {k: v for k, v in status(m).items() if k in ("tensors_quantized", "memo_hits",
              "memo_rehashes", "disk_hits", "memory_hits")})
    want = view_of(src)[shard][b1:e1]
    assert want != files[shard][b1:e1], "the edit did not change the quantized bytes"
    assert got == want, "the edited tensor was served from the entry of its old bytes"


def hf_cache(src, hub):
    """A Hugging Face cache repository made of src: blobs/<sha256 of each file> and
    snapshots/rev/<name> -> ../../blobs/<sha256>. Returns the snapshot path."""
    repo = os.path.join(hub, "models--org--demo")
    blobs, snap = os.path.join(repo, "blobs"), os.path.join(repo, "snapshots", "rev")
    os.makedirs(blobs)
    os.makedirs(snap)
    for rel in q.tree_files(src):
        sha = hashlib.sha256(q.read_bytes(os.path.join(src, rel))).hexdigest()
        shutil.copyfile(os.path.join(src, rel), os.path.join(blobs, sha))
        os.symlink(os.path.join("..", "..", "blobs", sha), os.path.join(snap, rel))
    return snap


@q.test
def hf_blob_memo_holds_for_another_copy():
    """A snapshot whose shards are blobs: the memos are named after the blobs' sha256, so a
    copy of the whole repository elsewhere (new inodes, as on another machine sharing the cache
    directory) takes every key from them and reads no source; the bytes are the export's."""
    src = q.gen_model("demo", "bf16")
    files = view_of(src)
    n = len(n_quantized(src))
    snap = hf_cache(src, q.tmpdir("hub"))
    time.sleep(1.1)
    cache = q.tmpdir("cache")
    fill(snap, files, cache)
    before = memos(cache)
    assert len(before) == len({t["file"] for t in n_quantized(src)}), before
    other = q.tmpdir("hub2")
    shutil.copytree(os.path.dirname(os.path.dirname(os.path.dirname(snap))), other,
                    symlinks=True, dirs_exist_ok=True)
    snap2 = os.path.join(other, "models--org--demo", "snapshots", "rev")
    time.sleep(1.1)
    with q.mounted(snap2, opts=cache_opts(cache)) as m:
        read_all(m, files)
        st = status(m)
    assert st["memo_hits"] >= n and st["memo_rehashes"] == 0 and st["source_reads"] == 0, st
    assert st["tensors_quantized"] == 0, st
    assert memos(cache) == before, "a copy of the blobs made new memos"


@q.test
def damaged_memo_ignored_and_rebuilt():
    """Every memo flipped, cut, or replaced by a symlink to a valid one: the remount serves the
    right bytes, rehashes every tensor (the memos are not used), quantizes nothing (the entries
    are intact), logs no warning, and leaves valid memos that the next mount uses."""
    src = settled_copy(q.gen_model("demo", "bf16"))
    files = view_of(src)
    n = len(n_quantized(src))
    cache = q.tmpdir("cache")
    fill(src, files, cache)
    good = {p: q.read_bytes(p) for p in memos(cache)}
    spare = q.tmppath("spare")
    for how in ("flip", "cut", "symlink"):
        for i, p in enumerate(sorted(good)):
            if how == "flip":
                data = bytearray(good[p])
                data[-5] ^= 1
                open(p, "wb").write(data)
            elif how == "cut":
                open(p, "wb").write(good[p][:-8])
            else:
                open(spare + str(i), "wb").write(good[p])
                os.chmod(spare + str(i), 0o600)
                os.unlink(p)
                os.symlink(spare + str(i), p)
        with q.mounted(src, opts=cache_opts(cache)) as m:
            read_all(m, files)
            st = status(m)
            log = m.log()
        assert st["memo_rehashes"] == n and st["memo_hits"] == 0, (how, st)
        assert st["tensors_quantized"] == 0, (how, st)
        assert not [l for l in log.splitlines() if WARNING in l], log
        for p in memos(cache):
            assert not os.path.islink(p), p
            check_memo(p)
        with q.mounted(src, opts=cache_opts(cache)) as m:
            read_all(m, files)
            st = status(m)
        assert st["memo_hits"] >= n and st["source_reads"] == 0, (how, st)


@q.test
def two_specs_share_memos_not_entries():
    """int8 and fp8 mounted at once on one cache directory: each serves its own export's bytes.
    The memo is the source's (spec-independent): the fp8 mount, after an int8 fill, takes its
    keys from it but finds no fp8 entry, so it reads the source to quantize every tensor."""
    src = settled_copy(q.gen_model("demo", "bf16"))
    files8, filesf = view_of(src), view_of(src, "fp8")
    n = len(n_quantized(src))
    cache = q.tmpdir("cache")
    fill(src, files8, cache)
    with q.mounted(src, "int8", opts=cache_opts(cache)) as a, \
            q.mounted(src, "fp8", opts=cache_opts(cache)) as b:
        read_all(b, filesf)
        read_all(a, files8)
        sa, sb = status(a), status(b)
    assert sa["tensors_quantized"] == 0 and sa["source_reads"] == 0, sa
    assert sb["tensors_quantized"] == n and sb["memo_hits"] >= n, sb
    assert sb["disk_writes"] == n, sb
    with q.mounted(src, "fp8", opts=cache_opts(cache)) as m:
        read_all(m, filesf)
        st = status(m)
    assert st["tensors_quantized"] == 0 and st["source_reads"] == 0, st


@q.test
def writer_drops_rather_than_waits():
    """cache_mem=4M: the writer's queue holds at most half of it (2 MiB), and every int8
    weight of this model is 2.75 MiB: one is queued only when the queue is empty, the others
    are dropped at once, never waited for. The cache directory is on a disk whose every write
    request takes 100 ms (slowfs; an entry is written in 128 KiB requests), so the writer is
    still on its first entry when the next weights are served: they are dropped, and no
    reader waits for the disk. Every byte is right; written + dropped == quantized; every
    entry on disk is complete; a remount (on the same directory, not slowed) serves the same
    bytes, quantizing only what was dropped."""
    src = settled_copy(q.gen_model("demo", "bf16", "--hidden", "1024", "--intermediate", "2816"))
    files = view_of(src)
    n = len(n_quantized(src))
    with q.slow_dir(100) as (slow, cache):
        with q.mounted(src, opts=cache_opts(slow, "cache_mem=4M")) as m:
            read_all(m, files)
            st = status(m)
    cq = st["cache_queue"]
    print("    %d tensors: %d written, %d dropped" % (n, cq["written"], cq["dropped"]))
    assert cq["dropped"] > 0, st
    assert cq["written"] + cq["dropped"] == st["tensors_quantized"], st
    entries = q.cache_entries(cache)
    assert len(entries) == cq["written"], (len(entries), st)
    for p in entries:
        data = q.read_bytes(p)
        _, _, _, key, sl, wl, ssum, wsum = q.CACHE_HEADER.unpack_from(data)
        assert len(data) == q.cache_weight_offset(sl, wl) + wl, p
        assert q.xxh3_64(data[q.cache_weight_offset(sl, wl):]) == wsum, p
    with q.mounted(src, opts=cache_opts(cache)) as m:
        read_all(m, files)
        st2 = status(m)
    assert st2["tensors_quantized"] == n - len(entries), (len(entries), st2)


@q.test
def failed_memo_write_is_tried_again():
    """The cache's disk fails the memo writes only (EIO for files whose name has ".m.", the
    memos' temporary names: slowfs fail_match), then recovers. The failure pauses the cache's
    writes (10 s, WRITE_RETRY_SECONDS); the memo's hashes stay to be written, and are written
    once the disk takes writes again, here at unmount after the pause: a remount takes every
    key from the memos and hashes nothing. (A memo given up after one failed write would cost
    the next mount a read and hash of the whole source.)"""
    src = settled_copy(q.gen_model("demo", "bf16"))
    files = view_of(src)
    n = len(n_quantized(src))
    flag = q.tmppath("memo-writes-fail")
    open(flag, "w").close()
    with q.slow_dir(0, fail_match=".m.", fail_flag=flag) as (slow, cache):
        with q.mounted(src, opts=cache_opts(slow)) as m:
            read_all(m, files)
            deadline = time.monotonic() + 20
            while "Input/output error" not in m.log():
                assert time.monotonic() < deadline, "no failed memo write: " + m.log()
                time.sleep(0.1)
            assert not memos(cache), memos(cache)
            os.unlink(flag)
            time.sleep(10.5)   # the cache's write pause after a failure
    written = memos(cache)
    assert written, "no memo written after the disk recovered"
    for p in written:
        check_memo(p)
    with q.mounted(src, opts=cache_opts(cache)) as m:
        read_all(m, files)
        st = status(m)
    assert st["memo_rehashes"] == 0 and st["memo_hits"] >= n, st


@q.test
def demo_export_matches_reference():
    """The expected bytes of the tests above: the demo int8 export equals
    tests/oracle/quarkref.py."""
    src = q.gen_model("demo", "bf16")
    out = q.export(src, "int8")
    q.quarkref_check(src, out, "int8")


if __name__ == "__main__":
    q.main()
