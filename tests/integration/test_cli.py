"""The command line, progress, logs and status, as a user meets them: misspelled options and
commands, conflicting and malformed values, both spellings of every option, sources with
nothing to quantize, progress off a terminal, -o log_file, systemd's READY=1, the fields of
`quarkfs status`, and the warnings (int4 in awq, a non-empty or dead mountpoint, Mistral's
layout). Everything runs the real binary; mounts are real and always unmounted.
"""

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qfstest as q  # noqa: E402

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ")


def model():
    """The generator's demo model: two bf16 shards and an index."""
    return q.gen_model("demo", "bf16")


def one_shard():
    """One model.safetensors (5 layers, as stories260K)."""
    return q.gen_model("demo", "bf16", "--shards", "1", "--layers", "5")


@contextlib.contextmanager
def refused_mount(*args):
    """Runs `quarkfs ARGS... MNT` on a fresh mountpoint and yields (mnt, result); whatever got
    mounted is unmounted afterwards, and the test fails."""
    mnt = q.tmpdir("mnt")
    m = q.Mount(mnt, None, None, [])
    q._active_mounts.append(m)
    try:
        res = q.quarkfs(*(list(args) + [mnt]), timeout=60)
        yield mnt, res
        assert not q.is_mounted(mnt), "%s got mounted: %r" % (mnt, res)
    finally:
        m.daemon_pids = q.pids_serving(mnt)
        m.close()


def refused(args, rc, words):
    """A command that must fail with exit rc and a message holding each of words, mounting
    nothing. The last argument of a mount is MNT, added here."""
    with refused_mount(*args) as (mnt, res):
        assert res.returncode == rc, "%s: exit %d, expected %d: %r" % (args, res.returncode,
                                                                        rc, res)
        for w in words:
            assert w in res.stderr, "%s: stderr does not say %r: %r" % (args, w, res)
    return res


def status(mnt):
    res = q.quarkfs("status", "--json", mnt)
    assert res.returncode == 0, res
    return json.loads(res.stdout)


def config_of(root):
    with open(os.path.join(root, "config.json")) as f:
        return json.load(f)


def weight_scales(root):
    """Names of the quantized weights of a quark-format view, from its own headers (each has
    one X.weight_scale)."""
    out = []
    for name in sorted(os.listdir(root)):
        if name.endswith(".safetensors"):
            header, _, _ = q.st_header(os.path.join(root, name))
            out += [k for k in header if k.endswith(".weight_scale")]
    return out


# ---------------------------------------------------------------------------------------------
# Misspelled options and commands
# ---------------------------------------------------------------------------------------------

@q.test
def misspelled_option_is_named_with_the_nearest_one():
    src = model()
    refused(["--sepc", "int8", src], 2, ["unknown option '--sepc'", "did you mean --spec?"])
    refused(["--exclde", "lm_head", src], 2, ["'--exclde'", "--exclude"])
    refused(["-o", "sepc=int8", src], 2, ["-o sepc=int8", "did you mean -o spec="])
    refused(["-o", "cache_mme=1G", src], 2, ["cache_mme", "-o cache_mem="])
    refused(["--no", src], 2, ["'--no' is ambiguous"])
    # an option of another command says which command takes it
    refused(["--json", src], 2, ["--json is an option of inspect and status"])
    out = q.tmppath("out")
    res = q.quarkfs("export", "--readahead-kb", "64", src, out)
    assert res.returncode == 2 and "--readahead-kb is an option of mount" in res.stderr, res
    res = q.quarkfs("inspect", "--sepc", "fp8", src)
    assert res.returncode == 2 and "did you mean --spec?" in res.stderr, res
    res = q.quarkfs("warm", "--no-wiat", src)
    assert res.returncode == 2 and "--no-wait" in res.stderr, res
    assert not os.path.exists(out)


