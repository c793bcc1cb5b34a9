"""Fail-stop and fresh published state, on real processes: a node whose
data directory fills up gives everything up and exits for systemd to
restart it; a data directory that cannot be written stops start-up; a
leader resumed after a pause never answers with the lease it had."""

import errno
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster, main  # noqa: E402

MANAGER = "org.sparrow.cluster1.Manager"


class Bus:
    """A minimal D-Bus client over the node's bus socket: calls can be
    sent while the node is stopped and their answers read when it
    resumes, at a rate no client process could reach."""

    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.serial = 0
        self.sock.sendall(b"\0AUTH EXTERNAL %s\r\n" % str(os.geteuid()).encode().hex().encode())
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        if not line.startswith(b"OK"):
            raise RuntimeError("bus refused authentication: %r" % line)
        self.sock.sendall(b"BEGIN\r\n")
        self.reply(self.send("org.freedesktop.DBus", "/org/freedesktop/DBus",
                             "org.freedesktop.DBus", "Hello"))

    def close(self):
        self.sock.close()

    def _fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the bus closed the connection")
        self.buf += data

    def send(self, dest, path, iface, member, sig="", args=()):
        self.serial += 1
        fields = [(1, ("o", path)), (2, ("s", iface)), (3, ("s", member)), (6, ("s", dest))]
        if sig:
            fields.append((8, ("g", sig)))
        body = Writer()
        for t, a in zip(sig, args):
            body.put(t, a)
        head = Writer()
        head.raw(b"l\x01\x00\x01")
        head.put("u", len(body.data))
        head.put("u", self.serial)
        head.put("a(yv)", fields)
        head.pad(8)
        self.sock.sendall(head.data + body.data)
        return self.serial

    def read_message(self):
        while len(self.buf) < 16:
            self._fill()
        body_len, _, fields_len = struct.unpack_from("<III", self.buf, 4)
        head_len = 16 + fields_len + (-(16 + fields_len) % 8)
        while len(self.buf) < head_len + body_len:
            self._fill()
        msg, self.buf = self.buf[:head_len + body_len], self.buf[head_len + body_len:]
        fields = dict(Reader(msg[:head_len], 12).get("a(yv)"))
        body = Reader(msg[head_len:], 0).values(fields.get(8, ""))
        return msg[1], fields, body

    def reply(self, serial):
        """The answer to call serial (signals and other answers skipped)."""
        while True:
            kind, fields, body = self.read_message()
            if kind in (2, 3) and fields.get(5) == serial:
                if kind == 3:
                    raise RuntimeError("%s: %s" % (fields.get(4), body[0] if body else ""))
                return body

    def get_all(self, dest="org.sparrow.cluster1"):
        return self.send(dest, "/org/sparrow/cluster1", "org.freedesktop.DBus.Properties",
                         "GetAll", "s", [MANAGER])


ALIGN = {"y": 1, "g": 1, "v": 1, "n": 2, "q": 2, "b": 4, "i": 4, "u": 4, "s": 4, "o": 4, "a": 4,
         "x": 8, "t": 8, "d": 8, "(": 8, "{": 8}
FIXED = {"y": "B", "b": "I", "n": "h", "q": "H", "i": "i", "u": "I", "x": "q", "t": "Q", "d": "d"}


def one_type(sig, i=0):
    """The end of the single complete type starting at sig[i]."""
    if sig[i] == "a":
        return one_type(sig, i + 1)
    if sig[i] in "({":
        close = ")" if sig[i] == "(" else "}"
        i += 1
        while sig[i] != close:
            i = one_type(sig, i)
        return i + 1
    return i + 1


def types(sig):
    i = 0
    while i < len(sig):
        j = one_type(sig, i)
        yield sig[i:j]
        i = j


class Writer:
    def __init__(self):
        self.data = b""

    def raw(self, b):
        self.data += b

    def pad(self, n):
        self.data += b"\0" * (-len(self.data) % n)

    def put(self, t, v):
        self.pad(ALIGN[t[0]])
        if t in FIXED:
            self.data += struct.pack("<" + FIXED[t], v)
        elif t in "so":
            b = v.encode()
            self.data += struct.pack("<I", len(b)) + b + b"\0"
        elif t == "g":
            b = v.encode()
            self.data += bytes([len(b)]) + b + b"\0"
        elif t == "v":
            self.put("g", v[0])
            self.put(v[0], v[1])
        elif t[0] == "a":
            at = len(self.data)
            self.data += b"\0\0\0\0"  # the length, once known
            self.pad(ALIGN[t[1]])
            start = len(self.data)
            for item in v:
                self.put(t[1:], item)
            length = struct.pack("<I", len(self.data) - start)
            self.data = self.data[:at] + length + self.data[at + 4:]
        elif t[0] == "(":
            for sub, item in zip(types(t[1:-1]), v):
                self.put(sub, item)
        else:
            raise ValueError(t)


