#!/usr/bin/python3
"""Mount time against the number of tensors: does the work at mount grow as n log n or better?

For each N (default 100k, 200k, 500k, 1M) one model: one shard of N tiny bf16 weights [2, 8]
and an index naming them all (qfstest.many_tensors_model with names 'layers.%d.proj.weight',
short enough that a million tensors fit under the format's 100 MB header limit). Each of
--reps rounds (default 3) measures every N in turn; the table shows medians:

  mount    `quarkfs -f -o cache=off SRC MNT`, from spawn until stat of the view's shard
           answers: wall seconds, and the daemon's CPU seconds (utime + stime from /proc) at
           that moment, which other load on a shared machine disturbs much less than wall time
  inspect  `quarkfs inspect --spec int8 SRC > /dev/null` (the same model build, no FUSE, plus
           printing every tensor): wall and CPU seconds
  jansson  json_loadb + json_decref of the shard's header and of the index, nothing else, in
           CPU seconds (tests/bench/jansson_load.c, built by meson): the part of the work
           that belongs to the JSON library, against the mount's CPU seconds

and each one's ratio to the smallest N. Work linear in N has ratios equal to N's ratio.
With --baseline BIN (another quarkfs binary, e.g. an older build) its mount is timed in the
same rounds, right after this one's, and a second table gives both side by side.

Usage (as root: it mounts):
    /usr/bin/python3 tests/bench/mount_scale.py [--sizes 100000,200000,500000,1000000]
        [--reps 3] [--quarkfs PATH] [--baseline PATH] [--models DIR] [--json FILE]
--models DIR keeps the generated models there (and reuses them); by default they are made in
a temporary directory and removed. `meson test -C build --benchmark mount-scale` runs it.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
import qfstest as q   # noqa: E402  (the model generator)

NAME_FMT = "layers.%d.proj.weight"
SHARD = "model-00001-of-00001.safetensors"
INDEX = "model.safetensors.index.json"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_of(pid):
    """CPU seconds (user + system) of a live process."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def unmount(mnt, proc):
    subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        subprocess.run(["fusermount3", "-uz", mnt], capture_output=True)
        proc.wait()