@q.test
def misspelled_command_is_named_not_mounted():
    src = model()
    out = q.tmppath("out")
    for argv, near in ((["expor", src, out], "export"), (["inspec", src], "inspect"),
                       (["stauts", src], "status"), (["wram", src], "warm")):
        res = q.run([q.QUARKFS] + argv, timeout=60)
        assert res.returncode == 2, res
        assert "unknown command '%s'" % argv[0] in res.stderr and near in res.stderr, res
        assert "commands: export, inspect, warm, status" in res.stderr, res
        assert not q.is_mounted(src) and not os.path.exists(out), res
    # options first, then the misspelled command: still named, not "unexpected argument"
    refused(["--spec", "int8", "expor", src], 2, ["unknown command 'expor'", "export"])
    # a word that is a path is a SRC, even without a slash
    cwd = os.path.dirname(src)
    mnt = q.tmpdir("mnt")
    m = q.Mount(mnt, None, None, [])
    q._active_mounts.append(m)
    try:
        res = q.run([q.QUARKFS, "-o", "cache=off", os.path.basename(src), mnt], cwd=cwd,
                    timeout=60)
        assert res.returncode == 0 and q.is_mounted(mnt), res
    finally:
        m.daemon_pids = q.pids_serving(mnt)
        m.close()


# ---------------------------------------------------------------------------------------------
# Values: strict numbers, both spellings, last one wins
# ---------------------------------------------------------------------------------------------

@q.test
def numbers_are_parsed_strictly():
    src = model()
    cases = [
        (["--threads", "4x"], "--threads 4x"),
        (["--threads", "0"], "--threads 0"),
        (["--threads", " 4"], "--threads  4"),
        (["--threads", "-2"], "--threads -2"),
        (["-o", "threads=4x"], "-o threads=4x"),
        (["-o", "threads=99999999999999999999"], "threads=99999999999999999999"),
        (["--cache-mem", "1Q"], "--cache-mem 1Q"),
        (["-o", "cache_mem=-1G"], "cache_mem=-1G"),
        (["-o", "cache_mem=1.5G"], "cache_mem=1.5G"),
        (["-o", "cache_size=12GB0"], "cache_size=12GB0"),
        (["-o", "readahead_kb=12k"], "readahead_kb=12k"),
        (["-o", "max_background=0"], "max_background=0"),
        (["--max-background", "70000"], "--max-background 70000"),
    ]
    for args, words in cases:
        refused(["-o", "cache=off"] + args + [src], 2, [words])
    out = q.tmppath("out")
    res = q.quarkfs("export", "--threads", "2y", src, out)
    assert res.returncode == 2 and "--threads 2y" in res.stderr and not os.path.exists(out), res


@q.test
def last_option_wins_across_spellings():
    """-o spec=fp8 --spec int8 is int8; --spec int8 -o spec=fp8 is fp8 (as mount(8) takes
    the last of repeated options)."""
    src = model()
    for argv, want in (([("-o", "spec=fp8"), ("--spec", "int8")], "int8"),
                       ([("--spec", "int8"), ("-o", "spec=fp8")], "fp8"),
                       ([("-o", "spec=int8,spec=fp8-channel")], "fp8-channel"),
                       ([("--format", "awq"), ("--spec", "uint4-g32"), ("-o", "format=quark")],
                        "uint4-g32")):
        flat = [a for pair in argv for a in pair]
        with q.mounted(src, spec=None, extra=flat) as m:
            st = status(m.path)
            assert st["spec"] == want, (flat, st["spec"])
            assert st["format"] == "quark", (flat, st["format"])
    # export: the same rule, judged by what it writes
    a = q.tmppath("out")
    res = q.quarkfs("export", "--spec", "fp8", "-o", "spec=int8-channel", src, a)
    assert res.returncode == 0, res
    ref = q.export(src, "int8-channel")
    q.assert_trees_equal(a, ref, "export --spec fp8 -o spec=int8-channel")


@q.test
def every_option_has_both_spellings():
    """--cache-mem on a mount, -o cache_mem / -o cache=off on export, --readahead-kb and
    --max-background on a mount."""
    src = model()
    with q.mounted(src, "int8", extra=["--cache-mem", "48M", "--readahead-kb", "0",
                                       "--max-background", "32", "--log", "info"]) as m:
        st = status(m.path)
        assert st["cache_mem"] == 48 << 20, st
    a, b = q.tmppath("out"), q.tmppath("out")
    res = q.run([q.QUARKFS, "export", "-o", "cache_mem=32M,cache=off,threads=1", src, a])
    assert res.returncode == 0, res
    res = q.run([q.QUARKFS, "export", "--cache-mem", "32M", "--no-cache", src, b])
    assert res.returncode == 0, res
    q.assert_trees_equal(a, b, "-o vs -- spellings")
    q.quarkref_check(src, a, "int8")
    res = q.quarkfs("inspect", "-o", "spec=fp8", "--json", src)
    assert res.returncode == 0 and json.loads(res.stdout)["spec"] == "fp8", res


