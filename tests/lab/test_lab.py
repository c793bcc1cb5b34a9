"""The lab itself: nodes boot real systemd with their own bus,
NetworkManager, chronyd and polkitd, talk over the lab bridge, can be cut
off and crashed, and leave nothing behind.  Opt-in: SPARROW_LAB=1."""

import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import lab  # noqa: E402


class LabTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        t0 = time.monotonic()
        cls.lab = lab.Lab(3)  # builds the rootfs unless it is cached
        took = cls.lab.up()
        print("lab: %d nodes and an observer booted in %.1f s; %.1f s with the rootfs"
              % (len(cls.lab.members), took, time.monotonic() - t0), file=sys.stderr)

    @classmethod
    def tearDownClass(cls):
        cls.lab.down()

    def test_1_nodes_boot_their_own_services(self):
        for n in self.lab.nodes:
            self.assertEqual(n.sh("systemctl is-system-running", check=False).stdout.strip(),
                             "running",
                             n.sh("systemctl --failed --no-legend", check=False).stdout)
            for unit in ("dbus", "NetworkManager", "chrony"):
                self.assertEqual(n.sh("systemctl is-active " + unit).stdout.strip(), "active")
            # polkitd is activated on the node's own bus.
            r = subprocess.run(["busctl", "--address=" + n.bus, "call",
                                "org.freedesktop.PolicyKit1", "/org/freedesktop/PolicyKit1/Authority",
                                "org.freedesktop.DBus.Properties", "Get", "ss",
                                "org.freedesktop.PolicyKit1.Authority", "BackendName"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("js", r.stdout)
            self.assertEqual(n.sh("hostname").stdout.strip(), n.name)

    def test_2_network_bridge_cut_and_arp(self):
        n1, n2 = self.lab.members[:2]
        self.assertEqual(n1.sh("ping -c1 -W2 " + n2.ip, check=False).returncode, 0)
        self.assertIs(self.lab.who_has(n2.ip), n2)
        n2.cut()
        self.assertNotEqual(n1.sh("ping -c1 -W1 " + n2.ip, check=False).returncode, 0)
        n2.cut(up=True)
        self.assertEqual(n1.sh("ping -c1 -W2 " + n2.ip, check=False).returncode, 0)

    def test_2b_observer_sees_who_answers(self):
        n1 = self.lab.members[0]
        with self.lab.watch([n1.ip, "10.77.0.99"]) as w:
            time.sleep(0.5)
        self.assertEqual(w.macs(), {n1.mac})
        self.assertEqual({s.address for s in w.samples}, {n1.ip})
        self.assertGreater(len(w.samples), 25)  # asked every 10 ms

    def test_3_pause_and_crash(self):
        n3 = self.lab.members[2]
        n3.pause()

        def states():
            out = []
            for p in n3.processes():
                with open("/proc/%d/stat" % p) as f:
                    out.append(f.read().rsplit(")", 1)[1].split()[0])
            return out

        deadline = time.monotonic() + 2
        while set(states()) != {"T"} and time.monotonic() < deadline:
            time.sleep(0.02)  # SIGSTOP lands asynchronously
        self.assertEqual(set(states()), {"T"})
        n3.resume()
        self.assertEqual(n3.sh("echo alive").stdout.strip(), "alive")
        n3.kill()
        self.assertIsNotNone(n3.proc.poll())


class Teardown(unittest.TestCase):
    def test_nothing_left_behind(self):
        self.assertEqual(lab.leftovers(), [])


if __name__ == "__main__":
    lab.test_main()