def time_mount(quarkfs, src, tmp):
    """(wall s, daemon CPU s, view header bytes) of one mount; always unmounted."""
    mnt = tempfile.mkdtemp(prefix="mnt-", dir=tmp)
    log = open(mnt + ".log", "wb")
    t0 = time.monotonic()
    proc = subprocess.Popen([quarkfs, "-f", "-o", "cache=off", src, mnt],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        while not os.path.ismount(mnt):
            if proc.poll() is not None:
                raise RuntimeError("quarkfs exited with %d:\n%s"
                                   % (proc.returncode, open(mnt + ".log").read()))
            time.sleep(0.002)
        os.stat(os.path.join(mnt, SHARD))
        wall = time.monotonic() - t0
        cpu = cpu_of(proc.pid)
        with open(os.path.join(mnt, SHARD), "rb") as f:
            header = int.from_bytes(f.read(8), "little")
        return wall, cpu, header
    finally:
        unmount(mnt, proc)
        log.close()
        os.rmdir(mnt)


def time_inspect(quarkfs, src):
    before = os.times()
    t0 = time.monotonic()
    res = subprocess.run([quarkfs, "inspect", "--spec", "int8", src], stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    wall = time.monotonic() - t0
    after = os.times()
    if res.returncode != 0:
        raise RuntimeError("inspect failed: %s" % res.stderr.decode(errors="replace"))
    return wall, (after.children_user - before.children_user
                  + after.children_system - before.children_system)


def time_jansson(helper, src):
    """(CPU s, CPU s): jansson's load + free of the shard header, and of the index."""
    out = []
    for kind, path in (("st", os.path.join(src, SHARD)), ("json", os.path.join(src, INDEX))):
        res = subprocess.run([helper, kind, path], capture_output=True, text=True, check=True)
        words = res.stdout.split()
        out.append(float(words[1]) + float(words[3]))
    return tuple(out)


def ratio(a, b):
    return a / b if b else float("nan")   # CPU time counts in clock ticks: 0 for tiny N


def loadavg():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100000,200000,500000,1000000")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--quarkfs", default=os.environ.get("QUARKFS")
                    or os.path.join(ROOT, "build", "quarkfs"))
    ap.add_argument("--baseline", help="another quarkfs binary whose mount is timed alongside")
    ap.add_argument("--models", help="keep (and reuse) the generated models in this directory")
    ap.add_argument("--json", help="write every repetition to this file")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("mount_scale: run as root (it mounts)")
    helper = os.path.join(os.environ.get("QUARKFS_BENCH_BIN")
                          or os.path.join(ROOT, "build", "tests", "bench"), "jansson_load")
    if not os.access(helper, os.X_OK):
        sys.exit("mount_scale: %s is missing (ninja -C build builds it)" % helper)
    sizes = [int(s) for s in a.sizes.split(",")]
    tmp = tempfile.mkdtemp(prefix="quarkfs-mount-scale-", dir="/var/tmp")
    models = a.models or os.path.join(tmp, "models")
    try:
        srcs = {}
        for n in sizes:
            srcs[n] = os.path.join(models, "n%d" % n)
            if not os.path.isfile(os.path.join(srcs[n], INDEX)):
                t = time.monotonic()
                q.many_tensors_model(n, NAME_FMT, out=srcs[n])
                print("generated %d tensors in %.1f s" % (n, time.monotonic() - t), flush=True)
        runs = {n: [] for n in sizes}
        print("load average before: %s" % loadavg(), flush=True)
        for rep in range(a.reps):
            for n in sizes:
                mw, mc, vh = time_mount(a.quarkfs, srcs[n], tmp)
                iw, ic = time_inspect(a.quarkfs, srcs[n])
                jh, ji = time_jansson(helper, srcs[n])
                r = {"n": n, "mount_wall": mw, "mount_cpu": mc, "inspect_wall": iw,
                     "inspect_cpu": ic, "jansson_header": jh, "jansson_index": ji,
                     "view_header_bytes": vh,
                     "header_bytes": os.path.getsize(os.path.join(srcs[n], SHARD)) - 32 * n - 8}
                if a.baseline:
                    r["base_wall"], r["base_cpu"], _ = time_mount(a.baseline, srcs[n], tmp)
                runs[n].append(r)
                print("rep %d n=%d: mount %.2f s (cpu %.2f), inspect %.2f s (cpu %.2f), "
                      "jansson %.2f + %.2f s%s" % (rep + 1, n, mw, mc, iw, ic, jh, ji,
                                                   ", baseline mount %.2f s (cpu %.2f)"
                                                   % (r["base_wall"], r["base_cpu"])
                                                   if a.baseline else ""), flush=True)
        print("load average after: %s" % loadavg())
        med = {n: {k: statistics.median(r[k] for r in runs[n]) for k in runs[n][0]}
               for n in sizes}
        base = med[sizes[0]]
        print()
        print("quarkfs %s, medians of %d; ratio = value / value at N=%d" % (a.quarkfs, a.reps,
                                                                              sizes[0]))
        print("| N | N ratio | header MB (view) | mount s | ratio | mount CPU s | ratio | "
              "CPU us/tensor | inspect s | inspect CPU s | ratio | jansson header+index CPU s "
              "| ratio | jansson / mount CPU |")
        print("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n in sizes:
            m = med[n]
            jt = m["jansson_header"] + m["jansson_index"]
            bj = base["jansson_header"] + base["jansson_index"]
            print("| %d | %.1f | %.1f (%.1f) | %.2f | %.1f | %.2f | %.1f | %.1f | %.2f | %.2f "
                  "| %.1f | %.2f | %.1f | %.0f %% |"
                  % (n, n / sizes[0], m["header_bytes"] / 1e6, m["view_header_bytes"] / 1e6,
                     m["mount_wall"], ratio(m["mount_wall"], base["mount_wall"]), m["mount_cpu"],
                     ratio(m["mount_cpu"], base["mount_cpu"]), m["mount_cpu"] / n * 1e6,
                     m["inspect_wall"], m["inspect_cpu"], ratio(m["inspect_cpu"], base["inspect_cpu"]),
                     jt, ratio(jt, bj), 100 * ratio(jt, m["mount_cpu"])))
        if a.baseline:
            print()
            print("baseline %s, mounted in the same rounds; speedup = baseline / this" % a.baseline)
            print("| N | baseline mount s | this mount s | speedup | baseline mount CPU s | ratio "
                  "to N=%d | this mount CPU s | ratio to N=%d | CPU speedup |" % (sizes[0],
                                                                               sizes[0]))
            print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for n in sizes:
                m = med[n]
                print("| %d | %.2f | %.2f | %.1f | %.2f | %.1f | %.2f | %.1f | %.1f |"
                      % (n, m["base_wall"], m["mount_wall"], ratio(m["base_wall"], m["mount_wall"]),
                         m["base_cpu"], ratio(m["base_cpu"], base["base_cpu"]), m["mount_cpu"],
                         ratio(m["mount_cpu"], base["mount_cpu"]), ratio(m["base_cpu"], m["mount_cpu"])))
        if a.json:
            with open(a.json, "w") as f:
                json.dump({"quarkfs": a.quarkfs, "runs": runs}, f, indent=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
