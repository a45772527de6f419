"""Persistent disk cache, `quarkfs warm`, `quarkfs status`, the source-change policy and
bounded memory.

Expected bytes always come from `quarkfs export --no-cache` of the same source and spec (the
demo model's export is also checked against tests/oracle/quarkref.py): whatever the cache holds, a
mount must serve exactly those bytes.

Cache entries are checked here independently of quarkfs: the header of include/quarkfs/
diskcache.h (little-endian "QFSCACHE", u32 version 1, u32 reserved, the 16-byte key, u64
scales_len, weight_len, XXH3-64 of the scales part, XXH3-64 of the weight part; then the scales
part, then the weight part) is parsed in Python, the file name must be the key in hex under its
first two hex digits, the file size must be 64 + both lengths, and both checksums are recomputed
with libxxhash through ctypes (the library quarkfs links; a build dependency).

Counter checks read the view with O_DIRECT in 128 KiB pieces, in file order (every request
reaches the daemon alone; no page cache), so the same reads give the same lookups. The checks
rely on what the contract says, not on how many lookups the engine makes per tensor: nothing
found on disk is quantized again (tensors_quantized, disk_writes), every tensor is found at
least once (disk_hits >= tensors), and a bad entry is never counted as a hit (fewer hits than
the same reads on an intact copy of the cache).

Every test mounts with a cache directory of its own under the run's temporary root (never the
default /var/cache/quarkfs) or with cache=off. Bind mounts and tmpfs mounts made for a test are
always unmounted in a finally clause.

A check that shows a known, reported bug does not fail the run: the test ends with a
"SKIP ... KNOWN BUG" line instead, after every other assertion of that test has passed; set
QUARKFS_TEST_STRICT=1 to make those fail.
"""

import contextlib
import errno
import hashlib
import json
import mmap
import os
import re
import random
import shutil
import signal
import struct
import threading
import time

import qfstest as q

CHUNK = 128 << 10                     # O_DIRECT read size: one FUSE request per read
HEADER = q.CACHE_HEADER  # the entry header (64 bytes)
STRICT = os.environ.get("QUARKFS_TEST_STRICT", "1") == "1"   # on by default here
STATUS_KEYS = ("tensors_quantized", "memory_hits", "disk_hits", "bytes_quantized",
               "bytes_served", "seconds_quantizing", "scales_computed", "disk_writes",
               "evictions", "disk_cache", "warm", "spec", "format", "source")
WARNING = "quarkfs: warning:"


def known_bug(msg):
    """End a test that showed a known bug: a visible SKIP, or a failure with STRICT."""
    if STRICT:
        raise AssertionError("KNOWN BUG: " + msg)
    raise q.Skip("KNOWN BUG (QUARKFS_TEST_STRICT=1 makes it fail): " + msg)


# ---------------------------------------------------------------------------------------------
# Cache entries, read back without quarkfs
# ---------------------------------------------------------------------------------------------

xxh3_64 = q.xxh3_64
entry_paths = q.cache_entries


def check_entry(path):
    """Asserts that path is a complete, self-consistent entry; returns (scales, weight)."""
    data = q.read_bytes(path)
    assert len(data) >= HEADER.size, "%s: %d bytes, shorter than the header" % (path, len(data))
    magic, version, _, key, sl, wl, ssum, wsum = HEADER.unpack_from(data)
    name = os.path.basename(path)[:-4]
    assert magic == b"QFSCACHE", "%s: magic %r" % (path, magic)
    assert version == q.CACHE_ENTRY_VERSION, "%s: version %d" % (path, version)
    assert key.hex() == name, "%s: header key %s" % (path, key.hex())
    assert os.path.basename(os.path.dirname(path)) == name[:2], "%s: wrong fan-out dir" % path
    w0 = q.cache_weight_offset(sl, wl)
    assert len(data) == w0 + wl, "%s: %d bytes, header says %d + %d + %d (weight at %d)" % (
        path, len(data), HEADER.size, sl, wl, w0)
    assert not any(data[HEADER.size + sl:w0]), "%s: padding not zero" % path
    scales, weight = data[HEADER.size:HEADER.size + sl], data[w0:]
    assert xxh3_64(scales) == ssum, "%s: scales checksum" % path
    assert xxh3_64(weight) == wsum, "%s: weight checksum" % path
    return scales, weight


def check_cache(cache, n=None):
    """Every entry valid, nothing left in tmp/; n entries if given. {path: sha256}."""
    out = {}
    for p in entry_paths(cache):
        scales, weight = check_entry(p)
        out[p] = hashlib.sha256(scales + weight).hexdigest()
    if n is not None:
        assert len(out) == n, "%s holds %d entries, expected %d" % (cache, len(out), n)
    left = os.listdir(os.path.join(cache, "tmp"))
    assert not left, "temporary files left in %s/tmp: %s" % (cache, left)
    return out


def entry_of(cache, files, name):
    """The entry file of tensor name: the one whose weight part is that tensor's bytes in the
    export (int8 quark: X.weight), scales part X.weight_scale then X.weight_zero_point."""
    for rel, data in files.items():
        if rel.endswith(".safetensors"):
            r = view_ranges(data)
            if name in r:
                break
    else:
        raise AssertionError("%s is not in the view" % name)
    want_w = data[r[name][0]:r[name][1]]
    base = name[:-len(".weight")]
    want_s = b"".join(data[r[k][0]:r[k][1]] for k in (base + ".weight_scale",
                                                        base + ".weight_zero_point") if k in r)
    found = [p for p in entry_paths(cache) if check_entry(p) == (want_s, want_w)]
    assert len(found) == 1, "%d entries hold %s (scales %r)" % (len(found), name, want_s)
    return found[0]


# ---------------------------------------------------------------------------------------------
# Mounts, views, counters
# ---------------------------------------------------------------------------------------------

def view_ranges(data):
    """{name: (begin, end)} file offsets of every tensor in a safetensors file's bytes."""
    header, _, start = q.st_header_of(data)
    return {k: (start + v["data_offsets"][0], start + v["data_offsets"][1])
            for k, v in header.items()}


def status(m):
    """`quarkfs status MNT --json` of a live mount, parsed, once its disk writer has nothing
    left to write (entries go to disk in the background: up to 30 s)."""
    return q.status_settled(m.path)


