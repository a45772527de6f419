#!/usr/bin/python3
"""quarkfs on a 3-node GlusterFS cluster: one quantization for the cluster, and what a node that
comes later gains. Ratios of runs made side by side, medians over --reps.

Usage (as root; needs glusterfs-server and glusterfs-client: scripts/install-deps.sh --cluster):
    /usr/bin/python3 scripts/bench-cluster [--reps N] [--specs int8,uint4-g32] [--layers N]
        [--markdown FILE] [--json FILE] [--keep] [--tests]

The cluster is tests/integration/cluster.py's: 3 network namespaces on a private bridge, each
with glusterd, one tmpfs brick of a replica-3 volume and its own FUSE client mount of it; every
node runs its own quarkfs with cache_dir on its own client mount. The model is synthetic and
Llama-shaped (genmodel: hidden 1024, intermediate 2816, 8 heads, 4 kv heads, vocab 32000,
--layers, default 12: about 0.4 GiB of bf16), in the page cache. Per spec and repetition:

  nocache   node 1 reads the whole view through a fresh mount with cache=off (every tensor
            quantized by that node: what each node of a fleet pays without a shared cache);
  together  the three nodes read the whole view at the same moment, one empty cache
            directory on the volume: the sum of tensors_quantized must equal the number of
            quantized tensors (`quarkfs inspect`), and every node's bytes the export's;
  first     node 1 alone, empty cache directory (quantizes everything, writes the entries);
  local     the same with an empty cache directory on the host's own /tmp instead of the
            volume: what writing the entries to Gluster costs the first node;
  late      then node 2, a fresh mount on the same directory (reads every entry back through
            its own Gluster client; must quantize nothing).

Reads are `cat`-like: each file in 1 MiB reads into one buffer, timed; the bytes are then
checked (sha256, from the mount's page cache) against `quarkfs export --no-cache`. The order
of nocache, first/late and local rotates between repetitions. The bricks are tmpfs and the links are
veth pairs on one host: no disk and no real network, so these numbers are the software cost of
the Gluster stack (FUSE client, replication, locks) against the cost of quantizing, on this
machine; the load average is printed with each run (the machine may be shared).
"""

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
sys.path.insert(0, os.path.join(ROOT, "tests", "pylib"))
from cluster import Cluster  # noqa: E402
import stfile  # noqa: E402  which python has numpy

QUARKFS = os.path.abspath(os.environ.get("QUARKFS") or os.path.join(ROOT, "build", "quarkfs"))
PY = stfile.numpy_python()


def sh(args, **kw):
    p = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       **kw)
    if p.returncode != 0:
        raise RuntimeError("%s -> %d: %s%s" % (" ".join(map(str, args)), p.returncode,
                                               p.stdout.decode()[-2000:], p.stderr.decode()[-2000:]))
    return p.stdout.decode()


def mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(len(l.split()) > 4 and l.split()[4] == path for l in f)


