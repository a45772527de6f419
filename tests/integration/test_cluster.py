"""The shared disk cache on a real distributed filesystem: three GlusterFS nodes (tests/
integration/cluster.py: network namespaces on a private bridge, glusterd and one brick each,
a replica-3 volume mounted by each node through its own link), each running its own quarkfs
with cache_dir on its own client mount of the volume.

Expected bytes come from `quarkfs export --no-cache` of the same source, itself checked against
tests/oracle/quarkref.py; the number of quantized tensors is counted in quarkref's own view (the
int8 weights it writes), not asked of quarkfs. Counters come from `quarkfs status --json`.

Shown here: three nodes reading one model at once quantize every tensor once in the cluster;
a node started later quantizes nothing; the same model at another path on another node hits
the same entries; and the faults: a brick killed mid-read, a node's cable pulled while it holds
a tensor's lock, a full volume, an entry corrupted on one brick. In each, every byte served is
the export's, no read waits longer than the stated bounds (the 5 s lock wait, the volume's
network.ping-timeout), the failing store costs one warning, and later mounts use the store
again. The timings of a fuller run are scripts/bench-cluster's (BENCHMARKS.md).

Needs root, /dev/fuse, glusterfs-server and glusterfs-client (scripts/install-deps.sh
--cluster); skips with the reason otherwise. The cluster is built once for the file (about 10 s)
and removed in every path.
"""

import contextlib
import json
import os
import shutil
import subprocess
import threading
import time

import qfstest as q
from cluster import VOLUME, Cluster

WARNING = "quarkfs: warning:"
LOCK_WAIT = 5.0          # core/diskcache.c: the longest wait for another node's lock
PING_TIMEOUT = 5         # the volume's network.ping-timeout (cluster.py sets it)
SLACK = 10.0             # scheduling on a shared 2-core machine

_cluster = []
_model = {}


def cluster():
    """The file's cluster, started on first use (Skip with the reason if the tools are
    missing; a cluster that fails to start fails every test with the same error)."""
    if not _cluster:
        why = Cluster.missing()
        if why:
            raise q.Skip(why)
        c = Cluster(os.path.join(q.TMP, "cluster"), nodes=3, ping_timeout=PING_TIMEOUT)
        _cluster.append(c)
        try:
            c.start()
        except Exception as exc:
            c.stop()
            c.error = "the cluster did not start: %s" % exc
            raise
    if getattr(_cluster[0], "error", None):
        raise AssertionError(_cluster[0].error)
    return _cluster[0]


def model(name="stories"):
    """(src, {rel: expected bytes}, number of quantized tensors) of a model."""
    if name not in _model:
        if name == "stories":
            src = q.shared_model("bf16")
        else:   # a synthetic model big enough that a read lasts long enough to be hit mid-way
            src = q.gen_model("demo", "bf16", "--layers", "12")
        out = q.export(src, "int8")
        q.quarkref_check(src, out, "int8")
        ref = q.quarkref_write(src, "int8")
        n = 0
        for rel in q.model_files(ref):
            header, _, _ = q.st_header(os.path.join(ref, rel))
            n += sum(1 for k, t in header.items() if t["dtype"] == "I8" and k.endswith(".weight"))
        assert n > 0, "the reference view of %s holds no int8 tensor" % src
        files = {rel: q.read_bytes(os.path.join(out, rel)) for rel in q.tree_files(out)}
        _model[name] = (src, files, n)
    return _model[name]


def status(m):
    res = q.quarkfs("status", m.path, "--json")
    assert res.returncode == 0, "quarkfs status failed: %r" % res
    return json.loads(res.stdout)


def warnings(m):
    return [l for l in m.log().splitlines() if WARNING in l]


def read_all(m, files):
    """{rel: bytes} of every file of the view, read whole."""
    return {rel: q.read_bytes(m.p(rel)) for rel in sorted(files)}


def assert_view(got, files, what):
    assert sorted(got) == sorted(files), "%s: files %s" % (what, sorted(got))
    for rel in sorted(files):
        q.assert_bytes_equal(got[rel], files[rel], "%s: %s" % (what, rel))


