"""A GlusterFS cluster of N nodes on this machine, for the shared disk cache tests and benchmark.

Each node is a network namespace with its own address on a private bridge (veth pair), running
its own glusterd and one brick (a small tmpfs) of a replica-N volume, and mounting that volume
with the FUSE client through its own address. glusterd keeps its state in /var/lib/glusterd and
its sockets in /run: each node's glusterd runs in a private mount namespace where those are the
node's own directories, so the host keeps nothing. The client mounts live in the host's mount
namespace (only their process sits in the node's network namespace), so quarkfs and the test
read them as ordinary paths, while cutting a node's link cuts that node's client and server.

Everything is started by Cluster.start() and removed by Cluster.stop() in every path (also at
exit): client mounts, every process in the namespaces, the brick tmpfs, the namespaces, the
bridge, the state directory. Nothing else of the host's network is touched: the bridge has no
address and the node addresses exist only inside their namespaces.

Needs root, ip(8), nsenter/unshare (util-linux) and Debian's glusterfs-server and
glusterfs-client; Cluster.missing() says what is absent (the caller skips with that reason).
"""

import atexit
import contextlib
import os
import shutil
import signal
import subprocess
import time

TOOLS = ["ip", "nsenter", "unshare", "glusterd", "gluster", "glusterfs"]
VOLUME = "qfsgv"


def _which(name):
    for d in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return shutil.which(name)