def expect(st, what, **want):
    """Counters of status st equal want."""
    bad = {k: (st.get(k), v) for k, v in want.items() if st.get(k) != v}
    assert not bad, "%s: counters (got, expected): %s\nstatus: %s" % (what, bad, st)


def read_direct(path, chunk=CHUNK):
    """A whole file read with O_DIRECT in chunk pieces (each one a request to the daemon)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    parts = []
    try:
        while True:
            b = os.read(fd, chunk)
            if not b:
                break
            parts.append(b)
    finally:
        os.close(fd)
    return b"".join(parts)


def read_view(m, files, direct=True):
    """{rel: bytes} of every file of the view, read in sorted order."""
    return {rel: read_direct(m.p(rel)) if direct else q.read_bytes(m.p(rel))
            for rel in sorted(files)}


def assert_view(got, files, what):
    """Every file of the view equals the expected bytes."""
    assert sorted(got) == sorted(files), "%s: files %s, expected %s" % (what, sorted(got),
                                                                         sorted(files))
    for rel in sorted(files):
        q.assert_bytes_equal(got[rel], files[rel], "%s: %s" % (what, rel))


def quantized_tensors(src, spec="int8", fmt=None):
    """The quantized tensors of the view (quarkfs inspect --json rows)."""
    res = q.quarkfs("inspect", *(q.view_flags(spec, fmt=fmt) + [src, "--json"]))
    assert res.returncode == 0, res
    return [t for t in json.loads(res.stdout)["tensors"] if t["quantized"]]


def warnings(log):
    """The warning lines of a foreground log (each line starts with its time)."""
    return [l for l in log.splitlines() if WARNING in l]


def cache_opt(cache):
    """The entries are what these tests check: complete view files (test_view_files.py), which
    would serve later opens without reaching them, stay off."""
    return "cache_dir=%s,view_files=off" % cache


_demo = {}


def demo(spec="int8", fmt=None):
    """(src, {rel: expected bytes}, quantized tensors) of the demo model (14 quantized tensors
    in two shards, about 2 MB of view)."""
    key = (spec, fmt)
    if key not in _demo:
        src = q.gen_model("demo", "bf16")
        out = q.export(src, spec, fmt=fmt)
        if key == ("int8", None):
            q.quarkref_check(src, out, spec)
        files = {rel: q.read_bytes(os.path.join(out, rel)) for rel in q.tree_files(out)}
        _demo[key] = (src, files, quantized_tensors(src, spec, fmt))
    return _demo[key]


def files_of(src, spec="int8", fmt=None):
    """{rel: bytes} of the no-cache export of src."""
    out = q.export(src, spec, fmt=fmt)
    return {rel: q.read_bytes(os.path.join(out, rel)) for rel in q.tree_files(out)}


def patch_tensor(src, name, element, raw):
    """Overwrite element `element` of tensor name in the (private) source copy with raw."""
    for rel in q.model_files(src):
        path = os.path.join(src, rel)
        r = q.tensor_ranges(path)
        if name in r:
            with open(path, "r+b") as f:
                f.seek(r[name][0] + element * len(raw))
                f.write(raw)
            return rel
    raise AssertionError("%s not in %s" % (name, src))


def populated_cache(src, files):
    """A fresh cache directory filled by a mount that read the whole view."""
    cache = q.tmpdir("cache")
    with q.mounted(src, opts=[cache_opt(cache)]) as m:
        assert_view(read_view(m, files), files, "filling the cache")
    return cache


def run_cmd(*args):
    res = q.run(list(args), timeout=60)
    assert res.returncode == 0, res
    return res


def umount_quietly(path):
    """Unmount a bind/tmpfs mount made by a test (lazily if busy)."""
    for _ in range(20):
        if not q.is_mounted(path):
            return
        if q.run(["umount", path], timeout=30).returncode == 0:
            return
        time.sleep(0.1)
    q.run(["umount", "-l", path], timeout=30)


@contextlib.contextmanager
def bind_mount(src, ro=True):
    """src bound on a fresh directory, read-only if ro; unmounted in every path."""
    target = q.tmpdir("bind")
    run_cmd("mount", "--bind", src, target)
    try:
        if ro:
            run_cmd("mount", "-o", "remount,bind,ro", target)
        yield target
    finally:
        umount_quietly(target)
        with contextlib.suppress(OSError):
            os.rmdir(target)


@contextlib.contextmanager
def tmpfs(size):
    """A tmpfs of this size on a fresh directory; unmounted in every path."""
    target = q.tmpdir("tmpfs")
    run_cmd("mount", "-t", "tmpfs", "-o", "size=%s" % size, "tmpfs", target)
    try:
        yield target
    finally:
        umount_quietly(target)
        with contextlib.suppress(OSError):
            os.rmdir(target)


# ---------------------------------------------------------------------------------------------
# (1) remount on a warm disk cache
# ---------------------------------------------------------------------------------------------

@q.test
def remount_on_warm_disk_cache():
    """First mount quantizes and writes every tensor; a remount on the same directory
    quantizes nothing, finds every tensor on disk and serves the same bytes as the no-cache
    export; the entries are not rewritten."""
    src, files, qt = demo()
    n = len(qt)
    cache = q.tmpdir("cache")
    with q.mounted(src, opts=[cache_opt(cache)]) as m:
        assert_view(read_view(m, files), files, "first mount")
        st = status(m)
    expect(st, "first mount", tensors_quantized=n, disk_writes=n, disk_hits=0, disk_cache=True,
           bytes_quantized=sum(t["src_bytes"] for t in qt))
    entries = check_cache(cache, n)
    with q.mounted(src, opts=[cache_opt(cache)]) as m:
        assert_view(read_view(m, files), files, "remount")
        st = status(m)
        log = m.log()
    expect(st, "remount", tensors_quantized=0, bytes_quantized=0, scales_computed=0,
           disk_writes=0, disk_cache=True)
    assert st["disk_hits"] >= n, st
    assert st["bytes_served"] == sum(len(b) for b in files.values()), st
    assert check_cache(cache, n) == entries, "the remount changed the entries"
    assert not warnings(log), log


# ---------------------------------------------------------------------------------------------
# (2) quarkfs warm
# ---------------------------------------------------------------------------------------------

@q.test
def warm_fills_the_disk_cache():
    """`quarkfs warm` waits, prints its progress, and leaves every tensor on disk (status:
    warm counters at the total, disk_writes == tensors); reads of the same mount then come
    from disk, and a new mount quantizes nothing."""
    src, files, qt = demo()
    n, src_bytes = len(qt), sum(t["src_bytes"] for t in qt)
    cache = q.tmpdir("cache")
    with q.mounted(src, opts=[cache_opt(cache)]) as m:
        res = q.quarkfs("warm", m.path)
        assert res.returncode == 0, res
        assert "%d/%d tensors" % (n, n) in res.stderr, res
        st = status(m)
        assert st["warm"] == {"tensors": n, "tensors_done": n, "bytes": src_bytes,
                              "bytes_done": src_bytes}, st
        expect(st, "after warm", tensors_quantized=n, disk_writes=n, bytes_quantized=src_bytes,
               disk_hits=0)
        check_cache(cache, n)
        assert_view(read_view(m, files), files, "same mount after warm")
        st = status(m)
        # warm keeps the weights on disk only: each is read back, never recomputed
        expect(st, "read after warm", tensors_quantized=n, disk_writes=n)
        assert st["disk_hits"] >= n, st
    with q.mounted(src, opts=[cache_opt(cache)]) as m:
        assert_view(read_view(m, files, direct=False), files, "new mount")
        st = status(m)
    expect(st, "new mount after warm", tensors_quantized=0, scales_computed=0, disk_writes=0)
    assert st["disk_hits"] >= n, st
    check_cache(cache, n)


# ---------------------------------------------------------------------------------------------
# (3) content keys
# ---------------------------------------------------------------------------------------------

@q.test
def identical_source_elsewhere_shares_entries():
    """Keys are content: a copy of the source in another directory (new paths, new mtimes)
    hits every entry written by `quarkfs export --cache-dir` of the original ("two machines
    with identical sources share one directory")."""
    src, files, qt = demo()
    n = len(qt)
    cache = q.tmpdir("cache")
    out = q.export(src, "int8", extra=["--cache-dir", cache])
    assert_view({rel: q.read_bytes(os.path.join(out, rel)) for rel in q.tree_files(out)},
                files, "export --cache-dir")
    entries = check_cache(cache, n)
    copy = q.copy_model(src)
    with q.mounted(copy, opts=[cache_opt(cache)]) as m:
        assert_view(read_view(m, files), files, "copy of the source")
        st = status(m)
    expect(st, "copy", tensors_quantized=0, scales_computed=0, disk_writes=0)
    assert st["disk_hits"] >= n, st
    assert check_cache(cache, n) == entries


@q.test
def changed_tensor_recomputes_only_itself():
    """A copy of the source with one element of one weight changed: that tensor alone is
    quantized and written (a new entry); the other 13 come from the cache."""
    src, files, qt = demo()
    n = len(qt)
    cache = populated_cache(src, files)
    entries = check_cache(cache, n)
    mod = q.copy_model(src)
    patch_tensor(mod, "model.layers.1.self_attn.q_proj.weight", 0, b"\x80\x3e")   # bf16 0.25
    mod_files = files_of(mod)
    assert mod_files != files
    with q.mounted(mod, opts=[cache_opt(cache)]) as m:
        assert_view(read_view(m, mod_files), mod_files, "changed copy")
        st = status(m)
    expect(st, "one tensor changed", tensors_quantized=1, disk_writes=1)
    assert st["disk_hits"] >= n - 1, st
    after = check_cache(cache, n + 1)
    assert set(entries) < set(after) and all(after[p] == h for p, h in entries.items())


@q.test
def other_spec_or_format_never_reuses_entries():
    """The same source under another spec (int8-channel), or the same spec in another format
    (fp8 in quark vs fp8 format): nothing found on disk, everything quantized and written."""
    src, files, qt = demo()
    n = len(qt)
    cache = populated_cache(src, files)
    total = n
    for spec, fmt in (("int8-channel", None), ("fp8", None), ("fp8", "fp8")):
        _, sfiles, sqt = demo(spec, fmt)
        with q.mounted(src, spec, fmt=fmt, opts=[cache_opt(cache)]) as m:
            assert_view(read_view(m, sfiles), sfiles, "%s/%s" % (spec, fmt))
            st = status(m)
        expect(st, "%s/%s" % (spec, fmt), tensors_quantized=len(sqt), disk_writes=len(sqt),
               disk_hits=0)
        total += len(sqt)
        check_cache(cache, total)


# ---------------------------------------------------------------------------------------------
# (4) bad entries
# ---------------------------------------------------------------------------------------------

TARGET = "model.layers.0.mlp.gate_proj.weight"
DONOR = "model.layers.1.mlp.gate_proj.weight"     # same shape: same lengths, another key
_good = {}


def mount_and_read(src, files, cache, what):
    """Mount on cache, read the whole view (O_DIRECT, in order), check it; (status, log)."""
    with q.mounted(src, opts=[cache_opt(cache)]) as m:
        assert_view(read_view(m, files), files, what)
        return status(m), m.log()


def good_cache():
    """(cache dir filled from the demo model, entry of TARGET, entry of DONOR, disk_hits of a
    mount that reads the whole view on an intact copy), made once; tests work on copies."""
    if not _good:
        src, files, qt = demo()
        cache = populated_cache(src, files)
        copy = q.tmppath("cache")
        shutil.copytree(cache, copy)
        st, _ = mount_and_read(src, files, copy, "intact cache")
        expect(st, "intact cache", tensors_quantized=0, disk_writes=0)
        assert st["disk_hits"] >= len(qt), st
        _good["v"] = (cache, entry_of(cache, files, TARGET), entry_of(cache, files, DONOR),
                      st["disk_hits"])
    return _good["v"]


def _flip(offset_fn):
    def damage(path, donor):
        with open(path, "r+b") as f:
            data = f.read()
            off = offset_fn(data)
            f.seek(off)
            f.write(bytes([data[off] ^ 0x01]))
    return damage


def _lens(data):
    return HEADER.unpack_from(data)[4:6]


def _truncate(size_fn):
    def damage(path, donor):
        os.truncate(path, size_fn(q.read_bytes(path)))
    return damage


def _foreign(path, donor):
    shutil.copyfile(donor, path)


def _garbage_header(path, donor):
    with open(path, "r+b") as f:
        f.write(random.Random(3).randbytes(HEADER.size))


def _future_version(path, donor):
    with open(path, "r+b") as f:
        f.seek(8)
        f.write(struct.pack("<I", q.CACHE_ENTRY_VERSION + 1))


BAD_ENTRIES = {
    "weight_byte_flipped": _flip(lambda d: len(d) - 1000),
    "scales_byte_flipped": _flip(lambda d: HEADER.size),
    "truncated_in_weight": _truncate(lambda d: q.cache_weight_offset(*_lens(d)) + _lens(d)[1] // 2),
    "truncated_in_header": _truncate(lambda d: 40),
    "zero_length": _truncate(lambda d: 0),
    "garbage_header": _garbage_header,
    "future_version": _future_version,
    "foreign_entry": _foreign,          # another key's (valid) entry under this key's name
}


def bad_entry(case):
    """One entry damaged in a copy of a full cache: a mount reading everything serves the
    export's bytes, quantizes and writes that tensor alone, counts fewer disk hits than the
    same reads on the intact cache (the bad entry is not a hit; at most its two lookups, a
    scales-only one and a full one, are lost), and the bad file is replaced by a good entry."""
    src, files, qt = demo()
    n = len(qt)
    good, target_path, donor_path, good_hits = good_cache()
    cache = q.tmppath("cache")
    shutil.copytree(good, cache)
    target = os.path.join(cache, os.path.relpath(target_path, good))
    donor = os.path.join(cache, os.path.relpath(donor_path, good))
    original = q.read_bytes(target)
    others = {p: q.read_bytes(p) for p in entry_paths(cache) if p != target}
    BAD_ENTRIES[case](target, donor)
    assert q.read_bytes(target) != original, "the damage changed nothing"
    st, log = mount_and_read(src, files, cache, case)
    expect(st, case, tensors_quantized=1, disk_writes=1, disk_cache=True)
    assert good_hits - 2 <= st["disk_hits"] < good_hits, (
        "%s: %d disk hits; the intact cache gives %d" % (case, st["disk_hits"], good_hits))
    # the bad file was replaced by a good entry (quantization is deterministic: same bytes)
    check_cache(cache, n)
    q.assert_bytes_equal(q.read_bytes(target), original, "%s: rewritten entry" % case)
    for p, data in others.items():
        assert q.read_bytes(p) == data, "%s: %s changed" % (case, p)
    assert not warnings(log), log


for _case in BAD_ENTRIES:
    q.add_test("bad_entry/" + _case, lambda c=_case: bad_entry(c))


# ---------------------------------------------------------------------------------------------
# cache_size: least recently used entries go
# ---------------------------------------------------------------------------------------------

@q.test
def cache_size_removes_least_recently_used():
    """-o cache_size: entries are aged (mtime 1000 s back), a mount reads one of them (a hit
    refreshes its mtime, diskcache.h); then a mount of another spec writes 14 new entries into
    a budget too small for all: the directory ends within the budget, the old entries not used
    since go first, the one hit and every new one stay, all valid, every byte correct."""
    src, files, qt = demo()
    cache = populated_cache(src, files)
    old = {p: os.path.getsize(p) for p in entry_paths(cache)}
    past = time.time() - 1000
    for p in old:
        os.utime(p, (past, past))
    target = entry_of(cache, files, TARGET)
    shard = [rel for rel in files if rel.endswith(".safetensors") and
             TARGET in view_ranges(files[rel])][0]
    b, e = view_ranges(files[shard])[TARGET]
    with q.mounted(src, opts=[cache_opt(cache)]) as m:
        assert pread_or_errno(m.p(shard), b, e - b) == files[shard][b:e]
        assert status(m)["disk_hits"] >= 1
    recent = {p for p in old if os.stat(p).st_mtime > past + 500}
    assert target in recent, "a hit did not refresh the entry's mtime"
    assert len(recent) < len(old), "every entry was used: nothing is old"
    spec = "int8-channel"
    _, cfiles, cqt = demo(spec)
    new_total = 0
    for rel, data in cfiles.items():              # entry sizes of the new spec, from its export
        if rel.endswith(".safetensors"):
            r = view_ranges(data)
            for t in cqt:
                if t["file"] == rel:
                    base = t["name"][:-len(".weight")]
                    sl = sum(r[k][1] - r[k][0] for k in (
                        base + ".weight_scale", base + ".weight_zero_point") if k in r)
                    wl = r[base + ".weight"][1] - r[base + ".weight"][0]
                    new_total += q.cache_weight_offset(sl, wl) + wl
    keep = new_total + sum(old[p] for p in recent)
    total_all = sum(old.values()) + new_total
    budget = int((keep / 0.9 + total_all) / 2)      # trimming (to 90%) never reaches `keep`
    assert keep / 0.9 < budget < total_all
    with q.mounted(src, spec, opts=[cache_opt(cache), "cache_size=%d" % budget]) as m:
        assert_view(read_view(m, cfiles), cfiles, "within cache_size")
        st = status(m)
    expect(st, "within cache_size", tensors_quantized=len(cqt), disk_writes=len(cqt),
           disk_cache=True)
    after = {p: os.path.getsize(p) for p in entry_paths(cache)}
    check_cache(cache)
    assert sum(after.values()) <= budget, "%d bytes of entries, budget %d" % (
        sum(after.values()), budget)
    assert recent <= set(after), "recently used entries were removed: %s" % (recent - set(after))
    assert len(set(after) - set(old)) == len(cqt), "new entries were removed"
    assert set(old) - recent - set(after), "no old entry was removed"


# ---------------------------------------------------------------------------------------------
# (5) a cache directory that cannot take writes
# ---------------------------------------------------------------------------------------------

def one_cache_warning(log, cache, words, tail="in memory only"):
    w = warnings(log)
    assert len(w) == 1, "expected exactly one warning, got %d:\n%s" % (len(w), log)
    assert cache in w[0] and words in w[0] and tail in w[0], w[0]


@q.test
def read_only_cache_dir():
    """A read-only cache directory (a read-only bind mount of a filled cache: chmod does not
    stop root, e.g. a cache baked into an image or on read-only NFS): one warning, disk_cache
    false (no writes), every tensor served from its entries (nothing quantized), correct bytes;
    the directory is left as it was."""
    src, files, qt = demo()
    good = populated_cache(src, files)
    before = check_cache(good, len(qt))
    with bind_mount(good, ro=True) as ro:
        q.expect_oserror(errno.EROFS, os.mkdir, os.path.join(ro, "probe"), what="ro bind")
        with q.mounted(src, opts=[cache_opt(ro)]) as m:
            assert_view(read_view(m, files), files, "read-only cache dir")
            st = status(m)
            log = m.log()
    expect(st, "read-only cache dir", disk_cache=False, tensors_quantized=0, disk_writes=0)
    assert st["disk_hits"] >= len(qt), st
    one_cache_warning(log, ro, "Read-only file system", tail="read-only")
    assert check_cache(good, len(qt)) == before


@q.test
def full_cache_dir():
    """A cache directory on a 1 MiB tmpfs (the demo view needs 2 MB of entries): the first
    write that fails with ENOSPC turns the disk cache read-only with one warning (new tensors
    stay in memory); every byte is still served; the entries written before are complete, no
    temporary file is left."""
    src, files, qt = demo()
    with tmpfs("1M") as t:
        cache = os.path.join(t, "cache")
        with q.mounted(src, opts=[cache_opt(cache)]) as m:
            assert status(m)["disk_cache"] is True
            assert_view(read_view(m, files), files, "full cache dir")
            st = status(m)
            log = m.log()
        expect(st, "full cache dir", disk_cache=False, tensors_quantized=len(qt))
        one_cache_warning(log, cache, "No space left on device")
        entries = check_cache(cache)
        assert 0 < len(entries) < len(qt) and st["disk_writes"] == len(entries), (entries, st)


@q.test
def cache_dir_turns_read_only_under_the_mount():
    """The cache directory is remounted read-only while a mount uses it: the next write fails,
    one warning, disk_cache false (its entries are still read), every byte still served."""
    src, files, qt = demo()
    cache = q.tmpdir("cache")
    first = q.model_files(src)[0]
    with bind_mount(cache, ro=False) as b:
        with q.mounted(src, opts=[cache_opt(b)]) as m:
            q.assert_bytes_equal(read_direct(m.p(first)), files[first], first)
            st = status(m)
            assert st["disk_cache"] is True and st["disk_writes"] > 0, st
            run_cmd("mount", "-o", "remount,bind,ro", b)
            assert_view(read_view(m, files), files, "after the cache turned read-only")
            st = status(m)
            log = m.log()
    expect(st, "cache turned read-only", disk_cache=False)
    assert st["tensors_quantized"] <= len(qt), st
    one_cache_warning(log, b, "Read-only file system")
    check_cache(cache, st["disk_writes"])


# ---------------------------------------------------------------------------------------------
# (6) two processes, one cache directory
# ---------------------------------------------------------------------------------------------

@q.test
def two_processes_share_one_cache_dir():
    """Two quarkfs processes mount the same source on the same cache directory and are read at
    the same time, 4 threads each (O_DIRECT, every 128 KiB piece of every file in a random
    order): diskcache.h's flock guarantee ("only one of them computes a given tensor") means
    the tensors_quantized of both add up to the number of quantized tensors. No torn entry:
    every file validates, and a third mount serves all bytes from the cache alone."""
    src = q.gen_model("demo", "bf16", "--hidden", "1024", "--intermediate", "2816")
    files = files_of(src)
    n = len(quantized_tensors(src))
    cache = q.tmpdir("cache")
    opts = [cache_opt(cache), "threads=1"]     # one OpenMP thread: longer jobs, more overlap
    with q.mounted(src, opts=opts) as a, q.mounted(src, opts=opts) as b:
        mounts = [a] * 4 + [b] * 4
        barrier = threading.Barrier(len(mounts))
        errors, results = [], [None] * len(mounts)

        def reader(i):
            try:
                m, rng = mounts[i], random.Random(i)
                pieces = [(rel, off) for rel in sorted(files)
                          for off in range(0, len(files[rel]), CHUNK)]
                rng.shuffle(pieces)
                fds = {rel: os.open(m.p(rel), os.O_RDONLY | os.O_DIRECT) for rel in files}
                got = {rel: bytearray(len(files[rel])) for rel in files}
                try:
                    barrier.wait(30)
                    for rel, off in pieces:
                        b_ = os.pread(fds[rel], CHUNK, off)
                        got[rel][off:off + len(b_)] = b_
                finally:
                    for fd in fds.values():
                        os.close(fd)
                results[i] = {rel: bytes(v) for rel, v in got.items()}
            except Exception as exc:          # noqa: BLE001 - reported below
                errors.append("thread %d: %r" % (i, exc))

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(len(mounts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        for i, got in enumerate(results):
            assert_view(got, files, "thread %d" % i)
        sa, sb = status(a), status(b)
    print("    tensors_quantized: %d + %d of %d" % (sa["tensors_quantized"],
                                                   sb["tensors_quantized"], n))
    assert sa["tensors_quantized"] + sb["tensors_quantized"] == n, (n, sa, sb)
    assert sa["disk_writes"] + sb["disk_writes"] == n, (n, sa, sb)
    check_cache(cache, n)
    with q.mounted(src, opts=[cache_opt(cache)]) as c:
        assert_view(read_view(c, files), files, "third mount")
        st = status(c)
    expect(st, "third mount", tensors_quantized=0, scales_computed=0, disk_writes=0)
    assert st["disk_hits"] >= n, st


# ---------------------------------------------------------------------------------------------
# (7) SIGKILL while warm is writing
# ---------------------------------------------------------------------------------------------

@q.test
def sigkill_while_warming():
    """`quarkfs warm --no-wait` on a 0.9 GB model (45 MB entries) returns at once; the daemon is
    killed with SIGKILL while a temporary file is being written; the dead mount is detached
    (fusermount3 -uz). Every entry left is complete; the leftover temporary files are never
    served: a remount on the same directory serves every byte of the no-cache export,
    quantizing exactly the tensors without an entry; it removes a stale (1 h old) temporary
    file and keeps young ones (they may belong to a live writer of another process)."""
    src = q.gen_model("llama", "bf16", "--layers", "1")
    out = q.export(src, "int8")
    hashes = {rel: q.sha256(os.path.join(out, rel)) for rel in q.tree_files(out)}
    n = len(quantized_tensors(src))
    cache = q.tmpdir("cache")
    tmp = os.path.join(cache, "tmp")
    m = q.start_mount(src, opts=[cache_opt(cache)])
    caught = None
    try:
        t0 = time.monotonic()
        res = q.quarkfs("warm", "--no-wait", m.path)
        assert res.returncode == 0 and time.monotonic() - t0 < 5, res
        assert "/%d tensors" % n in res.stderr, res
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = len(entry_paths(cache))
            names = os.listdir(tmp)
            if done and names:      # an entry complete, a later one being written: kill now
                caught = names
                break
            if done == n:
                break
        os.kill(m.proc.pid, signal.SIGKILL)
        m.proc.wait(10)
    finally:
        q.run(["fusermount3", "-uz", m.path], timeout=30)
        m.close()
    assert m.exit_code == -signal.SIGKILL, m.exit_code
    entries = entry_paths(cache)
    for p in entries:
        check_entry(p)
    left = sorted(os.listdir(tmp))
    print("    killed with %d/%d entries written; temporary files left: %s" % (
        len(entries), n, ", ".join("%s (%d bytes)" % (f, os.path.getsize(os.path.join(tmp, f)))
                                   for f in left) or "none"))
    assert caught is not None, "warm finished before a temporary file could be seen"
    assert len(entries) < n
    stale = os.path.join(tmp, "0" * 32 + ".1.1")
    with open(stale, "wb") as f:
        f.write(b"QFSCACHE" + b"\0" * 100)
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    with q.mounted(src, opts=[cache_opt(cache)]) as m:
        for rel, h in sorted(hashes.items()):
            assert q.sha256(m.p(rel)) == h, "%s differs from the export after the kill" % rel
        st = status(m)
    expect(st, "remount after SIGKILL", tensors_quantized=n - len(entries),
           disk_writes=n - len(entries))
    assert not os.path.exists(stale), "a stale temporary file was not removed"
    assert sorted(os.listdir(tmp)) == left, "young temporary files changed: %s -> %s" % (
        left, os.listdir(tmp))
    for p in entry_paths(cache):
        check_entry(p)
    assert len(entry_paths(cache)) == n


# ---------------------------------------------------------------------------------------------
# (8) sources changed under the mount
# ---------------------------------------------------------------------------------------------

# Both in the first shard. CACHED is its last weight: reading it alone (its exact byte range,
# O_DIRECT) quantizes it and nothing else (no scales request, no later tensor to prefetch), so
# CHANGED, the first weight, is certainly not computed when the file changes.
CHANGED = "model.layers.0.mlp.down_proj.weight"
CACHED = "model.layers.0.self_attn.o_proj.weight"


def read_cached_only(m, shard, files):
    """Read CACHED through the view; check that it alone was quantized."""
    r = view_ranges(files[shard])
    assert max(r, key=lambda k: r[k][0] if k.endswith(".weight") else -1) == CACHED, r
    b, e = r[CACHED]
    assert pread_or_errno(m.p(shard), b, e - b) == files[shard][b:e], "before the change"
    st = status(m)
    assert st["tensors_quantized"] == 1, "reading %s quantized more than it: %s" % (CACHED, st)


negate_tensor = q.negate_tensor


def pread_or_errno(path, off, n):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        return os.pread(fd, n, off)
    except OSError as exc:
        return exc.errno
    finally:
        os.close(fd)


def source_changed_in_place(how):
    """A shard changed in place after the mount (same size and new bytes, or grown): reads of
    its tensors not yet quantized fail with EIO (again on a second try, scales too), the log
    says "changed under the mount"; the tensor quantized before stays served (old bytes), as
    are the other shard and the generated files. Disk cache on: it must not bypass the check."""
    src0, files, qt = demo()
    src = q.copy_model(src0)
    shard, other = q.model_files(src)
    r = view_ranges(files[shard])
    with q.mounted(src, opts=[cache_opt(q.tmpdir("cache"))]) as m:
        read_cached_only(m, shard, files)
        path = os.path.join(src, shard)
        if how == "rewritten":          # same size, new bytes, new mtime
            negate_tensor(path, CHANGED)
        else:                           # longer: the tensors' bytes are unchanged
            with open(path, "ab") as f:
                f.write(b"\0" * 4096)
        for name in (CHANGED, CHANGED, CHANGED + "_scale"):
            b, e = r[name]
            got = pread_or_errno(m.p(shard), b, e - b)
            assert got == errno.EIO, "%s: read of %s after the change: %r" % (
                how, name, got if isinstance(got, int) else "bytes (%s)" % (
                    "old" if got == files[shard][b:e] else "NOT the old ones"))
        b, e = r[CACHED]
        assert pread_or_errno(m.p(shard), b, e - b) == files[shard][b:e], "cached tensor"
        q.assert_bytes_equal(read_direct(m.p(other)), files[other], "unchanged shard")
        for rel in ("config.json", "model.safetensors.index.json"):
            q.assert_bytes_equal(read_direct(m.p(rel)), files[rel], rel)
        assert m.proc.poll() is None
        log = m.log()
    errs = [l for l in log.splitlines() if "changed under the mount" in l]
    assert errs and shard in errs[0], log


q.add_test("source_change/quantized_file_rewritten_in_place",
           lambda: source_changed_in_place("rewritten"))
q.add_test("source_change/quantized_file_grown_in_place",
           lambda: source_changed_in_place("grown"))


@q.test
def quantized_source_replaced_by_rename():
    """A shard replaced by rename (new bytes in a new file): the mount keeps serving the old
    version from the file it holds open, tensors not yet quantized included; no error."""
    src0, files, qt = demo()
    src = q.copy_model(src0)
    shard, other = q.model_files(src)
    r = view_ranges(files[shard])
    with q.mounted(src, opts=[cache_opt(q.tmpdir("cache"))]) as m:
        b, e = r[CACHED]
        assert pread_or_errno(m.p(shard), b, e - b) == files[shard][b:e]
        for rel in (shard, other):
            new = os.path.join(src, rel + ".new")
            shutil.copyfile(os.path.join(src, rel), new)
            negate_tensor(new, CHANGED if rel == shard else "model.layers.1.mlp.up_proj.weight")
            patch_tensor_file(new, "model.embed_tokens.weight" if rel == shard
                              else "model.norm.weight")
            os.replace(new, os.path.join(src, rel))
        assert_view(read_view(m, files), files, "after the rename")
        st = status(m)
        log = m.log()
    expect(st, "after the rename", tensors_quantized=len(qt))
    assert "error" not in log, log


def patch_tensor_file(path, name):
    """Change the first 64 bytes of an unquantized tensor (bf16 0.125 each)."""
    b, e = q.tensor_ranges(path)[name]
    with open(path, "r+b") as f:
        f.seek(b)
        f.write(b"\x00\x3e" * 32)


@q.test
def unquantized_tensors_of_a_changed_quantized_file():
    """Never a mix of old and new bytes: a shard rewritten in place (its embedding and a weight
    changed, same size) must not serve the NEW bytes of the embedding (an unquantized tensor of
    a quantized file) next to old quantized tensors: EIO or the old bytes.

    Known bug: core/view.c read_tensors() reads unquantized tensors straight from the source
    descriptor without the check that core/engine.c check_unchanged() applies to quantized
    ones, so the new embedding bytes are served in a file whose other tensors are old (or
    EIO)."""
    src0, files, qt = demo()
    src = q.copy_model(src0)
    shard = q.model_files(src)[0]
    r = view_ranges(files[shard])
    emb = "model.embed_tokens.weight"
    with q.mounted(src) as m:
        read_cached_only(m, shard, files)
        path = os.path.join(src, shard)
        negate_tensor(path, CHANGED)
        patch_tensor_file(path, emb)
        b, e = r[emb]
        got = pread_or_errno(m.p(shard), b, e - b)
        b2, e2 = r[CACHED]
        cached = pread_or_errno(m.p(shard), b2, e2 - b2)
    assert cached == files[shard][b2:e2], "the cached tensor is no longer the old one"
    if got == errno.EIO or got == files[shard][b:e]:
        return
    assert isinstance(got, bytes), got
    known_bug("%s changed in place: its unquantized tensor %s is served with the NEW source "
              "bytes (first difference at byte %d of the tensor) while its quantized tensors "
              "are the old ones or EIO: old and new bytes mixed in one view file (core/view.c "
              "read_tensors reads unquantized tensors without check_unchanged)" % (
                  shard, emb, q.first_diff(got, files[shard][b:e])))


def classify(got, old, new):
    """'EIO', 'old', 'new' or a description of a mix."""
    if got == errno.EIO:
        return "EIO"
    if isinstance(got, int):
        return errno.errorcode.get(got, str(got))
    if got == old:
        return "old"
    if got == new[:len(old)]:
        return "new bytes" + (" (cut to the old size)" if len(new) > len(old) else "")
    k = q.first_diff(got, old)
    if got[k:] == new[k:len(got)]:
        return "MIXED: bytes [0, %d) old, [%d, %d) new" % (k, k, len(got))
    return "neither old nor new (first difference with the old at %d)" % k


def read_or_errno(path):
    try:
        return q.read_bytes(path)
    except OSError as exc:
        return exc.errno


@q.test
def passthrough_file_changed_under_the_mount():
    """Passthrough files under the same rule: changed in place -> EIO (or the old bytes),
    replaced by rename -> the old version; never new bytes, never a mix.

    Known bug: core/view.c qfs_view_open() opens the source by path at every open and reads it
    with no size/mtime check, while the size the view shows is the one of mount time and the
    page cache (keep_cache) keeps pages read before: a passthrough file changed in place or
    replaced by rename is served with its new bytes, cut or short of the old size, and pages
    read before the change stay old: old and new bytes mixed in one file."""
    src = q.copy_model(demo()[0])
    rng = random.Random(11)
    size = 1 << 20
    old = {}
    for name in ("inplace.bin", "mixed.bin", "renamed.bin", "longer.bin"):
        old[name] = rng.randbytes(size)
        with open(os.path.join(src, name), "wb") as f:
            f.write(old[name])
    found = {}
    with q.mounted(src) as m:
        new = {k: rng.randbytes(size) for k in old}
        new["longer.bin"] = rng.randbytes(size + 4096)
        for name in ("mixed.bin", "renamed.bin"):       # the first pages reach the page cache
            with open(m.p(name), "rb") as f:
                assert f.read(4096) == old[name][:4096]
        for name in ("inplace.bin", "mixed.bin", "longer.bin"):
            with open(os.path.join(src, name), "r+b") as f:
                f.write(new[name])
        tmp = os.path.join(src, "renamed.bin.new")
        with open(tmp, "wb") as f:
            f.write(new["renamed.bin"])
        os.replace(tmp, os.path.join(src, "renamed.bin"))
        for name in old:
            assert os.path.getsize(m.p(name)) == size, "%s: the view's size moved" % name
            found[name] = classify(read_or_errno(m.p(name)), old[name], new[name])
        assert m.proc.poll() is None
    print("    " + "; ".join("%s: %s" % kv for kv in sorted(found.items())))
    bad = {k: v for k, v in found.items() if v not in ("EIO", "old")}
    if bad:
        known_bug("passthrough files changed under the mount are served with new bytes: " +
                  "; ".join("%s: %s" % kv for kv in sorted(bad.items())))


# ---------------------------------------------------------------------------------------------
# (9) bounded memory
# ---------------------------------------------------------------------------------------------

OVERHEAD = 32 << 20


def vm_hwm(pid):
    """Peak resident set size of pid, bytes (VmHWM)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM for %d" % pid)


def sanitized_binary():
    """ASan/TSan builds keep shadow memory and quarantines: their RSS says nothing about the
    daemon's own budget."""
    res = q.run(["ldd", q.QUARKFS])
    return any(lib in res.stdout for lib in ("libasan", "libtsan"))


@q.test
def bounded_memory():
    """-o cache_mem=256M,cache=off on a 1.8 GiB model (llama preset, 4 layers: 28 quantized
    tensors of up to 86 MiB of BF16, 1.15 GiB of view): a sequential read of everything, 200
    random 1 MiB preads across the files and an mmap pass (page cache dropped before each pass,
    so every pass reaches the daemon and tensors are evicted and recomputed). Every byte equals
    the no-cache export, and the daemon's peak RSS (VmHWM) stays under

        cache_mem + largest source tensor + 32 MiB.

    Why: quantized weights live in the memory cache, which makes room for a tensor's output
    before the job that produces it (so the output in flight is inside cache_mem); the
    worker's source buffer (the largest source tensor, 86 MiB here) is outside the budget;
    32 MiB covers the rest: up to 16 FUSE threads with a 1 MiB reply buffer and libfuse's
    1 MiB receive buffer each, stacks, the model tables and the libraries (an idle mount is
    about 3 MiB). This is tighter than README's "cache_mem plus the tensor in flight and its
    source bytes" (which also allows the 43 MiB output): a leaked or doubly held quantized
    tensor exceeds it. Measured on the 2-core CI machine (three runs): 359.5-360.6 MiB, most of
    it reached by the mmap pass (sequential: 350-352 MiB), against 374 MiB (256 + 86 + 32).
    The daemon runs without meson's MALLOC_PERTURB_ (see below: it adds about 40 MiB that a
    real daemon never has)."""
    if sanitized_binary():
        raise q.Skip("sanitizer build: RSS is dominated by the sanitizer's shadow memory")
    budget = 256 << 20
    src = q.gen_model("llama", "bf16", "--layers", "4")
    qt = quantized_tensors(src)
    src_total = sum(os.path.getsize(os.path.join(src, f)) for f in q.model_files(src))
    assert src_total >= 1.5 * (1 << 30), "the model is only %d bytes" % src_total
    largest_src = max(t["src_bytes"] for t in qt)
    bound = budget + largest_src + OVERHEAD
    out = q.export(src, "int8")
    rels = sorted(q.tree_files(out))
    hashes = {rel: q.sha256(os.path.join(out, rel)) for rel in rels}
    big = [r for r in rels if r.endswith(".safetensors")]
    peaks = []
    # meson sets MALLOC_PERTURB_, which makes glibc write every byte of every block it hands
    # out: libfuse's 1 MiB receive buffer per FUSE thread (which a read request barely touches)
    # becomes resident, about +40 MiB that a real daemon never has. Measure the real daemon.
    perturb = os.environ.pop("MALLOC_PERTURB_", None)
    try:
        mount = q.start_mount(src, opts=["cache_mem=256M", "cache=off"])
    finally:
        if perturb is not None:
            os.environ["MALLOC_PERTURB_"] = perturb
    with contextlib.closing(mount) as m:
        pid = m.proc.pid
        for rel in rels:                                    # sequential
            assert q.sha256(m.p(rel)) == hashes[rel], "sequential read of %s" % rel
        peaks.append(vm_hwm(pid))
        rng = random.Random(5)
        fds = {rel: os.open(m.p(rel), os.O_RDONLY) for rel in big}
        exp = {rel: open(os.path.join(out, rel), "rb") for rel in big}
        try:
            for fd in fds.values():
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            for i in range(200):                            # random 1 MiB preads
                rel = rng.choice(big)
                off = rng.randrange(0, os.fstat(fds[rel]).st_size - (1 << 20))
                got = os.pread(fds[rel], 1 << 20, off)
                want = os.pread(exp[rel].fileno(), 1 << 20, off)
                q.assert_bytes_equal(got, want, "pread #%d %s at %d" % (i, rel, off))
            peaks.append(vm_hwm(pid))
            for rel, fd in fds.items():                     # mmap
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
                try:
                    assert hashlib.sha256(mm).hexdigest() == hashes[rel], "mmap of %s" % rel
                finally:
                    mm.close()
            peaks.append(vm_hwm(pid))
        finally:
            for fd in fds.values():
                os.close(fd)
            for f in exp.values():
                f.close()
        st = status(m)
    print("    peak RSS after sequential / random / mmap: %s MiB; bound %d MiB (256 + %d + %d); "
          "evictions %d, tensors_quantized %d" % (
              " / ".join("%.1f" % (p / 2**20) for p in peaks), bound >> 20, largest_src >> 20,
              OVERHEAD >> 20, st["evictions"], st["tensors_quantized"]))
    assert st["evictions"] > 0 and st["tensors_quantized"] > len(qt), st
    assert max(peaks) <= bound, "peak RSS %.1f MiB over the bound %.1f MiB" % (
        max(peaks) / 2**20, bound / 2**20)


# ---------------------------------------------------------------------------------------------
# (10) status
# ---------------------------------------------------------------------------------------------

@q.test
def status_keys_and_bytes_served():
    """status --json has every key with its type; on a fresh cache=off mount, bytes_served is
    exactly what read(2) returned (O_DIRECT: no page cache), a buffered read adds the file's
    size once and a second one (page cache) nothing; the other counters agree with inspect;
    the text form and errors on a directory that is not a mount."""
    src, files, qt = demo()
    n, src_bytes = len(qt), sum(t["src_bytes"] for t in qt)
    with q.mounted(src) as m:
        st = status(m)
        for k in STATUS_KEYS:
            assert k in st, "status lacks %s: %s" % (k, st)
        assert set(st["warm"]) == {"tensors", "tensors_done", "bytes", "bytes_done"}, st
        for k in STATUS_KEYS[:9]:
            assert type(st[k]) is (float if k == "seconds_quantizing" else int), (k, st)
        assert type(st["disk_cache"]) is bool and type(st["warm"]) is dict, st
        assert st["spec"] == "int8" and st["format"] == "quark", st
        assert os.path.realpath(st["source"]) == os.path.realpath(src), st
        expect(st, "fresh mount", tensors_quantized=0, bytes_served=0, disk_cache=False,
               scales_computed=0, memory_hits=0, disk_hits=0, disk_writes=0, evictions=0)
        t0 = time.monotonic()
        got = read_view(m, files)
        wall = time.monotonic() - t0
        assert_view(got, files, "O_DIRECT")
        st = status(m)
        total = sum(len(b) for b in got.values())
        expect(st, "after reading everything", bytes_served=total, tensors_quantized=n,
               bytes_quantized=src_bytes, disk_hits=0, disk_writes=0, evictions=0,
               disk_cache=False)
        assert st["memory_hits"] > 0, st
        assert 0 < st["seconds_quantizing"] <= wall, (st, wall)
        assert st["warm"] == {"tensors": 0, "tensors_done": 0, "bytes": 0, "bytes_done": 0}, st
        rel = q.model_files(src)[0]
        for extra in (len(files[rel]), 0):                 # buffered: once, then page cache
            before = status(m)["bytes_served"]
            q.assert_bytes_equal(q.read_bytes(m.p(rel)), files[rel], rel)
            assert status(m)["bytes_served"] - before == extra, (rel, extra)
        res = q.quarkfs("status", m.path)
        assert res.returncode == 0 and re.search(r"disk cache +off", res.stdout), res
        for k in ("tensors_quantized", "memory_hits", "disk_hits", "bytes_served", "warm"):
            assert k in res.stdout, res
    d = q.tmpdir("plain")
    for args in (("status", d), ("status", d, "--json"), ("warm", d)):
        res = q.quarkfs(*args)
        assert res.returncode == 1 and d in res.stderr, res
    for args in (("status",), ("warm",), ("status", "--json")):
        assert q.quarkfs(*args).returncode == 2, args


if __name__ == "__main__":
    q.main(skip_exit=False)