# ---------------------------------------------------------------------------------------------
# Sources with nothing to quantize
# ---------------------------------------------------------------------------------------------

@q.test
def nothing_to_quantize_is_refused_unless_allow_empty():
    empty = q.tmpdir("empty")
    refused(["-o", "cache=off", empty], 1, ["nothing to quantize", "allow_empty"])
    git = q.tmpdir("gitrepo")
    os.makedirs(os.path.join(git, ".git"))
    with open(os.path.join(git, "README.md"), "w") as f:
        f.write("# a model card without weights\n")
    refused(["-o", "cache=off", git], 1, ["nothing to quantize", "model*.safetensors"])
    broken = q.copy_model(one_shard())
    with open(os.path.join(broken, "model.safetensors"), "r+b") as f:
        f.write(b"\xff" * 8)          # header length past the end of the file
    refused(["-o", "cache=off", broken], 1, ["nothing to quantize", "only model shard"])
    out = q.tmppath("out")
    res = q.quarkfs("export", empty, out)
    assert res.returncode == 1 and "nothing to quantize" in res.stderr, res
    assert not os.path.exists(out), "export of an empty source created %s" % out
    # allow_empty (both spellings): mounted, every file passed through
    with q.mounted(git, "int8", opts=["allow_empty"]) as m:
        assert q.read_bytes(m.p("README.md")) == q.read_bytes(os.path.join(git, "README.md"))
        assert "nothing to quantize" in m.log(), m.log()
    res = q.quarkfs("export", "--allow-empty", git, out)
    assert res.returncode == 0 and os.path.exists(os.path.join(out, "README.md")), res
    # one readable shard is enough (the broken one answers EIO): not refused
    two = q.copy_model(model())
    shard = sorted(q.model_files(two))[0]
    with open(os.path.join(two, shard), "r+b") as f:
        f.write(b"\xff" * 8)
    with q.mounted(two, "int8") as m:
        assert os.path.exists(m.p(shard))


@q.test
def mistral_layout_is_explained():
    src = q.tmpdir("mistral")
    shutil.copy(os.path.join(one_shard(), "model.safetensors"),
                os.path.join(src, "consolidated.safetensors"))
    with open(os.path.join(src, "params.json"), "w") as f:
        json.dump({"dim": 64, "n_layers": 5}, f)
    refused(["-o", "cache=off", src], 1, ["Mistral", "params.json", "allow_empty"])
    # next to a Hugging Face layout: mounted, with an info line
    both = q.copy_model(one_shard())
    for name in ("consolidated.safetensors", "params.json"):
        shutil.copy(os.path.join(src, name), os.path.join(both, name))
    with q.mounted(both, "int8") as m:
        assert "Mistral" in m.log() and "pass through unquantized" in m.log(), m.log()
        assert q.read_bytes(m.p("consolidated.safetensors")) == \
            q.read_bytes(os.path.join(both, "consolidated.safetensors"))


# ---------------------------------------------------------------------------------------------
# Warnings
# ---------------------------------------------------------------------------------------------

@q.test
def int4_in_awq_warns_everywhere():
    src = model()
    with q.mounted(src, "int4-g32", fmt="awq") as m:
        assert "AutoAWQ" in m.log() and "int4-g32" in m.log(), m.log()
    out = q.tmppath("out")
    res = q.quarkfs("export", "--spec", "int4-g32", "--format", "awq", src, out)
    assert res.returncode == 0 and "warning:" in res.stderr and "AutoAWQ" in res.stderr, res
    res = q.quarkfs("inspect", "--spec", "int4", "--format", "awq", src)
    assert res.returncode == 0 and "AutoAWQ" in res.stderr, res
    res = q.quarkfs("inspect", "--spec", "uint4-g32", "--format", "awq", src)
    assert res.returncode == 0 and "AutoAWQ" not in res.stderr, res