def _sh(args, timeout=60, check=True):
    p = subprocess.run([str(a) for a in args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, timeout=timeout)
    out = p.stdout.decode("utf-8", "replace")
    if check and p.returncode != 0:
        raise RuntimeError("%s -> rc %d: %s" % (" ".join(str(a) for a in args), p.returncode,
                                                out.strip()))
    return out


def _mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(len(l.split()) > 4 and l.split()[4] == path for l in f)


class Node:
    """One node: .i (1..N), .ns (netns name), .addr, .veth (host end), .brick, .mnt (the
    volume's client mount on this node), .holder (pid of the process holding its mount ns)."""

    def __init__(self, cluster, i):
        self.i = i
        self.ns = "%sn%d" % (cluster.tag, i)
        self.veth = "%sh%d" % (cluster.tag, i)
        self.addr = "%s.%d" % (cluster.subnet, i)
        self.dir = os.path.join(cluster.root, "node%d" % i)
        self.brick_fs = os.path.join(self.dir, "brickfs")
        self.brick = os.path.join(self.brick_fs, "b")
        self.mnt = os.path.join(self.dir, "volume")
        self.holder = None

    def run(self, *args, timeout=60, check=True):
        """A command in this node's network and (private) mount namespace."""
        return _sh(["nsenter", "-t", self.holder.pid, "-m", "-n"] + list(args), timeout, check)

    def pids(self, comm=None):
        """Processes in this node's network namespace (glusterd, bricks, the client), by name."""
        out = []
        for p in _sh(["ip", "netns", "pids", self.ns], check=False).split():
            try:
                with open("/proc/%s/comm" % p) as f:
                    c = f.read().strip()
            except OSError:
                continue
            if comm is None or c == comm:
                out.append(int(p))
        return out


class Cluster:
    """N GlusterFS nodes with one replica-N volume; see the module's docstring."""

    def __init__(self, root, nodes=3, brick_mb=64, ping_timeout=5):
        self.root = root
        self.tag = "qc%d" % (os.getpid() % 100000)        # interface names: at most 15 chars
        self.bridge = self.tag + "br"
        self.subnet = "10.%d.%d" % (200 + os.getpid() % 50, (os.getpid() // 50) % 250)
        self.brick_mb = brick_mb
        self.ping_timeout = ping_timeout
        self.nodes = [Node(self, i) for i in range(1, nodes + 1)]
        self.started = False

    @staticmethod
    def missing():
        """None, or why a cluster cannot be built here."""
        if os.geteuid() != 0:
            return "needs root (network namespaces, glusterd, mounts)"
        absent = [t for t in TOOLS if not _which(t)]
        if absent:
            return ("%s not installed (Debian: apt-get install glusterfs-server glusterfs-client;"
                    " scripts/install-deps.sh --cluster)" % ", ".join(absent))
        if not os.path.exists("/dev/fuse"):
            return "/dev/fuse is missing"
        return None

    def start(self):
        """Bridge, namespaces, glusterds, peers, the volume, one client mount per node."""
        atexit.register(self.stop)
        self.started = True
        os.makedirs(self.root, exist_ok=True)
        _sh(["ip", "link", "add", self.bridge, "type", "bridge"])
        _sh(["ip", "link", "set", self.bridge, "up"])
        for n in self.nodes:
            _sh(["ip", "netns", "add", n.ns])
            _sh(["ip", "link", "add", n.veth, "type", "veth", "peer", "name", "eth0",
                 "netns", n.ns])
            _sh(["ip", "link", "set", n.veth, "master", self.bridge, "up"])
            _sh(["ip", "-n", n.ns, "addr", "add", n.addr + "/24", "dev", "eth0"])
            _sh(["ip", "-n", n.ns, "link", "set", "eth0", "up"])
            _sh(["ip", "-n", n.ns, "link", "set", "lo", "up"])
            for d in ("lib", "log", "brickfs", "volume"):
                os.makedirs(os.path.join(n.dir, d), exist_ok=True)
            _sh(["mount", "-t", "tmpfs", "-o", "size=%dm,mode=0755" % self.brick_mb, "tmpfs",
                 n.brick_fs])
            # The node's mount namespace: its own /run (glusterd's socket, brick pid files),
            # /var/lib/glusterd and /var/log/glusterfs; a sleeping process holds it.
            script = ("mount -t tmpfs tmpfs /run && mount --bind %s /var/lib/glusterd && "
                      "mount --bind %s /var/log/glusterfs && echo ready && exec sleep 1000000"
                      % (os.path.join(n.dir, "lib"), os.path.join(n.dir, "log")))
            n.holder = subprocess.Popen(["nsenter", "--net=/run/netns/" + n.ns, "unshare", "-m",
                                         "--propagation", "private", "sh", "-c", script],
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT)
            line = n.holder.stdout.readline().decode().strip()
            if line != "ready":
                raise RuntimeError("node %d: namespace setup failed: %s" % (n.i, line))
        for n in self.nodes:
            n.run("glusterd", "-p", "/run/glusterd.pid")
        self.wait_glusterd()
        for n in self.nodes[1:]:
            self.gluster("peer", "probe", n.addr)
        self._wait(lambda: self.gluster("pool", "list").count("Connected") == len(self.nodes),
                   30, "peers connected")
        bricks = ["%s:%s" % (n.addr, n.brick) for n in self.nodes]
        self._wait(lambda: self._try_create(bricks), 30, "volume create")
        # A node whose link is cut must make its clients fail (ENOTCONN) after a few seconds,
        # not after Gluster's default 42 s: the timeout the shared cache's readers see.
        self.gluster("volume", "set", VOLUME, "network.ping-timeout", str(self.ping_timeout))
        self.gluster("volume", "start", VOLUME)
        for n in self.nodes:
            self.mount_client(n)

    def _try_create(self, bricks):
        out = self.gluster("volume", "create", VOLUME, "replica", str(len(bricks)), *bricks,
                           "force", check=False)
        return "success" in out

    def wait_glusterd(self):
        for n in self.nodes:
            self._wait(lambda n=n: "Connected" in n.run("gluster", "--mode=script", "pool",
                                                         "list", check=False),
                       30, "glusterd of node %d" % n.i)

    def gluster(self, *args, node=None, check=True):
        """The gluster CLI on a node (default the first), in script mode."""
        return (node or self.nodes[0]).run("gluster", "--mode=script", *args, timeout=120,
                                           check=check)

    def mount_client(self, n):
        """The volume's FUSE client on node n, through n's own address and network."""
        if _mounted(n.mnt):
            return
        _sh(["nsenter", "--net=/run/netns/" + n.ns, "glusterfs", "--volfile-server=" + n.addr,
             "--volfile-id=" + VOLUME, "--log-file=" + os.path.join(n.dir, "client.log"),
             "--pid-file=" + os.path.join(n.dir, "client.pid"), n.mnt])
        self._wait(lambda: _mounted(n.mnt) and os.path.isdir(n.mnt), 30,
                   "client mount of node %d" % n.i)
        # The volume is reachable once a write through this client is seen by the bricks.
        probe = os.path.join(n.mnt, ".probe-%d" % n.i)
        self._wait(lambda: _write_ok(probe), 30, "writes through node %d" % n.i)
        os.unlink(probe)

    def unmount_client(self, n):
        if _mounted(n.mnt):
            _sh(["umount", n.mnt], check=False, timeout=60)
            if _mounted(n.mnt):
                _sh(["umount", "-l", n.mnt], check=False)
        for pid in n.pids("glusterfs"):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

    def link(self, n, up):
        """Plug or unplug node n's cable (the host end of its veth)."""
        _sh(["ip", "link", "set", n.veth, "up" if up else "down"])

    def kill_brick(self, n):
        """SIGKILL the brick process of node n; returns its pid."""
        pids = n.pids("glusterfsd")
        if not pids:
            raise RuntimeError("node %d runs no brick process" % n.i)
        for p in pids:
            os.kill(p, signal.SIGKILL)
        return pids[0]

    def restart_bricks(self, timeout=120):
        """Start the bricks that are down again and wait until every one is online. A brick
        killed with SIGKILL can fail its first restart on a loaded machine (its old port is
        still registered with glusterd), so the start is asked again every 15 s."""
        def online():
            return self.gluster("volume", "status", VOLUME, "detail",
                                check=False).count("Online               : Y") == len(self.nodes)
        deadline = time.monotonic() + timeout
        while True:
            self.gluster("volume", "start", VOLUME, "force", check=False)
            try:
                self._wait(online, min(15, max(1, deadline - time.monotonic())),
                           "bricks online")
                return
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise

    def heal(self):
        """Ask the self-heal daemon to heal now (after a brick came back)."""
        self.gluster("volume", "heal", VOLUME, check=False)

    def settle(self, timeout=120):
        """Waits until the volume is whole again after a fault: every brick online and
        connected, nothing left to heal, and a file can be made through every node's client.
        Each fault case starts from there, not from what the previous one left behind."""
        def healed():
            info = self.gluster("volume", "heal", VOLUME, "info", check=False)
            counts = [l.split(":", 1)[1].strip() for l in info.splitlines()
                      if l.startswith("Number of entries:")]
            return (info.count("Status: Connected") == len(self.nodes) and
                    len(counts) == len(self.nodes) and all(c == "0" for c in counts))
        deadline = time.monotonic() + timeout
        self.restart_bricks(timeout=timeout)
        self.heal()
        self._wait(healed, max(1, deadline - time.monotonic()), "the volume healed")
        for n in self.nodes:
            probe = os.path.join(n.mnt, ".settle-%d" % n.i)
            self._wait(lambda p=probe: _write_ok(p) and os.unlink(p) is None,
                       max(1, deadline - time.monotonic()), "node %d writable" % n.i)

    def stop(self):
        """Removes everything start() made; safe to call twice and after a partial start."""
        if not self.started:
            return
        self.started = False
        for n in self.nodes:
            with contextlib.suppress(Exception):
                self.link(n, True)
        for n in self.nodes:
            with contextlib.suppress(Exception):
                self.unmount_client(n)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for n in self.nodes:
                for pid in n.pids():
                    with contextlib.suppress(OSError):
                        os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while any(n.pids() for n in self.nodes) and time.monotonic() < deadline:
                time.sleep(0.1)
        for n in self.nodes:
            if n.holder is not None:
                with contextlib.suppress(OSError):
                    n.holder.kill()
                n.holder.wait()
            if _mounted(n.brick_fs):
                _sh(["umount", "-l", n.brick_fs], check=False)
            _sh(["ip", "netns", "del", n.ns], check=False)
            _sh(["ip", "link", "del", n.veth], check=False)
        _sh(["ip", "link", "del", self.bridge], check=False)
        if not any(_mounted(os.path.join(n.dir, d)) for n in self.nodes
                   for d in ("brickfs", "volume")):
            shutil.rmtree(self.root, ignore_errors=True)

    @staticmethod
    def _wait(cond, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            try:
                if cond():
                    return
            except (OSError, RuntimeError, subprocess.TimeoutExpired):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("cluster: %s not reached within %d s" % (what, timeout))
            time.sleep(0.2)


def _write_ok(path):
    with open(path, "w") as f:
        f.write("x")
    return True
