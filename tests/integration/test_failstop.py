"""Fail-stop, on real processes: a node whose data directory fills up
gives everything up and exits for systemd to restart it; a data directory
that cannot be written stops start-up, naming it."""

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402

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

    def __init__(self, test):
        if os.geteuid() != 0:
            raise unittest.SkipTest("mounting a small tmpfs as the data directory needs root")
        self.mounts = []
        self.test = test

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
        disks = Disks(self)
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
        # It exits on its own, with a failure status, and says why.
        code = node.proc.wait(timeout=30)
        self.assertNotEqual(code, 0)
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
        disks = Disks(self)
        self.addCleanup(disks.unmount, c)
        n = c.nodes[0]
        point = disks.mount(n, 256 << 10)
        n.write_config(c.nodes)
        os.makedirs(n.data_dir)
        prepare(point)
        n.start()
        self.assertNotEqual(n.proc.wait(timeout=30), 0)
        return n.read_log()

    def test_read_only(self):
        log = self.start(lambda point: subprocess.run(["mount", "-o", "remount,ro", point],
                                                      check=True))
        self.assertRegex(log, r"data directory \S*/disk/data is not writable: Read-only file system")

    def test_full(self):
        log = self.start(fill)
        self.assertRegex(log, r"data directory \S*/disk/data is full: No space left on device")


if __name__ == "__main__":
    if not shutil.which("dbus-daemon"):
        print("skipped: dbus-daemon is not installed (apt-get install dbus-daemon)")
        sys.exit(77)
    result = unittest.main(verbosity=2, exit=False).result
    for _, reason in result.skipped:
        print("skipped: %s" % reason)
    if result.testsRun and len(result.skipped) == result.testsRun:
        sys.exit(77)  # meson: skipped
    sys.exit(0 if result.wasSuccessful() else 1)