@q.test
def non_empty_mountpoint_warns_and_src_under_mnt_is_refused():
    src = model()
    mnt = q.tmpdir("mnt")
    for name in ("a", "b"):
        open(os.path.join(mnt, name), "w").close()
    m = q.Mount(mnt, None, None, [])
    q._active_mounts.append(m)
    try:
        res = q.run([q.QUARKFS, "-o", "cache=off", src, mnt], timeout=60)
        assert res.returncode == 0 and q.is_mounted(mnt), res
        assert "is not empty" in res.stderr and "2 entries" in res.stderr, res
        assert not os.path.exists(os.path.join(mnt, "a"))
    finally:
        m.daemon_pids = q.pids_serving(mnt)
        m.close()
    assert os.path.exists(os.path.join(mnt, "a")), "the hidden files are back after unmount"
    # SRC = MNT, or MNT above SRC: refused (the daemon reads SRC by path, which the view
    # would hide: a read would wait for itself)
    own = q.copy_model(src)
    for mnt in (own, os.path.dirname(own)):
        m = q.Mount(mnt, None, None, [])
        q._active_mounts.append(m)
        try:
            res = q.run([q.QUARKFS, "-o", "cache=off", own, mnt], timeout=60)
            assert res.returncode == 2 and "would hide the files it serves" in res.stderr, res
            assert not q.is_mounted(mnt), res
        finally:
            m.daemon_pids = q.pids_serving(mnt)
            m.close()


@q.test
def dead_mount_names_its_remedy():
    src = model()
    m = q.start_mount(src, "int8", foreground=False)
    try:
        for pid in m.daemon_pids:
            os.kill(pid, signal.SIGKILL)
        assert q.wait_gone(m.daemon_pids, 10) == []
        res = q.quarkfs("-o", "cache=off", src, m.path)
        assert res.returncode == 1, res
        assert "daemon of the quarkfs mount there is gone" in res.stderr and \
            "fusermount3 -uz %s" % m.path in res.stderr, res
        res = q.quarkfs("status", m.path)
        assert res.returncode == 1 and "fusermount3 -uz %s" % m.path in res.stderr, res
    finally:
        m.close()


# ---------------------------------------------------------------------------------------------
# Logs: -o log_file, timestamps, syslog missing, READY=1
# ---------------------------------------------------------------------------------------------

@q.test
def log_file_takes_the_daemons_messages():
    src = model()
    log = os.path.join(q.tmpdir("log"), "quarkfs.log")
    with q.mounted(src, "uint4-g32", opts=["log_file=" + log], foreground=False) as m:
        pids = m.daemon_pids
        q.read_bytes(m.p(q.model_files(src)[0]))
    with open(log) as f:
        lines = f.read().splitlines()
    serving = [l for l in lines if "serving %s on %s" % (src, m.path) in l]
    assert len(serving) == 1, lines
    assert STAMP.match(serving[0]), serving
    assert re.search(r" quarkfs\[(\d+)\]: serving ", serving[0]).group(1) in \
        [str(p) for p in pids], (serving, pids)
    # the scan's lines (before the fork) are there too, and nothing said syslog was missing
    assert any("cannot take them" in l for l in lines), lines
    assert not any("syslog" in l for l in lines), lines
    # in the foreground too: the file, not stderr
    log2 = os.path.join(q.tmpdir("log"), "fg.log")
    with q.mounted(src, "int8", opts=["log_file=" + log2]) as m:
        pass
    assert "serving " not in m.log(), m.log()
    with open(log2) as f:
        assert "serving " in f.read()
    refused(["-o", "log_file=/nonexistent/dir/x.log", src], 1, ["log_file /nonexistent/dir"])


@q.test
def foreground_lines_carry_the_time():
    with q.mounted(model(), "int8") as m:
        pass
    ours = [l for l in m.log().splitlines() if "quarkfs: " in l]
    assert ours and all(STAMP.match(l) for l in ours), m.log()