class Reader:
    def __init__(self, data, pos):
        self.data = data
        self.pos = pos

    def values(self, sig):
        return [self.get(t) for t in types(sig)]

    def get(self, t):
        self.pos += -self.pos % ALIGN[t[0]]
        if t in FIXED:
            v = struct.unpack_from("<" + FIXED[t], self.data, self.pos)[0]
            self.pos += struct.calcsize("<" + FIXED[t])
            return bool(v) if t == "b" else v
        if t in "so":
            n = struct.unpack_from("<I", self.data, self.pos)[0]
            v = self.data[self.pos + 4:self.pos + 4 + n].decode()
            self.pos += 4 + n + 1
            return v
        if t == "g":
            n = self.data[self.pos]
            v = self.data[self.pos + 1:self.pos + 1 + n].decode()
            self.pos += 1 + n + 1
            return v
        if t == "v":
            return self.get(self.get("g"))
        if t[0] == "a":
            n = struct.unpack_from("<I", self.data, self.pos)[0]
            self.pos += 4
            self.pos += -self.pos % ALIGN[t[1]]
            end = self.pos + n
            items = []
            while self.pos < end:
                items.append(self.get(t[1:]))
            return dict(items) if t[1] == "{" else items
        if t[0] in "({":
            return tuple(self.get(sub) for sub in types(t[1:-1]))
        raise ValueError(t)