def cache_on(node, name):
    return os.path.join(node.mnt, name)


def mount_on(node, src, cache, opts=()):
    """quarkfs on a node with cache_dir on that node's client mount (foreground, log kept)."""
    return q.mounted(src, "int8", opts=["cache_dir=" + cache] + list(opts))


def read_together(mounts, files):
    """Every mount reads the whole view at the same moment (one thread each); returns
    ([{rel: bytes}], [seconds])."""
    got, secs, errors = [None] * len(mounts), [None] * len(mounts), []
    barrier = threading.Barrier(len(mounts))

    def reader(i):
        try:
            barrier.wait()
            t = time.monotonic()
            got[i] = read_all(mounts[i], files)
            secs[i] = time.monotonic() - t
        except Exception as exc:   # noqa: BLE001 - reported below
            errors.append("reader %d: %r" % (i, exc))
    threads = [threading.Thread(target=reader, args=(i,)) for i in range(len(mounts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return got, secs


def entries(cache):
    return q.cache_entries(cache)


def fresh_cache(c, name):
    """An empty cache directory name on the volume (same path on every node)."""
    path = cache_on(c.nodes[0], name)
    shutil.rmtree(path, ignore_errors=True)
    return name


def fill(c, name):
    """The cache name filled by node 1 reading the whole view of stories260K."""
    src, files, n = model()
    fresh_cache(c, name)
    with mount_on(c.nodes[0], src, cache_on(c.nodes[0], name)) as m:
        assert_view(read_all(m, files), files, "filling %s" % name)
    assert len(entries(cache_on(c.nodes[0], name))) == n


def wait_writable(node, timeout=60):
    """Seconds until a file can be created through node's client mount."""
    t = time.monotonic()
    probe = os.path.join(node.mnt, "probe-%d" % node.i)
    while True:
        try:
            with open(probe, "wb") as f:
                f.write(b"x")
            os.unlink(probe)
            return time.monotonic() - t
        except OSError:
            assert time.monotonic() - t < timeout, "node %d: volume not writable" % node.i
            time.sleep(0.2)


@q.test
def three_nodes_at_once_quantize_each_tensor_once():
    """Three nodes mount the same model with the cache on the volume and read the whole view at
    the same moment: the sum of tensors_quantized is the number of quantized tensors, each node
    serves the export's bytes, the volume holds one entry per tensor, seen alike by every
    node; then a fourth mount (node 3 again, after the others finished) quantizes nothing."""
    c = cluster()
    src, files, n = model()
    name = fresh_cache(c, "together")
    with contextlib.ExitStack() as stack:
        mounts = [stack.enter_context(mount_on(node, src, cache_on(node, name)))
                  for node in c.nodes]
        got, secs = read_together(mounts, files)
        for i, g in enumerate(got):
            assert_view(g, files, "node %d" % (i + 1))
        sts = [status(m) for m in mounts]
        for m in mounts:
            assert not warnings(m), m.log()
    for st in sts:   # per-machine view files stay off the shared volume by default
        vf = st["view_files"]
        assert vf["present"] == 0 and vf["written"] == 0 and \
            "FUSE filesystem" in vf["served_by"], vf
    assert not os.path.exists(os.path.join(cache_on(c.nodes[0], name), "files")), \
        "view files written to the shared volume"
    quantized = [st["tensors_quantized"] for st in sts]
    assert sum(quantized) == n, ("tensors quantized per node %s, sum %d, but the model has %d "
                                 "quantized tensors" % (quantized, sum(quantized), n))
    assert all(st["disk_cache"] for st in sts), sts
    lists = [sorted(os.path.basename(e) for e in entries(cache_on(node, name)))
             for node in c.nodes]
    assert len(lists[0]) == n and lists[0] == lists[1] == lists[2], lists
    with mount_on(c.nodes[2], src, cache_on(c.nodes[2], name)) as m:
        assert_view(read_all(m, files), files, "late node")
        st = status(m)
    assert st["tensors_quantized"] == 0 and st["disk_hits"] >= n, st
    print("  nodes quantized %s of %d tensors, read in %s s" % (
        quantized, n, ["%.2f" % s for s in secs]))


@q.test
def same_model_at_other_paths_hits_the_same_entries():
    """The model as two Hugging Face cache snapshots at different paths (snapshots/REV/x ->
    ../../blobs/SHA) on two nodes, and as a plain copy on the third: the first node fills the
    cache, the others quantize nothing and hit every tensor."""
    c = cluster()
    src, files, n = model()
    name = fresh_cache(c, "paths")
    snaps = []
    for i in range(2):
        repo = os.path.join(q.tmpdir("hub%d" % i), "models--org--stories")
        snap = os.path.join(repo, "snapshots", "rev%d" % i)
        os.makedirs(os.path.join(repo, "blobs"))
        os.makedirs(snap)
        for f in os.listdir(src):
            blob = q.sha256(os.path.join(src, f))
            shutil.copyfile(os.path.join(src, f), os.path.join(repo, "blobs", blob))
            os.symlink(os.path.join("..", "..", "blobs", blob), os.path.join(snap, f))
        snaps.append(snap)
    snaps.append(q.copy_model(src))
    counts = []
    for node, path in zip(c.nodes, snaps):
        with mount_on(node, path, cache_on(node, name)) as m:
            assert_view(read_all(m, files), files, "node %d (%s)" % (node.i, path))
            st = status(m)
        counts.append((st["tensors_quantized"], st["disk_hits"]))
    assert counts[0][0] == n, counts
    assert all(qn == 0 and hits >= n for qn, hits in counts[1:]), counts


@q.test
def brick_killed_mid_read():
    """Three nodes read a 12-layer model together; node 2's brick is SIGKILLed as soon as its
    first entry lands on it. Every node serves the export's bytes, with no warning (two bricks
    of three keep the volume writable); the brick restarted and healed, a fresh mount on node 2
    quantizes nothing."""
    c = cluster()
    c.settle()   # whole again after the previous case's fault
    src, files, n = model("demo12")
    name = fresh_cache(c, "brick")
    brick_v1 = os.path.join(c.nodes[1].brick, name, "v1")
    killed = []

    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            if os.path.isdir(brick_v1) and any(f.endswith(".qfs") for _, _, fs in
                                               os.walk(brick_v1) for f in fs):
                killed.append(c.kill_brick(c.nodes[1]))
                return
            time.sleep(0.005)
    try:
        with contextlib.ExitStack() as stack:
            mounts = [stack.enter_context(mount_on(node, src, cache_on(node, name)))
                      for node in c.nodes]
            k = threading.Thread(target=killer)
            k.start()
            got, secs = read_together(mounts, files)
            k.join()
            assert killed, "no entry reached node 2's brick: the brick was never killed"
            for i, g in enumerate(got):
                assert_view(g, files, "node %d, brick 2 killed" % (i + 1))
            sts = [status(m) for m in mounts]
            logs = [warnings(m) for m in mounts]
        quantized = [st["tensors_quantized"] for st in sts]
        assert sum(quantized) >= n, quantized
        assert not any(logs), logs
        assert len(entries(cache_on(c.nodes[0], name))) == n
    finally:
        c.restart_bricks()
    c.heal()
    with mount_on(c.nodes[1], src, cache_on(c.nodes[1], name)) as m:
        assert_view(read_all(m, files), files, "node 2 after the brick came back")
        st = status(m)
    assert st["tensors_quantized"] == 0, st
    print("  brick pid %d killed; quantized per node %s (%d tensors); reads %s s" % (
        killed[0], quantized, n, ["%.2f" % s for s in secs]))


@contextlib.contextmanager
def lock_holder(path):
    """A process holding flock(LOCK_EX) on path (as a quarkfs computing that tensor does)."""
    code = ("import fcntl,os,sys,time\nf=os.open(sys.argv[1],os.O_RDWR|os.O_CREAT,0o600)\n"
            "fcntl.flock(f,fcntl.LOCK_EX)\nprint('held',flush=True)\ntime.sleep(600)\n")
    p = subprocess.Popen([q.PY, "-c", code, path], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    try:
        line = p.stdout.readline().decode().strip()
        assert line == "held", "the lock holder failed: %s" % line
        yield p
    finally:
        p.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(timeout=60)


@q.test
def cable_pulled_while_holding_a_lock():
    """Node 3 holds the lock of a tensor missing from the cache (through its own client mount,
    as its quarkfs does while computing it) and its cable is pulled. Node 1 reads the whole
    view: it waits for that lock at most LOCK_WAIT (plus the volume's ping-timeout for the
    lost brick), computes the one tensor itself, serves the export's bytes, no warning. Node 3
    reads its view meanwhile: correct bytes from memory after its client gives up (ping-timeout),
    one warning. Cable back: node 3's mounts use the volume again. (Node 1's own client may
    fail with ENOTCONN while it drops node 3's brick: then one warning there, bytes still
    right.)"""
    c = cluster()
    c.settle()   # whole again after the previous case's fault
    src, files, n = model()
    name = "cut"
    fill(c, name)
    n1, n3 = c.nodes[0], c.nodes[2]
    victim = entries(cache_on(n1, name))[0]
    key = os.path.basename(victim)[:-len(".qfs")]
    os.unlink(victim)
    with mount_on(n3, src, cache_on(n3, name)) as m3:
        with lock_holder(os.path.join(cache_on(n3, name), "locks", key)):
            c.link(n3, False)
            try:
                with mount_on(n1, src, cache_on(n1, name)) as m1:
                    t = time.monotonic()
                    got1 = read_all(m1, files)
                    t1 = time.monotonic() - t
                    st1 = status(m1)
                    w1 = warnings(m1)
                t = time.monotonic()
                got3 = read_all(m3, files)
                t3 = time.monotonic() - t
                st3 = status(m3)
                w3 = warnings(m3)
            finally:
                c.link(n3, True)
    assert_view(got1, files, "node 1 while node 3 is cut off")
    assert_view(got3, files, "node 3 cut off")
    assert t1 < LOCK_WAIT + PING_TIMEOUT + SLACK, "node 1 took %.1f s" % t1
    assert t3 < 2 * PING_TIMEOUT + LOCK_WAIT + SLACK, "node 3 took %.1f s" % t3
    # Node 1's own Gluster client may answer ENOTCONN for a moment while it drops the cut
    # brick (its ping-timeout), at mount (the cache directory cannot be opened) or later (a
    # write fails): then node 1 serves from memory with one warning, no more.
    if w1:
        assert len(w1) == 1 and ("disk cache" in w1[0] or "cache directory" in w1[0]) and \
            "Transport endpoint is not connected" in w1[0] and st1["tensors_quantized"] >= 1, \
            (st1, w1)
    else:
        assert st1["tensors_quantized"] == 1, (st1, w1)
    assert len(w3) == 1 and "disk cache" in w3[0], w3
    # Node 1 wrote the missing entry back, unless its own client failed it (above): then the
    # first mount on node 3 after the cable is back computes that one tensor and writes it.
    rewritten = not w1
    if rewritten:
        assert os.path.exists(victim), "node 1 did not write the entry back"
    # Cable back: node 3's client reconnects to the bricks (writes need two of three) and sees
    # the entry node 1 wrote meanwhile; then a new mount there hits every entry.
    back = wait_writable(n3)
    seen = os.path.join(cache_on(n3, name), os.path.relpath(victim, cache_on(n1, name)))
    deadline = time.monotonic() + 60
    while rewritten and not os.path.exists(seen):
        assert time.monotonic() < deadline, "node 3 does not see the rewritten entry in 60 s"
        time.sleep(0.5)
    with mount_on(n3, src, cache_on(n3, name)) as m:
        assert_view(read_all(m, files), files, "node 3, cable back")
        st = status(m)
    assert st["tensors_quantized"] <= (0 if rewritten else 1) and st["disk_cache"], st
    print("  node 1 read in %.2f s (one tensor locked by the cut node; %s); node 3 cut off "
          "read in %.2f s; its warning: %s; node 3 writable %.1f s after the cable was back"
          % (t1, "its own client failed once: " + w1[0].split(WARNING)[1].strip() if w1
             else "no warning", t3, w3[0].split(WARNING)[1].strip(), back))


WRITE_RETRY = 10.0       # core/diskcache.c: after a failed write, hits only for this long


def read_direct(path):
    """A whole file read with O_DIRECT (past the page cache: every read reaches the daemon)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        parts = iter(lambda: os.read(fd, 1 << 20), b"")
        return b"".join(parts)
    finally:
        os.close(fd)


@q.test
def full_volume():
    """The volume fills up (a filler file written through node 1 until ENOSPC) under a running
    mount on node 2 (cache_mem=1M: a 12-layer model's tensors are evicted and computed again
    when read again): node 2 serves the export's bytes, computed, with one warning naming the
    cache. The filler removed, the same mount writes again (after the retry pause) every
    entry that did not fit as it reads the view again, with no second warning."""
    c = cluster()
    c.settle()   # whole again after the previous case's fault
    src, files, n = model("demo12")
    name = fresh_cache(c, "full")
    filler = os.path.join(c.nodes[0].mnt, "filler")
    with mount_on(c.nodes[1], src, cache_on(c.nodes[1], name), ["cache_mem=1M"]) as m:
        try:
            with contextlib.suppress(OSError), open(filler, "wb") as f:
                block = b"\xa5" * (1 << 20)
                for _ in range(4096):
                    f.write(block)
                    f.flush()
            got = {rel: read_direct(m.p(rel)) for rel in sorted(files)}
            assert_view(got, files, "node 2, volume full")
            # The entries go to disk in the background: the writer meets the full volume
            # only once it has tried the queued ones.
            st = q.status_settled(m.path)
            w = warnings(m)
            assert st["tensors_quantized"] >= n and not st["disk_cache"], st   # evictions: >=
            assert len(w) == 1 and cache_on(c.nodes[1], name) in w[0], w
        finally:
            with contextlib.suppress(OSError):
                os.unlink(filler)
        # Gluster's bricks notice free space again at their next check (every few seconds).
        waited = wait_writable(c.nodes[1])
        time.sleep(WRITE_RETRY)
        # Entries go to disk in the background and a full writer queue drops (counted), so
        # on this slow store one pass may not write them all: read again (every tensor is
        # computed again at cache_mem=1M) until each has its entry.
        for passes in range(1, 11):
            got = {rel: read_direct(m.p(rel)) for rel in sorted(files)}
            assert_view(got, files, "node 2, space back, pass %d" % passes)
            st2 = q.status_settled(m.path)
            if len(entries(cache_on(c.nodes[0], name))) == n:
                break
        assert warnings(m) == w, m.log()
    assert st2["disk_cache"] and st2["disk_writes"] > 0, st2
    assert len(entries(cache_on(c.nodes[0], name))) == n, (passes, st2)
    print("  volume full: %s; writable again %.1f s after the filler was removed; then %d "
          "entries written by the same mount in %d reads (%d dropped)" % (
              w[0].split(WARNING)[1].strip(), waited, st2["disk_writes"], passes,
              st2["cache_queue"]["dropped"]))


@q.test
def entry_corrupted_on_one_brick():
    """One entry's last weight byte flipped on one brick only, behind Gluster's back (bit rot),
    the brick the clients read from (cluster.read-hash-mode 0: the first brick that is up,
    for this test): the copy read fails its checksum, is removed and written again; nodes 2
    and 3 serve the export's bytes, no warning; afterwards every brick holds the good entry."""
    c = cluster()
    c.settle()   # whole again after the previous case's fault
    src, files, n = model()
    name = "corrupt"
    fill(c, name)
    entry = entries(cache_on(c.nodes[0], name))[0]
    rel = os.path.relpath(entry, c.nodes[0].mnt)
    good = q.read_bytes(entry)
    with open(os.path.join(c.nodes[0].brick, rel), "r+b") as f:
        f.seek(len(good) - 1)
        f.write(bytes([good[-1] ^ 0x40]))
    quantized = []
    c.gluster("volume", "set", VOLUME, "cluster.read-hash-mode", "0")
    c.gluster("volume", "set", VOLUME, "cluster.choose-local", "off")
    try:
        for node in c.nodes[1:]:
            with mount_on(node, src, cache_on(node, name)) as m:
                assert_view(read_all(m, files), files, "node %d, corrupt copy" % node.i)
                quantized.append(status(m)["tensors_quantized"])
                assert not warnings(m), m.log()
    finally:
        c.gluster("volume", "reset", VOLUME, "cluster.read-hash-mode")
        c.gluster("volume", "reset", VOLUME, "cluster.choose-local")
    assert quantized == [1, 0], "tensors computed by nodes 2, 3: %s" % quantized
    for node in c.nodes:
        got = q.read_bytes(os.path.join(node.brick, rel))
        q.assert_bytes_equal(got, good, "brick of node %d after the rewrite" % node.i)
    print("  tensors recomputed by nodes 2, 3: %s" % quantized)


@q.test
def view_files_on_the_volume_when_asked():
    """-o view_files=on keeps complete view files on the volume all the same: after a whole
    read of the view on node 1 each model file has its view file there, served through the
    channel (the kernel passes no file of a FUSE filesystem through), with the export's bytes
    on a second mount."""
    c = cluster()
    src, files, n = model()
    name = fresh_cache(c, "viewfiles")
    n1 = c.nodes[0]
    shards = [rel for rel in files if rel.endswith(".safetensors")]
    with mount_on(n1, src, cache_on(n1, name), ["view_files=on"]) as m:
        assert_view(read_all(m, files), files, "node 1, view_files=on")
        deadline = time.monotonic() + 60
        while True:
            vf = status(m)["view_files"]
            if vf["present"] == len(shards) and vf["queued"] == 0:
                break
            assert time.monotonic() < deadline, "view files not written: %s\n%s" % (vf, m.log())
            time.sleep(0.2)
        assert vf["served_by"].startswith("channel:") and "FUSE" in vf["served_by"], vf
    with mount_on(n1, src, cache_on(n1, name), ["view_files=on"]) as m:
        assert_view(read_all(m, files), files, "node 1, from the view files")
        st = status(m)
    assert st["tensors_quantized"] == 0 and st["view_files"]["opens_channel"] > 0, st


@q.test
def cache_of_other_users_refused():
    """The trust rules hold on the volume: a cache directory there that others may write
    (mode 0777, made through node 1), or one owned by another uid (as a node running quarkfs
    under another uid would leave it), is refused on node 2 with one warning, and the view is
    served from memory."""
    c = cluster()
    src, files, n = model()
    for name, mode, uid, words in (("open", 0o777, 0, "writable by others"),
                                   ("foreign", 0o700, 4321, "owned by another user")):
        fresh_cache(c, name)
        os.makedirs(cache_on(c.nodes[0], name))
        os.chmod(cache_on(c.nodes[0], name), mode)
        os.chown(cache_on(c.nodes[0], name), uid, uid)
        with mount_on(c.nodes[1], src, cache_on(c.nodes[1], name)) as m:
            assert_view(read_all(m, files), files, "untrusted cache (%s)" % name)
            st = status(m)
            w = warnings(m)
        assert not st["disk_cache"] and st["tensors_quantized"] == n, (name, st)
        assert len(w) == 1 and words in w[0], (name, w)
        assert os.listdir(cache_on(c.nodes[0], name)) == [], "%s: written into" % name


if __name__ == "__main__":
    try:
        q.main()
    finally:
        for cl in _cluster:
            cl.stop()