class Mount:
    """quarkfs -f on a fresh mountpoint; .close() unmounts and waits for the process."""

    def __init__(self, tmp, src, spec, opts):
        self.path = tempfile.mkdtemp(prefix="mnt-", dir=tmp)
        self.proc = subprocess.Popen([QUARKFS, "-f", "--spec", spec, "-o", opts, src, self.path],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.path + ".log", "wb"))
        deadline = time.monotonic() + 30
        while not mounted(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mount failed: " + open(self.path + ".log").read())
            time.sleep(0.01)

    def status(self):
        return json.loads(sh([QUARKFS, "status", self.path, "--json"]))

    def close(self):
        for _ in range(50):
            if subprocess.run(["fusermount3", "-u", self.path]).returncode == 0:
                break
            time.sleep(0.1)
        self.proc.wait(timeout=30)
        os.rmdir(self.path)


def files_of(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, fs in os.walk(root) for f in fs)


def read_view(root, files):
    """Seconds to read every file in 1 MiB pieces (bytes discarded)."""
    buf = bytearray(1 << 20)
    t = time.monotonic()
    for rel in files:
        with open(os.path.join(root, rel), "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
    return time.monotonic() - t


def digests(root, files):
    out = {}
    for rel in files:
        h = hashlib.sha256()
        with open(os.path.join(root, rel), "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[rel] = h.hexdigest()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--specs", default="int8,uint4-g32")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--markdown")
    ap.add_argument("--json")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--tests", action="store_true",
                    help="first run the whole cluster test file, faults included "
                         "(tests/integration/test_cluster.py); stop if it fails")
    args = ap.parse_args()
    why = Cluster.missing()
    if why:
        sys.exit("bench-cluster: cannot build the cluster: " + why)
    if args.tests:
        # The fault cases wait on Gluster's reconnect timers: the test command runs only the
        # cluster-quick cases, this runs them all (with their own cluster) before the timings.
        env = dict(os.environ, QUARKFS=QUARKFS)
        rc = subprocess.call([PY, os.path.join(ROOT, "tests", "integration", "test_cluster.py")],
                             env=env)
        if rc != 0:
            sys.exit("bench-cluster: the cluster tests failed (exit %d)" % rc)
    tmp = tempfile.mkdtemp(prefix="quarkfs-bench-cluster-")
    cluster = None
    try:
        src = os.path.join(tmp, "model")
        print(sh([PY, os.path.join(ROOT, "tests", "fixtures", "genmodel.py"), src, "--preset", "demo",
                  "--hidden", 1024, "--intermediate", 2816, "--heads", 8, "--kv-heads", 4,
                  "--vocab", 32000, "--layers", args.layers, "--shards", 2]).strip())
        src_bytes = sum(os.path.getsize(os.path.join(src, f)) for f in os.listdir(src))
        specs = args.specs.split(",")
        expected, n_quantized, view_bytes = {}, {}, {}
        for spec in specs:
            out = os.path.join(tmp, "export-" + spec)
            sh([QUARKFS, "export", "--no-cache", "--spec", spec, src, out])
            files = files_of(out)
            expected[spec] = (files, digests(out, files))
            view_bytes[spec] = sum(os.path.getsize(os.path.join(out, f)) for f in files)
            shutil.rmtree(out)
            tensors = json.loads(sh([QUARKFS, "inspect", "--spec", spec, src, "--json"]))["tensors"]
            n_quantized[spec] = sum(1 for t in tensors if t["quantized"])
        brick_mb = int(max(view_bytes.values()) * 1.5 / (1 << 20)) + 64
        cluster = Cluster(os.path.join(tmp, "cluster"), nodes=3, brick_mb=brick_mb)
        t = time.monotonic()
        cluster.start()
        print("cluster of 3 nodes up in %.1f s (bricks: tmpfs of %d MiB)"
              % (time.monotonic() - t, brick_mb))
        results = []
        for spec in specs:
            files, want = expected[spec]
            for rep in range(args.reps):
                row = {"spec": spec, "rep": rep, "load": os.getloadavg()[0]}

                def check(m, what):
                    got = digests(m.path, files)
                    bad = [f for f in files if got[f] != want[f]]
                    if bad:
                        raise RuntimeError("%s: %s differ from the export" % (what, bad))

                def nocache():
                    m = Mount(tmp, src, spec, "cache=off")
                    try:
                        row["nocache"] = read_view(m.path, files)
                        check(m, "nocache")
                    finally:
                        m.close()

                def first_late():
                    cache = "fl%d" % rep
                    m1 = Mount(tmp, src, spec, "cache_dir=" + os.path.join(cluster.nodes[0].mnt,
                                                                         cache))
                    try:
                        row["first"] = read_view(m1.path, files)
                        check(m1, "first")
                        row["first_quantized"] = m1.status()["tensors_quantized"]
                    finally:
                        m1.close()
                    m2 = Mount(tmp, src, spec, "cache_dir=" + os.path.join(cluster.nodes[1].mnt,
                                                                         cache))
                    try:
                        row["late"] = read_view(m2.path, files)
                        check(m2, "late")
                        st = m2.status()
                        row["late_quantized"] = st["tensors_quantized"]
                        row["late_disk_hits"] = st["disk_hits"]
                    finally:
                        m2.close()
                    shutil.rmtree(os.path.join(cluster.nodes[0].mnt, cache), ignore_errors=True)

                def local():
                    cache = os.path.join(tmp, "local%d" % rep)
                    m = Mount(tmp, src, spec, "cache_dir=" + cache)
                    try:
                        row["local"] = read_view(m.path, files)
                        check(m, "local")
                    finally:
                        m.close()
                    shutil.rmtree(cache)

                steps = [nocache, first_late, local]
                for step in steps[rep % 3:] + steps[:rep % 3]:
                    step()
                cache = "tg%d" % rep
                mounts = [Mount(tmp, src, spec, "cache_dir=" + os.path.join(n.mnt, cache))
                          for n in cluster.nodes]
                try:
                    secs = [None] * 3
                    barrier = threading.Barrier(3)

                    def reader(i):
                        barrier.wait()
                        secs[i] = read_view(mounts[i].path, files)
                    threads = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
                    for th in threads:
                        th.start()
                    for th in threads:
                        th.join()
                    for i, m in enumerate(mounts):
                        check(m, "together, node %d" % (i + 1))
                    row["together"] = secs
                    row["together_quantized"] = [m.status()["tensors_quantized"] for m in mounts]
                finally:
                    for m in mounts:
                        m.close()
                shutil.rmtree(os.path.join(cluster.nodes[0].mnt, cache), ignore_errors=True)
                row["n_quantized"] = n_quantized[spec]
                results.append(row)
                print("%s rep %d: nocache %.2f s, first %.2f s, local %.2f s, late %.2f s "
                      "(quantized %d, hits %d), together %s s quantized %s (sum %d of %d), "
                      "load %.1f"
                      % (spec, rep, row["nocache"], row["first"], row["local"], row["late"],
                         row["late_quantized"], row["late_disk_hits"],
                         ["%.2f" % s for s in row["together"]], row["together_quantized"],
                         sum(row["together_quantized"]), n_quantized[spec], row["load"]),
                      flush=True)
        lines = ["Model: %.2f GiB of bf16 (%d layers); cluster: 3 GlusterFS 10.3 nodes (netns, "
                 "tmpfs bricks, replica 3); %d repetitions, medians; machine: %s, %d CPUs, "
                 "load average %.1f-%.1f" % (src_bytes / (1 << 30), args.layers, args.reps,
                                               os.uname().nodename, os.cpu_count(),
                                               min(r["load"] for r in results),
                                               max(r["load"] for r in results)), "",
                 "| spec | view GiB | quantized tensors | together: quantized per node (sum) "
                 "| together: slowest node s | nocache s | local s | first s | late s "
                 "| first / late | nocache / late | local / first |",
                 "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for spec in specs:
            rows = [r for r in results if r["spec"] == spec]
            med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
            ratio = lambda a, b: statistics.median(r[a] / r[b] for r in rows)  # noqa: E731
            per_node = "; ".join("%s (%d)" % (r["together_quantized"], sum(r["together_quantized"]))
                                 for r in rows)
            lines.append("| %s | %.2f | %d | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f "
                         "| %.2f |" % (
                             spec, view_bytes[spec] / (1 << 30), n_quantized[spec], per_node,
                             statistics.median(max(r["together"]) for r in rows),
                             med("nocache"), med("local"), med("first"), med("late"),
                             ratio("first", "late"), ratio("nocache", "late"),
                             ratio("local", "first")))
        table = "\n".join(lines)
        print("\n" + table)
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(table + "\n")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        bad = [r for r in results if sum(r["together_quantized"]) != r["n_quantized"]
               or r["late_quantized"] != 0]
        if bad:
            print("FAILED: a tensor was quantized more than once in the cluster, or by the late "
                  "node: %s" % bad)
            return 1
        return 0
    finally:
        if cluster:
            cluster.stop()
        if args.keep:
            print("kept " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
