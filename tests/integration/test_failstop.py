"""Fail-stop, on real processes: a data directory that cannot be written
stops start-up, naming it."""

import errno
import os
import shutil
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