@q.test
def missing_syslog_is_said_once():
    """A daemon without /dev/log and without log_file warns (on the starter's stderr) that
    its later messages are lost."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        s.connect("/dev/log")
        raise q.Skip("a syslog daemon listens on /dev/log here (test_deploy checks the "
                     "syslog path)")
    except OSError:
        pass
    finally:
        s.close()
    src = model()
    mnt = q.tmpdir("mnt")
    mm = q.Mount(mnt, None, None, [])
    q._active_mounts.append(mm)
    try:
        res = q.quarkfs("-o", "cache=off", src, mnt)
        assert res.returncode == 0, res
        warn = [l for l in res.stderr.splitlines() if "/dev/log" in l]
        assert len(warn) == 1 and "log_file" in warn[0] and "warning:" in warn[0], res
    finally:
        mm.daemon_pids = q.pids_serving(mnt)
        mm.close()


class NotifyListener:
    """An AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET; notes whether the
    mount existed when each message arrived."""

    def __init__(self, abstract=False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if abstract:
            name = "quarkfs-test-%d-%d" % (os.getpid(), time.monotonic_ns())
            self.sock.bind("\0" + name)
            self.env = "@" + name
        else:
            self.env = os.path.join(q.tmpdir("notify"), "notify.sock")
            self.sock.bind(self.env)
        self.sock.settimeout(0.1)
        self.got, self.mnt, self.stop = [], None, False
        self.thread = threading.Thread(target=self.loop, daemon=True)
        self.thread.start()

    def loop(self):
        while not self.stop:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.got.append((data.decode(), self.mnt is not None and q.is_mounted(self.mnt)))

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


@q.test
def ready_is_sent_once_mounted():
    src = model()
    for abstract, foreground in ((False, True), (True, True), (False, False)):
        n = NotifyListener(abstract)
        try:
            env = dict(os.environ, NOTIFY_SOCKET=n.env)
            mnt = q.tmpdir("mnt")
            n.mnt = mnt
            args = [q.QUARKFS, "-o", "cache=off", src, mnt]
            mm = q.Mount(mnt, None, None, [])
            q._active_mounts.append(mm)
            proc = subprocess.Popen(args[:1] + (["-f"] if foreground else []) + args[1:],
                                    env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                deadline = time.monotonic() + 20
                while not any("READY=1" in g for g, _ in n.got) and time.monotonic() < deadline:
                    time.sleep(0.02)
                ready = [(g, up) for g, up in n.got if "READY=1" in g]
                assert len(ready) == 1, n.got
                msg, was_mounted = ready[0]
                assert was_mounted, "READY=1 came before the mount existed: %r" % msg
                pid = int(re.search(r"MAINPID=(\d+)", msg).group(1))
                assert pid in q.pids_serving(mnt), (msg, q.pids_serving(mnt))
                if foreground:
                    assert pid == proc.pid, (msg, proc.pid)
            finally:
                mm.daemon_pids = q.pids_serving(mnt)
                mm.close()
                proc.wait(timeout=20)
            deadline = time.monotonic() + 5
            while not any("STOPPING=1" in g for g, _ in n.got) and time.monotonic() < deadline:
                time.sleep(0.02)
            assert any("STOPPING=1" in g for g, _ in n.got), n.got
        finally:
            n.close()


# ---------------------------------------------------------------------------------------------
# status, warm
# ---------------------------------------------------------------------------------------------

def dir_bytes(root):
    total = 0
    for d, _, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(d, f)).st_size
    return total


@q.test
def status_shows_what_a_health_check_needs():
    src = q.copy_model(model())
    shard = sorted(q.model_files(src))[1]
    with open(os.path.join(src, shard), "r+b") as f:
        f.write(b"\xff" * 8)
    cache = q.tmpdir("cache")
    version = q.quarkfs("--version").stdout.split()[1]
    # view_files=off: a view file being written (and its reservation) would move the count
    # between the status call and the walk below.
    with q.mounted(src, "int8", opts=["cache_dir=" + cache, "cache_mem=40M",
                                      "view_files=off"]) as m:
        for name in q.model_files(src):
            with contextlib.suppress(OSError):
                q.read_bytes(m.p(name))
        st1 = status(m.path)
        time.sleep(0.3)
        st = q.status_settled(m.path)   # entries are written in the background
        assert st["version"] == version, st
        assert st["uptime_seconds"] >= st1["uptime_seconds"] + 0.25, (st1, st)
        assert st["cache_mem"] == 40 << 20 and 0 < st["memory_bytes"] <= st["cache_mem"], st
        assert st["cache_dir"] == cache, st
        # the writer is idle now: the directory is measured here (cache_size counts every
        # file in it: entries, memos, view files; lock files and markers are empty)
        assert st["cache_dir_bytes"] == dir_bytes(cache) > 0, (st, dir_bytes(cache))
        assert [b["file"] for b in st["broken_files"]] == [shard], st["broken_files"]
        assert shard in st["broken_files"][0]["error"], st["broken_files"]
        text = q.quarkfs("status", m.path)
        assert text.returncode == 0, text
        for words in ("quarkfs " + version, "memory", "of 41.9 MB (cache_mem)", cache,
                      "broken_files         1", shard):
            assert words in text.stdout, (words, text.stdout)
    with q.mounted(model(), "int8") as m:
        st = status(m.path)
        assert st["cache_dir"] is None and st["cache_dir_bytes"] == 0, st
        assert st["broken_files"] == [], st
        assert "disk cache           off" in q.quarkfs("status", m.path).stdout


@q.test
def warm_rounds_do_not_double_count():
    """`warm --no-wait` then `warm` while the first is half done: the round's total stays the
    number of quantized weights."""
    src = q.gen_model("llama", "bf16", "--layers", "4", "--hidden", "768",
                      "--intermediate", "2048", "--vocab", "512")
    n = len(weight_scales(q.export(src, "int8")))
    cache = q.tmpdir("cache")
    with q.mounted(src, "int8", opts=["cache_dir=" + cache, "threads=1"]) as m:
        res = q.quarkfs("warm", "--no-wait", m.path)
        assert res.returncode == 0, res
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            w = status(m.path)["warm"]
            if w["tensors_done"] > 0:
                break
            time.sleep(0.005)
        if w["tensors_done"] >= w["tensors"]:
            raise q.Skip("the warm-up finished before a second warm could join it")
        res = q.quarkfs("warm", m.path)
        assert res.returncode == 0, res
        w = status(m.path)["warm"]
        assert w["tensors"] == w["tensors_done"] == n, (w, n)
        assert "%d/%d tensors" % (n, n) in res.stderr, res


@q.test
def lower_cache_size_applies_at_mount():
    src = model()
    cache = q.tmpdir("cache")
    with q.mounted(src, "int8", opts=["cache_dir=" + cache]) as m:
        for name in q.tree_files(m.path):
            q.read_bytes(m.p(name))
    full = dir_bytes(os.path.join(cache, "v1"))
    budget = full // 3
    assert budget > 0
    with q.mounted(src, "int8", opts=["cache_dir=" + cache, "cache_size=%d" % budget]) as m:
        status(m.path)   # answered once the engine (and its disk cache) is open
        now = dir_bytes(os.path.join(cache, "v1"))
        assert now <= budget, "cache still %d bytes over a budget of %d (was %d)" % (
            now, budget, full)


# ---------------------------------------------------------------------------------------------
# Progress off a terminal
# ---------------------------------------------------------------------------------------------

def progress_lines(stderr, what):
    return [l for l in stderr.splitlines() if l.startswith(what + ": ")]


@q.test
def export_progress_off_a_terminal():
    src = model()
    out = q.tmppath("out")
    env = dict(os.environ, QUARKFS_PROGRESS_INTERVAL="0.000001")
    res = q.run([q.QUARKFS, "export", "--no-cache", src, out], env=env)
    assert res.returncode == 0, res
    assert "\r" not in res.stderr and "\033" not in res.stderr, repr(res.stderr)
    lines = progress_lines(res.stderr, "export")
    files = q.tree_files(out)
    total = sum(os.stat(os.path.join(out, f)).st_size for f in files)
    last = lines[-1]
    m = re.match(r"export: wrote (\d+) files?, ([\d.]+) (k?M?G?B), to .* in ([\d.]+) s "
                 r"\(([\d.]+) (k?M?G?B)/s\)$", last)
    assert m and int(m.group(1)) == len(files), (last, len(files))
    unit = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[m.group(3)]
    assert abs(float(m.group(2)) * unit - total) <= 0.01 * total, (last, total)
    steps = [float(re.match(r"export: +([\d.]+)%", l).group(1)) for l in lines[:-1]]
    assert steps and steps == sorted(steps) and steps[-1] <= 100.0, lines
    assert all(", about " in l or l.startswith("export: 100.0%") for l in lines[:-1]), lines
    # the default interval (10 s) prints only the summary for a quick export
    out2 = q.tmppath("out")
    res = q.quarkfs("export", src, out2)
    assert res.returncode == 0 and len(progress_lines(res.stderr, "export")) == 1, res
    # log=warning: quiet
    out3 = q.tmppath("out")
    res = q.quarkfs("export", "--log", "warning", src, out3)
    assert res.returncode == 0 and not progress_lines(res.stderr, "export"), res


@q.test
def inspect_error_and_warm_report_progress():
    src = model()
    env = dict(os.environ, QUARKFS_PROGRESS_INTERVAL="0.000001")
    res = q.run([q.QUARKFS, "inspect", "--error", "--json", src], env=env)
    assert res.returncode == 0, res
    doc = json.loads(res.stdout)
    n = doc["totals"]["quantized"]
    lines = progress_lines(res.stderr, "inspect")
    assert lines and lines[-1].startswith("inspect: quantized and compared %d tensors" % n), lines
    res = q.run([q.QUARKFS, "inspect", "--error", "--spec", "all", src], env=env)
    assert res.returncode == 0, res
    lines = progress_lines(res.stderr, "inspect")
    assert re.search(r"\d+/15 specs", lines[0]), lines
    assert lines[-1].startswith("inspect: quantized and compared 15 specs"), lines
    with q.mounted(src, "int8", opts=["cache_dir=" + q.tmpdir("cache")]) as m:
        res = q.quarkfs("warm", m.path)
        assert res.returncode == 0, res
        k = len(weight_scales(q.export(src, "int8")))
        assert progress_lines(res.stderr, "warm")[-1].startswith(
            "warm: %d/%d tensors" % (k, k)), res


# ---------------------------------------------------------------------------------------------
# inspect's output
# ---------------------------------------------------------------------------------------------

@q.test
def inspect_output():
    src = one_shard()
    res = q.quarkfs("inspect", src)
    assert res.returncode == 0 and ": 1 file, " in res.stdout, res.stdout[-300:]
    res = q.quarkfs("inspect", "--json", src)
    doc = json.loads(res.stdout)
    header, _, _ = q.st_header(os.path.join(src, "model.safetensors"))
    for row in doc["tensors"]:
        assert row["shape"] == header[row["name"]]["shape"], row
    # --spec all: a row that leaves weights unquantized says why
    res = q.quarkfs("inspect", "--spec", "all", "--json", src)
    rows = {r["spec"]: r for r in json.loads(res.stdout)}
    header_dims = {tuple(v["shape"]) for v in header.values() if len(v["shape"]) == 2}
    for spec, r in rows.items():
        if r["quantized"] < r["tensors"] and "not_quantized" in r:
            assert "the spec cannot take" in r["not_quantized"] or \
                r["not_quantized"] == "no weight to quantize", r
    assert any("not_quantized" in r for r in rows.values()), (rows, header_dims)
    table = q.quarkfs("inspect", "--spec", "all", "--error", src).stdout
    assert "NOT QUANTIZED" in table.splitlines()[0], table
    # max abs in one notation, d.ddde[+-]dd, in both tables
    for line in table.splitlines()[1:]:
        cols = line.split()
        if len(cols) > 6 and cols[4] != "-":
            assert re.match(r"^\d\.\d{3}e[+-]\d\d$", cols[6]), line
    table = q.quarkfs("inspect", "--error", src).stdout
    # NAME SHAPE SRC -> OUT SRC_BYTES VIEW_BYTES REL_RMS SNR MAX_ABS STATUS
    rows = [l.split() for l in table.splitlines()]
    rows = [c for c in rows if len(c) > 10 and c[3] == "->" and re.match(r"\d\.\d\de", c[7])]
    assert rows, table
    for cols in rows:
        assert re.match(r"^\d\.\d{3}e[+-]\d\d$", cols[9]), cols


if __name__ == "__main__":
    q.main()
