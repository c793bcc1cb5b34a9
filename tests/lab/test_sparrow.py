"""sparrow installed like a package on real systemd hosts: the leader
target and a leader-only unit follow leadership, survive crashes of nodes
and of the daemon in the right order, and cannot be started by hand on a
follower.  Opt-in: SPARROW_LAB=1."""

import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import lab  # noqa: E402

SOURCE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLE = "sparrow-leader-example.service"
TARGET = "sparrow-leader.target"


class SparrowLab(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="sparrow-lab-stage-")
        cls.stage = lab.stage_sparrow(SOURCE, cls.work)
        cls.certs = os.path.join(cls.work, "certs")
        certs_tool = os.path.join(SOURCE, "tools", "sparrow-certs")
        lab.run(certs_tool, "ca", cls.certs)
        for i in range(3):
            lab.run(certs_tool, "node", cls.certs, "n%d" % (i + 1))

    @classmethod
    def tearDownClass(cls):
        lab.run("rm", "-rf", cls.work)

    def setUp(self):
        self.lab = lab.Lab(3, stage=self.stage, setup=self.configure)
        self.lab.up()
        self.addCleanup(self.lab.down)
        for n in self.lab.members:
            n.sh("systemctl enable %s && systemctl enable --now sparrow.target" % EXAMPLE)

    def configure(self, node):
        members = ";".join("%s=%s:7400" % (n.name, n.ip) for n in self.lab.members)
        lab.write(os.path.join(node.root, "etc/sparrow/sparrow.conf"),
                  "[node]\nname = %s\nlisten = %s:7400\n[cluster]\ninitial-members = %s\n"
                  "[tls]\nca = /etc/sparrow/tls/ca.pem\ncert = /etc/sparrow/tls/node.pem\n"
                  "key = /etc/sparrow/tls/node.key\n" % (node.name, node.ip, members))
        tls = os.path.join(node.root, "etc/sparrow/tls")
        os.makedirs(tls, exist_ok=True)
        for src, dst in (("ca.pem", "ca.pem"), (node.name + ".pem", "node.pem"),
                         (node.name + ".key", "node.key")):
            lab.run("cp", os.path.join(self.certs, src), os.path.join(tls, dst))
        # alice may change the cluster through polkit; bob may not.
        lab.write(os.path.join(node.root, "etc/polkit-1/rules.d/50-sparrow-test.rules"),
                  'polkit.addRule(function (action, subject) {\n'
                  '  if (action.id.indexOf("org.sparrow.cluster1.") == 0 && subject.user == "alice")\n'
                  '    return polkit.Result.YES;\n'
                  '});\n')
        # A workload that takes a while to stop, as real ones do: a new
        # leader that did not wait for it would start its copy meanwhile.
        lab.write(os.path.join(node.root, "etc/systemd/system", EXAMPLE + ".d", "slow-stop.conf"),
                  "[Service]\nExecStop=/bin/sleep 0.3\n")
        with open(os.path.join(self.stage, "usr/share/doc/sparrow/examples", EXAMPLE)) as f:
            lab.write(os.path.join(node.root, "usr/lib/systemd/system", EXAMPLE), f.read())

    # -- helpers ----------------------------------------------------------

    def active(self, node, unit):
        return node.sh("systemctl is-active " + unit, check=False).stdout.strip() == "active"

    def holders(self, nodes=None):
        """Members whose leader target and leader-only unit are active."""
        return [n for n in (nodes or self.lab.members)
                if self.active(n, TARGET) and self.active(n, EXAMPLE)]

    def wait_one_holder(self, nodes=None, timeout=15):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            h = self.holders(nodes)
            if len(h) == 1:
                return h[0]
            time.sleep(0.05)
        self.fail("no single holder of %s among %s" % (TARGET, [n.name for n in nodes or
                                                                 self.lab.members]))

    def wait_inactive(self, node, timeout=5):
        """Until node runs neither the target nor the leader-only unit."""
        deadline = time.monotonic() + timeout
        while self.active(node, EXAMPLE) or self.active(node, TARGET):
            if time.monotonic() > deadline:
                self.fail("%s still runs the leader-only units" % node.name)
            time.sleep(0.05)

    # -- the tests of the issue -------------------------------------------

    def test_1_exactly_one_leader_runs_the_units(self):
        holder = self.wait_one_holder()
        time.sleep(1)
        self.assertEqual(self.holders(), [holder])
        role = holder.sh("sparrowctl leader").stdout.split()[0]
        self.assertEqual(role, holder.name)
        for n in self.lab.members:
            if n is not holder:
                self.assertFalse(self.active(n, EXAMPLE))
                self.assertFalse(os.path.exists(os.path.join(n.root, "run/sparrow/leader")))

    def test_2_node_crash_moves_the_units(self):
        old = self.wait_one_holder()
        old.kill()
        rest = [n for n in self.lab.members if n is not old]
        new = self.wait_one_holder(rest)
        self.assertIsNot(new, old)

    def test_2b_cut_off_leader_lets_go_when_its_lease_ends(self):
        old = self.wait_one_holder()
        old.cut()
        rest = [n for n in self.lab.members if n is not old]
        new = self.wait_one_holder(rest)
        self.assertIsNot(new, old)
        # Its workloads follow the lease (DESIGN.md: the network goes first).
        self.wait_inactive(old)

    def test_2c_stalled_daemon_is_fenced_by_the_watchdog(self):
        old = self.wait_one_holder()
        old.sh("kill -STOP $(systemctl show --property=MainPID --value sparrow.service)")
        rest = [n for n in self.lab.members if n is not old]
        self.wait_one_holder(rest)
        self.wait_inactive(old)
        self.assertIn("watchdog", old.sh("journalctl --no-pager -u sparrow.service").stdout.lower())

    def test_3_planned_stop_hands_over(self):
        old = self.wait_one_holder()
        old.sh("systemctl stop sparrow.service")
        self.assertFalse(self.active(old, EXAMPLE))
        rest = [n for n in self.lab.members if n is not old]
        self.wait_one_holder(rest, timeout=5)

    def test_3b_transfer_stops_units_before_the_new_leader_starts_them(self):
        old = self.wait_one_holder()
        new = next(n for n in self.lab.members if n is not old)
        old.sh("sparrowctl transfer " + new.name)
        self.assertIs(self.wait_one_holder(), new)

        def last(node, word):
            """Monotonic time (µs) of the journal's last "<word> <unit>" line:
            one kernel, one monotonic clock for every node."""
            out = node.sh("journalctl --no-pager -o json -u %s" % EXAMPLE).stdout
            stamps = [int(json.loads(line)["__MONOTONIC_TIMESTAMP"]) for line in out.splitlines()
                      if json.loads(line).get("MESSAGE", "").startswith(word + " ")]
            self.assertTrue(stamps, "no %s line on %s" % (word, node.name))
            return stamps[-1]

        self.assertLess(last(old, "Stopped"), last(new, "Started"))

    def test_4_daemon_crash_stops_units_and_restart_does_not_bring_them_back(self):
        old = self.wait_one_holder()
        old.sh("kill -9 $(systemctl show --property=MainPID --value sparrow.service)")
        rest = [n for n in self.lab.members if n is not old]
        self.wait_one_holder(rest)
        seen = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            seen.append(old.sh("systemctl is-active %s" % EXAMPLE, check=False).stdout.strip())
            time.sleep(0.01)
        self.assertNotIn("active", seen)
        self.assertEqual(old.sh("systemctl is-active sparrow.service", check=False)
                         .stdout.strip(), "active")

    def test_5_no_leader_units_by_hand_on_a_follower(self):
        holder = self.wait_one_holder()
        follower = next(n for n in self.lab.members if n is not holder)
        follower.sh("systemctl start %s" % EXAMPLE, check=False)
        time.sleep(0.5)
        self.assertFalse(self.active(follower, EXAMPLE))
        self.assertFalse(self.active(follower, TARGET))

    def test_6_polkit_decides_who_may_change(self):
        holder = self.wait_one_holder()
        holder.sh("useradd --no-create-home alice && useradd --no-create-home bob")
        out = holder.sh("pkaction --verbose --action-id org.sparrow.cluster1.write-store").stdout
        self.assertIn("auth_admin_keep", out)

        def as_user(user, command):
            return holder.sh("setpriv --reuid=%s --regid=%s --init-groups sparrowctl %s"
                             % (user, user, command), check=False)

        for command in ("set k bob", "transfer", "members remove n3"):
            r = as_user("bob", command)
            self.assertEqual(r.returncode, 1, command)
            self.assertIn("not authorized for org.sparrow.cluster1.", r.stderr)
        self.assertEqual(as_user("bob", "get k").returncode, 4)  # reading is open
        r = as_user("alice", "set k alice")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(holder.sh("sparrowctl set k root").returncode, 0)
        self.assertEqual(as_user("bob", "get k").stdout.strip(), "root")

    def test_7_introspection_on_the_system_bus(self):
        holder = self.wait_one_holder()
        out = subprocess.run(["busctl", "--address=" + holder.bus, "introspect",
                              "org.sparrow.cluster1", "/org/sparrow/cluster1"],
                             capture_output=True, text=True, timeout=30).stdout
        for name in ("org.sparrow.cluster1.Manager", "org.sparrow.cluster1.Store",
                     ".TransferLeadership", ".Members", ".LeaseValid", ".CompareAndSwap"):
            self.assertIn(name, out)


if __name__ == "__main__":
    lab.test_main()