def fill(path):
    """Writes a file under path until the filesystem is full."""
    fd = os.open(os.path.join(path, "fill"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)


class Disks:
    """Small tmpfs mounts as data directories (root only; else skipped)."""

    def __init__(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("mounting a small tmpfs as the data directory needs root")
        self.mounts = []

    def mount(self, node, size, options=""):
        point = os.path.join(node.dir, "disk")
        os.makedirs(point, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d,mode=0700%s" % (size, options),
                            "sparrow-test", point], capture_output=True, text=True)
        if r.returncode != 0:
            raise unittest.SkipTest("cannot mount a tmpfs: %s" % r.stderr.strip())
        self.mounts.append(point)
        node.data_dir = os.path.join(point, "data")
        return point

    def unmount(self, cluster):
        # The daemons first: their files are open in the mounts.
        for n in cluster.nodes:
            n.kill()
        for point in self.mounts:
            subprocess.run(["umount", point], check=True)


class Notify:
    """The node's sd_notify socket, as systemd would read it."""

    def __init__(self, test, node):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        test.addCleanup(self.sock.close)
        path = os.path.join(node.dir, "notify")
        self.sock.bind(path)
        self.sock.settimeout(30)
        node.extra_env = {"NOTIFY_SOCKET": path}
        self.got = []

    def until(self, pred):
        while not any(pred(m) for m in self.got):
            self.got.append(self.sock.recv(4096).decode())
        return next(m for m in self.got if pred(m))


class DiskFull(unittest.TestCase):
    """A node whose data directory fills up gives up at once, says why,
    and exits non-zero; once restarted with room nothing acknowledged is
    lost."""

    def setUp(self):
        self.c = Cluster(3)
        self.addCleanup(self.c.teardown)
        disks = Disks()
        self.addCleanup(disks.unmount, self.c)
        for n in self.c.nodes:
            disks.mount(n, 4 << 20)
        for n in self.c.nodes:
            n.write_config(self.c.nodes)
        self.notify = {n.name: Notify(self, n) for n in self.c.nodes}
        self.c.start()
        self.acked = {}

    def write(self, node, n, prefix):
        for i in range(n):
            key, value = "%s/%d" % (prefix, i), "v%d" % i
            node.ctl("set", key, value)
            self.acked[key] = value

    def monitor(self, node):
        m = node.monitor_properties()
        self.addCleanup(m.wait, 10)
        self.addCleanup(m.terminate)
        return m

    def check_failed(self, node, monitor, notify):
        # It exits on its own, with a failure status (not a crash, nor a
        # sanitizer's), and says why.
        self.assertEqual(node.proc.wait(timeout=30), 1)
        log = node.read_log()
        self.assertIn("No space left on device", log)
        self.assertIn(node.data_dir, log)
        status = notify.until(lambda m: m.startswith("STATUS=failed"))
        self.assertIn("No space left on device", status)
        self.assertIn(node.data_dir, status)
        # What it published last, before it went: nothing held.
        monitor.terminate()
        out = monitor.communicate(timeout=10)[0]
        self.assertRegex(out, r'string "Leader"\s+variant\s+string ""')
        return out

    def restart_with_room(self, node):
        os.unlink(os.path.join(os.path.dirname(node.data_dir), "fill"))
        node.start()
        leader = self.c.node(self.c.wait_leader(timeout=60))

        def holds_acked(n, stale):
            # A write that failed may or may not be applied: not counted.
            r = n.ctl("ls", *(["--stale"] if stale else []), check=False)
            if r.returncode != 0:
                return False
            held = {e["key"]: e["value"] for e in json.loads(r.stdout)}
            return all(held.get(k) == v for k, v in self.acked.items())

        self.c.wait(lambda: holds_acked(node, True), timeout=60,
                    what="the restarted node to hold every acknowledged write")
        self.assertTrue(holds_acked(leader, False))

    def test_leader(self):
        leader = self.c.node(self.c.wait_leader())
        term = leader.status()["term"]
        self.write(leader, 10, "before")
        monitor = self.monitor(leader)
        fill(os.path.dirname(leader.data_dir))
        r = leader.ctl("set", "big", "x" * 40000, check=False)
        self.assertNotEqual(r.returncode, 0, "a write the leader cannot store was acknowledged")
        self.assertIn("No space left on device", r.stdout + r.stderr)
        out = self.check_failed(leader, monitor, self.notify[leader.name])
        self.assertRegex(out, r'string "Role"\s+variant\s+string "follower"')
        self.assertRegex(out, r'string "LeaseValid"\s+variant\s+boolean false')
        others = [n for n in self.c.nodes if n is not leader]
        new = self.c.node(self.c.wait_leader(others))
        self.assertGreater(new.status()["term"], term)
        self.write(new, 10, "after")
        self.restart_with_room(leader)

    def test_follower(self):
        leader = self.c.node(self.c.wait_leader())
        follower = next(n for n in self.c.nodes if n is not leader)
        self.write(leader, 10, "before")
        monitor = self.monitor(follower)
        fill(os.path.dirname(follower.data_dir))
        # Committed with the other follower; this one cannot store it.
        leader.ctl("set", "big", "x" * 40000)
        self.acked["big"] = "x" * 40000
        self.check_failed(follower, monitor, self.notify[follower.name])
        self.write(leader, 10, "after")
        self.assertEqual(self.c.leader([leader]), leader.name)
        self.restart_with_room(follower)


class StartUp(unittest.TestCase):
    """A data directory that cannot be written stops start-up, naming it."""

    def start(self, prepare):
        c = Cluster(1)
        self.addCleanup(c.teardown)
        disks = Disks()
        self.addCleanup(disks.unmount, c)
        n = c.nodes[0]
        point = disks.mount(n, 256 << 10)
        n.write_config(c.nodes)
        os.makedirs(n.data_dir)
        prepare(point)
        n.start()
        self.assertEqual(n.proc.wait(timeout=30), 1)
        return n.read_log()

    def test_read_only(self):
        log = self.start(lambda point: subprocess.run(["mount", "-o", "remount,ro", point],
                                                      check=True))
        self.assertRegex(log, r"data directory \S*/disk/data is not writable: Read-only file system")

    def test_full(self):
        log = self.start(fill)
        self.assertRegex(log, r"data directory \S*/disk/data is full: No space left on device")


class Pause(unittest.TestCase):
    """SIGSTOP the leader until another holds the lease, SIGCONT: no
    property read answered after the resume claims the old lease."""

    def setUp(self):
        # Without fence keepers: one would kill the paused holder at its
        # lease end, which is what the keeper is for (test-keeper.py), not
        # what this test looks at.
        self.c = Cluster(3, keepers=False)
        self.addCleanup(self.c.teardown)
        self.c.start()

    def props(self, node):
        bus = Bus(node.bus_path)
        try:
            return bus.reply(bus.get_all())[0]
        finally:
            bus.close()

    def test_no_stale_lease_after_resume(self):
        old = self.c.node(self.c.wait_leader())
        self.c.wait(lambda: self.props(old)["LeaseValid"], what="the leader's lease")
        term = self.props(old)["Term"]
        others = [n for n in self.c.nodes if n is not old]
        # Connected before the pause; their calls wait in the socket.
        buses = [Bus(old.bus_path) for _ in range(4)]
        for b in buses:
            self.addCleanup(b.close)
        old.proc.send_signal(signal.SIGSTOP)
        self.addCleanup(lambda: old.running() and old.proc.send_signal(signal.SIGCONT))
        stopped = time.monotonic()

        def new_lease():
            for n in others:
                p = self.props(n)
                if p["Role"] == "leader" and p["LeaseValid"] and p["Term"] > term:
                    return n
            return None

        self.c.wait(new_lease, what="a new leader with a lease")
        time.sleep(max(0, 3 - (time.monotonic() - stopped)))
        self.c.wait(new_lease, what="the new leader's lease, at the end of the pause")
        pending = [(b, b.get_all()) for b in buses]
        old.proc.send_signal(signal.SIGCONT)
        resumed = time.monotonic()
        samples = [b.reply(serial)[0] for b, serial in pending]
        bus = buses[0]
        while time.monotonic() - resumed < 1.0:
            samples.append(bus.reply(bus.get_all())[0])
        stale = [s for s in samples if s["LeaseValid"] and s["Term"] == term]
        self.assertFalse(stale, "%d of %d answers after the resume claim the old lease, e.g. %r"
                         % (len(stale), len(samples), stale[:1]))
        self.assertGreater(len(samples), 20)


if __name__ == "__main__":
    main()
