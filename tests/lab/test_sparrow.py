"""sparrow installed like a package on real systemd hosts: the leader
target and a leader-only unit follow leadership, survive crashes of nodes
and of the daemon in the right order, and cannot be started by hand on a
follower.  Opt-in: SPARROW_LAB=1."""

import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import lab  # noqa: E402

from sparrowlab import (AS_SPARROW, EXAMPLE, TARGET, SparrowLabCase,  # noqa: E402
                        assert_least_privilege, with_units)

# A unit the target waits for, slow to start: the target's start job stays
# pending for a minute.
SLOW = "lab-slow-start.service"
SLOW_UNIT = ("[Unit]\nBefore=%s\n[Service]\nType=oneshot\nExecStart=/bin/sleep 60\n"
             "[Install]\nWantedBy=%s\n" % (TARGET, TARGET))


class SparrowLab(SparrowLabCase):
    # -- the tests of the issue -------------------------------------------

    def test_1_exactly_one_leader_runs_the_units(self):
        holder = self.wait_one_holder()
        time.sleep(1)
        self.assertEqual(self.holders(), [holder])
        role = holder.sh("sparrowctl leader").stdout.split()[0]
        self.assertEqual(role, holder.name)
        # /run is the node's own tmpfs: the marker is looked for from inside.
        self.assertEqual(self.leader_state(holder)["marker"], "yes")
        for n in self.lab.members:
            if n is not holder:
                self.assertFalse(self.active(n, EXAMPLE))
                self.assertEqual(self.leader_state(n)["marker"], "no")

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

    @with_units({SLOW: SLOW_UNIT})
    def test_2b2_cut_off_leader_cancels_a_pending_start(self):
        deadline = time.monotonic() + 20
        starting = []
        while not starting:
            self.assertLess(time.monotonic(), deadline, "no leader starting %s" % TARGET)
            time.sleep(0.1)
            starting = [n for n in self.lab.members
                        if TARGET + "/start" in self.leader_state(n)["jobs"]]
        self.assertEqual(len(starting), 1, [n.name for n in starting])
        old = starting[0]
        self.assertEqual(self.role(old), "leader")
        rest = [n for n in self.lab.members if n is not old]
        old.cut()
        cut = time.monotonic()
        # The lease (about 530 ms) ends before any other node can win an
        # election: the start is cancelled then, not when it would have
        # ended (a minute on).  Looked at in this order, old holding after
        # a new leader was seen means two holders.
        new = None
        while True:
            new = new or next((n for n in rest if self.role(n) == "leader"), None)
            state = self.leader_state(old)
            if not self.holds(state):
                break
            if new:
                self.fail("%s leads while %s still has %s" % (new.name, old.name, state))
            self.assertLess(time.monotonic() - cut, 1.5, "%s still has %s" % (old.name, state))
            time.sleep(0.02)
        self.assertLess(time.monotonic() - cut, 1.5)
        deadline = time.monotonic() + 10
        while not new:
            self.assertLess(time.monotonic(), deadline, "no new leader")
            time.sleep(0.05)
            new = next((n for n in rest if self.role(n) == "leader"), None)
        state = self.leader_state(old)
        self.assertFalse(self.holds(state), state)

    def test_2c_stalled_daemon_is_fenced_by_its_keeper(self):
        old = self.wait_one_holder()
        old.sh("kill -STOP $(systemctl show --property=MainPID --value sparrow.service)")
        rest = [n for n in self.lab.members if n is not old]
        self.wait_one_holder(rest)
        self.wait_inactive(old)
        # At its lease end, or when the watchdog (which may fire first)
        # killed it: either way its keeper fenced it.
        keeper = old.sh("journalctl --no-pager -o cat -u sparrow-fence.service").stdout
        if "fence (lease ended)" in keeper:
            self.assertIn("killed sparrowd", keeper)
        else:
            self.assertIn("fence (sparrowd gone while holding)", keeper)
            self.assertIn("watchdog",
                          old.sh("journalctl --no-pager -u sparrow.service").stdout.lower())

    def test_2d_keeper_killed_the_holder_lets_go_at_once(self):
        """Without its fence keeper a node holds nothing: the keeper killed
        (-9), the holder stops holding at once, and holds again once
        systemd restarted the keeper."""
        old = self.wait_one_holder()
        old.sh("systemctl kill --signal=SIGKILL sparrow-fence.service")
        deadline = time.monotonic() + 5
        while json.loads(old.sh("sparrowctl --json status").stdout)["holder"]:
            self.assertLess(time.monotonic(), deadline, "%s still holds" % old.name)
            time.sleep(0.02)
        self.assertIn("fence keeper lost",
                      old.sh("journalctl --no-pager -o cat -u sparrow.service").stdout)
        deadline = time.monotonic() + 30
        while not json.loads(old.sh("sparrowctl --json status").stdout)["holder"]:
            self.assertLess(time.monotonic(), deadline, "%s does not hold again" % old.name)
            time.sleep(0.1)
        self.assertEqual(self.wait_one_holder(), old)

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

    def test_6b_a_stopped_node_stays_stopped(self):
        """No D-Bus activation: calls to a stopped node, even ones that ask
        the bus to start it (busctl's default), find nobody and start
        nothing."""
        holder = self.wait_one_holder()
        node = next(n for n in self.lab.members if n is not holder)
        node.sh("systemctl stop sparrow.target sparrow.service")
        for command in ("busctl get-property org.sparrow.cluster1 /org/sparrow/cluster1 "
                        "org.sparrow.cluster1.Manager Role",
                        "busctl --auto-start=yes call org.sparrow.cluster1 /org/sparrow/cluster1 "
                        "org.sparrow.cluster1.Store Get sb k true"):
            r = node.sh(command, check=False)
            self.assertNotEqual(r.returncode, 0, command)
            self.assertIn("org.sparrow.cluster1", r.stderr, command)
        r = node.sh("sparrowctl status", check=False)
        self.assertEqual(r.returncode, 6, r.stderr)
        time.sleep(1)
        for unit in ("sparrow.service", "sparrow.target"):
            self.assertEqual(node.sh("systemctl is-active " + unit, check=False).stdout.strip(),
                             "inactive", unit)

    def test_7_introspection_on_the_system_bus(self):
        holder = self.wait_one_holder()
        out = subprocess.run(["busctl", "--address=" + holder.bus, "introspect",
                              "org.sparrow.cluster1", "/org/sparrow/cluster1"],
                             capture_output=True, text=True, timeout=30).stdout
        for name in ("org.sparrow.cluster1.Manager", "org.sparrow.cluster1.Store",
                     ".TransferLeadership", ".Members", ".LeaseValid", ".CompareAndSwap",
                     ".Holder", ".Plugins"):
            self.assertIn(name, out)
        # The leader target is a plugin: on the bus, and in sparrowctl status.
        out = subprocess.run(["busctl", "--address=" + holder.bus, "get-property",
                              "org.sparrow.cluster1", "/org/sparrow/cluster1/plugin/leader_target",
                              "org.sparrow.cluster1.Plugin", "State"],
                             capture_output=True, text=True, timeout=30).stdout
        self.assertEqual(out.strip(), 's "active"')
        status = json.loads(holder.sh("sparrowctl --json status").stdout)
        self.assertTrue(status["holder"])
        self.assertEqual([(p["name"], p["state"]) for p in status["plugins"]],
                         [("leader-target", "active")])
        for n in self.lab.members:
            if n is not holder:
                status = json.loads(n.sh("sparrowctl --json status").stdout)
                self.assertEqual([(p["name"], p["state"]) for p in status["plugins"]],
                                 [("leader-target", "inactive")])

    def test_8_least_privilege(self):
        """sparrowd runs as user sparrow with CAP_NET_ADMIN and CAP_NET_RAW
        only, and that user may start and stop the leader target but
        nothing else: no transient unit (a command of its choice as root),
        no other unit, no unit file written."""
        holder = self.wait_one_holder()
        follower = next(n for n in self.lab.members if n is not holder)
        for n in self.lab.members:
            assert_least_privilege(self, n)
        out = holder.sh("systemd-analyze security --no-pager sparrow.service keepalived.service"
                        " | grep 'Overall exposure'").stdout
        print(out.strip())
        exposure = float(re.search(r"for sparrow\.service: ([0-9.]+)", out).group(1))
        self.assertLessEqual(exposure, 2.0)
        # As a compromised sparrowd would (its user, its bus policy).
        for command in ("systemd-run --unit=lab-evil /bin/true",
                        "systemctl start keepalived.service",
                        "systemctl stop sparrow.service",
                        "touch /run/systemd/system/lab-evil.service"):
            r = follower.sh(AS_SPARROW + command, check=False)
            self.assertNotEqual(r.returncode, 0, command)
            print("as sparrow, %s: %s" % (command, r.stderr.strip().splitlines()[0]))
        self.assertEqual(follower.sh("systemctl is-active sparrow.service").stdout.strip(),
                         "active")
        # What its rules do grant: the leader target (on a follower its
        # condition keeps it inactive).
        follower.sh(AS_SPARROW + "systemctl stop " + TARGET)
        follower.sh(AS_SPARROW + "systemctl start " + TARGET)
        self.assertFalse(self.active(follower, TARGET))
        self.assertEqual(self.holders(), [holder])


if __name__ == "__main__":
    lab.test_main()
