"""Integration tests: what an admin would check on a real cluster."""

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cluster import SPARROWCTL, SPARROWD, Cluster, Node, main  # noqa: E402


class ClusterTest(unittest.TestCase):
    size = 3
    tls = False
    snapshot_entries = 10000

    def setUp(self):
        self.c = Cluster(self.size, tls=self.tls, snapshot_entries=self.snapshot_entries)
        self.addCleanup(self.c.teardown)
        self.c.start()

    def set(self, node, key, value):
        return json.loads(node.ctl("set", key, value).stdout)["revision"]

    def get(self, node, key, stale=True):
        args = ["get", key] + (["--stale"] if stale else [])
        r = node.ctl(*args, check=False)
        return json.loads(r.stdout)["value"] if r.returncode == 0 else None


class ThreeNodes(ClusterTest):
    def test_elects_one_leader(self):
        leader = self.c.wait_leader()
        self.assertEqual(self.c.leaders(), [leader])
        status = self.c.node(leader).status()
        self.assertTrue(status["lease_valid"])
        self.assertEqual(sorted(m["name"] for m in status["members"]), ["n1", "n2", "n3"])
        self.c.wait(lambda: all(m["reachable"] for m in self.c.node(leader).status()["members"]),
                    what="every member reachable from the leader")

    def test_write_is_readable_everywhere_and_survives_full_restart(self):
        leader = self.c.node(self.c.wait_leader())
        rev = self.set(leader, "vip", "10.77.0.100")
        self.assertGreater(rev, 0)
        self.assertEqual(self.get(leader, "vip", stale=False), "10.77.0.100")
        for n in self.c.nodes:
            self.c.wait(lambda n=n: self.get(n, "vip") == "10.77.0.100", what="replication")
        follower = next(n for n in self.c.nodes if n is not leader)
        r = follower.ctl("set", "vip", "x", check=False)
        self.assertEqual(r.returncode, 3, r.stdout + r.stderr)
        self.assertIn(leader.name, r.stdout)

        for n in self.c.nodes:
            self.assertEqual(n.stop(), 0)
        self.c.start()
        leader = self.c.node(self.c.wait_leader())
        self.c.wait(lambda: self.get(leader, "vip", stale=False) == "10.77.0.100",
                    what="the write after a full restart")

    def test_listing_shows_a_value_on_its_own_line(self):
        # A value is any text: in the lines of ls it can neither start a
        # line of its own nor drive the terminal (get and --json give it
        # exactly).
        leader = self.c.node(self.c.wait_leader())
        value = "ok\nforged=1\x1b[2J"
        self.set(leader, "note", value)
        r = subprocess.run([SPARROWCTL, "ls"], env=leader.env, capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "note=ok\\x0aforged=1\\x1b[2J\n")
        self.assertEqual(self.get(leader, "note", stale=False), value)

    def test_kill_leader_then_rejoin(self):
        old = self.c.node(self.c.wait_leader())
        self.set(old, "before", "1")
        old.kill(signal.SIGKILL)
        rest = [n for n in self.c.nodes if n is not old]
        new = self.c.node(self.c.wait_leader(rest))
        self.assertNotEqual(new.name, old.name)
        self.set(new, "after", "2")
        old.start()
        self.c.wait(lambda: self.get(old, "after") == "2", what="the old leader catching up")
        self.assertEqual(self.get(old, "before"), "1")
        self.assertEqual(self.c.leaders(), [new.name])

    def test_transfer(self):
        leader = self.c.node(self.c.wait_leader())
        target = next(n for n in self.c.nodes if n is not leader)
        leader.ctl("transfer", target.name)
        t0 = time.monotonic()
        self.assertEqual(self.c.wait_leader(), target.name)
        # The old leader let go before it handed over: no fence to wait.
        self.c.wait(lambda: target.status()["holder"], what="the new leader holds")
        self.assertLess(time.monotonic() - t0, 0.5)

    def test_transfer_asked_on_a_follower(self):
        """A follower forwards TransferLeadership to its leader, which hands
        over as if asked itself; the call returns once leadership moved."""
        leader = self.c.node(self.c.wait_leader())
        follower = next(n for n in self.c.nodes if n is not leader)
        # "Move leadership here": done when the call returns.
        self.assertEqual(json.loads(follower.ctl("transfer", follower.name).stdout),
                         {"done": True})
        self.assertEqual(follower.status()["role"], "leader")
        self.assertEqual(self.c.wait_leader(), follower.name)
        self.assertIn("%s asks to hand leadership over to %s" % (follower.name, follower.name),
                      leader.read_log())
        # No target, on a follower: whoever leads now hands over.
        other = next(n for n in self.c.nodes if n is not follower)
        other.ctl("transfer")
        new = self.c.wait_leader()
        self.assertNotEqual(new, follower.name)
        self.assertIn("%s asks to hand leadership over to the most up-to-date voter"
                      % other.name, follower.read_log())

    def test_transfer_asked_on_a_follower_times_out_busy(self):
        """A leader that cannot hand over (the target is down): the follower
        says so with Busy after 4 election timeouts, naming that leader.
        The leader may have let go already (the target had caught up, so it
        was sent TimeoutNow): when the asking follower wins the election
        that follows, it says so at once instead."""
        leader = self.c.node(self.c.wait_leader())
        asking, down = [n for n in self.c.nodes if n is not leader]
        down.kill(signal.SIGKILL)
        t0 = time.monotonic()
        r = asking.ctl("transfer", down.name, check=False)
        self.assertEqual(r.returncode, 3, r.stdout)
        e = json.loads(r.stdout)
        self.assertEqual(e["error"], "org.sparrow.cluster1.Error.Busy")
        if "was elected meanwhile" in e["message"]:
            self.assertIn("%s was elected meanwhile; ask again" % asking.name, e["message"])
            self.assertEqual(self.c.wait_leader([leader, asking]), asking.name)
        else:
            self.assertIn("%s did not hand leadership over in time" % leader.name, e["message"])
            self.assertGreaterEqual(time.monotonic() - t0, 4 * 0.4)
        self.assertIn("%s asks to hand leadership over to %s" % (asking.name, down.name),
                      leader.read_log())
        self.c.wait_leader([leader, asking])

    def test_graceful_stop_hands_over(self):
        leader = self.c.node(self.c.wait_leader())
        self.assertEqual(leader.stop(), 0)
        self.assertIn("handing leadership over", leader.read_log())
        rest = [n for n in self.c.nodes if n is not leader]
        self.assertNotEqual(self.c.wait_leader(rest, timeout=5), leader.name)

    def test_membership_changes_online(self):
        leader = self.c.node(self.c.wait_leader())
        n4 = self.c.add_node("n4")
        n4.write_config(self.c.nodes, join=True)
        leader.ctl("members", "add", "--learner", "n4", n4.address)
        n4.start()
        self.set(leader, "k", "v")
        self.c.wait(lambda: self.get(n4, "k") == "v", what="the learner catching up")
        self.assertEqual(n4.status()["role"], "learner")
        self.c.wait(lambda: leader.ctl("members", "promote", "n4", check=False).returncode == 0,
                    what="promotion")
        self.c.wait(lambda: n4.status()["role"] == "follower", what="n4 a voter")
        victim = next(n for n in self.c.nodes if n is not leader and n is not n4)
        leader.ctl("members", "remove", victim.name)
        self.c.wait(lambda: victim.name not in [m["name"] for m in leader.status()["members"]],
                    what="removal")
        self.set(leader, "k2", "v2")
        self.c.wait(lambda: self.get(n4, "k2") == "v2", what="replication after removal")

    def test_malformed_frames_are_dropped(self):
        leader = self.c.wait_leader()
        target = next(n for n in self.c.nodes if n.name != leader)
        term = target.status()["term"]
        with socket.create_connection(("127.0.0.1", target.port)) as s:
            s.sendall(struct.pack(">I", 12) + b"not-gvariant")
            time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", target.port)) as s:
            s.sendall(struct.pack(">I", 0x7FFFFFFF))
            time.sleep(0.2)
        time.sleep(1)
        self.assertTrue(target.running())
        self.assertEqual(self.c.wait_leader(), leader)
        self.assertEqual(target.status()["term"], term)
        self.assertIn("127.0.0.1", target.read_log())

    def test_torn_log_tail_is_cut_on_restart(self):
        leader = self.c.node(self.c.wait_leader())
        self.set(leader, "a", "1")
        victim = next(n for n in self.c.nodes if n is not leader)
        self.c.wait(lambda: self.get(victim, "a") == "1", what="replication")
        victim.kill(signal.SIGKILL)
        log = os.path.join(victim.data_dir, "log")
        with open(log, "ab") as f:
            f.write(b"\x40\x00\x00\x00\xde\xad")  # half a record, as a crash leaves it
        victim.start()
        self.c.wait(lambda: victim.status() is not None, what="restart")
        self.set(leader, "b", "2")
        self.c.wait(lambda: self.get(victim, "b") == "2", what="catching up after repair")
        self.assertIn("torn", victim.read_log().lower())


    def test_bad_requests_get_clear_errors(self):
        leader = self.c.node(self.c.wait_leader())
        self.set(leader, "k", "v")

        def fails(code, text, *args):
            r = subprocess.run([SPARROWCTL] + list(args), env=leader.env, capture_output=True,
                               text=True)
            self.assertEqual(r.returncode, code, r.stderr)
            self.assertIn(text, r.stderr)

        fails(1, "empty", "set", "", "x")
        fails(1, "limit is 65536", "set", "k", "x" * 70000)
        fails(5, "not 99", "cas", "k", "99", "w")
        fails(4, "nope does not exist", "get", "nope")
        fails(4, "nobody is not a member", "members", "remove", "nobody")
        fails(1, "not host:port", "members", "add", "n9", "no-port")
        fails(2, "unknown command", "frobnicate")
        self.assertEqual(self.get(leader, "k", stale=False), "v")

    def test_properties_changed_follow_the_role(self):
        leader = self.c.node(self.c.wait_leader())
        target = next(n for n in self.c.nodes if n is not leader)
        monitor = target.monitor_properties()
        self.addCleanup(monitor.wait, 10)
        self.addCleanup(monitor.terminate)
        leader.ctl("transfer", target.name)
        self.c.wait(lambda: target.status()["role"] == "leader", what="the transfer")
        self.set(target, "k", "v")
        time.sleep(0.5)
        monitor.terminate()
        out = monitor.communicate(timeout=10)[0]
        # Each property that moved, with its new value, as a bus client sees it.
        for prop, value in (("Role", 'string "leader"'), ("Leader", 'string "%s"' % target.name),
                            ("LeaseValid", "boolean true")):
            self.assertRegex(out, r'string "%s"\s+variant\s+%s' % (prop, value))
        self.assertIn('string "Term"', out)
        self.assertIn('string "CommitIndex"', out)

    def test_watch_follows_changes(self):
        leader = self.c.node(self.c.wait_leader())
        follower = next(n for n in self.c.nodes if n is not leader)
        watch = subprocess.Popen([SPARROWCTL, "--json", "watch", "app/"], env=follower.env,
                                 stdout=subprocess.PIPE, text=True)
        self.addCleanup(watch.wait, 10)
        self.addCleanup(watch.terminate)
        time.sleep(0.3)  # subscribed
        self.set(leader, "other", "ignored")
        self.set(leader, "app/x", "1")
        leader.ctl("del", "app/x")
        seen = [json.loads(watch.stdout.readline()) for _ in range(2)]
        self.assertEqual([(e["key"], e["value"]) for e in seen], [("app/x", "1"), ("app/x", None)])


    def test_watch_sees_every_write_of_a_burst(self):
        # Writes that arrive together are applied, and announced, together:
        # the watcher still gets each one once, in revision order.
        leader = self.c.node(self.c.wait_leader())
        follower = next(n for n in self.c.nodes if n is not leader)
        watch = subprocess.Popen([SPARROWCTL, "--json", "watch", "burst/"], env=follower.env,
                                 stdout=subprocess.PIPE, text=True)
        self.addCleanup(watch.stdout.close)
        self.addCleanup(watch.wait, 10)
        self.addCleanup(watch.terminate)
        time.sleep(0.3)  # subscribed
        writers = [subprocess.Popen([SPARROWCTL, "set", "burst/%d" % i, str(i)], env=leader.env,
                                    stdout=subprocess.DEVNULL) for i in range(24)]
        for w in writers:
            self.assertEqual(w.wait(timeout=60), 0)
        seen = [json.loads(watch.stdout.readline()) for _ in writers]
        self.assertEqual(sorted(e["key"] for e in seen), sorted("burst/%d" % i for i in range(24)))
        revisions = [e["revision"] for e in seen]
        self.assertEqual(revisions, sorted(revisions))
        self.assertEqual(len(set(revisions)), len(revisions))

    def test_status_follows_a_member_going_and_coming_back(self):
        leader = self.c.node(self.c.wait_leader())
        other = next(n for n in self.c.nodes if n is not leader)

        def reachable():
            return {m["name"]: m["reachable"] for m in leader.status()["members"]}

        self.c.wait(lambda: all(reachable().values()), what="every member reachable")
        other.kill(signal.SIGKILL)
        self.c.wait(lambda: not reachable()[other.name], what="the killed member unreachable")
        self.assertTrue(reachable()[leader.name])
        other.start()
        self.c.wait(lambda: reachable()[other.name], what="the member reachable again")


class Process(unittest.TestCase):
    """sd_notify as systemd would see it, on a cluster of one."""

    def start_notified(self, watchdog_usec):
        """A node of one started as systemd would, and the socket that
        receives what it notifies."""
        c = Cluster(1)
        self.addCleanup(c.teardown)
        n = c.nodes[0]
        path = os.path.join(c.dir, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        sock.settimeout(10)
        n.extra_env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(watchdog_usec)}
        n.start()
        return n, sock

    def test_notify_ready_status_watchdog_stopping(self):
        n, sock = self.start_notified(200000)
        got = []

        def until(pred):
            while not any(pred(m) for m in got):
                got.append(sock.recv(4096).decode())

        until(lambda m: m == "READY=1")
        self.assertIsNotNone(n.status(), "READY=1 came before the bus name")
        until(lambda m: m.startswith("STATUS=leader"))
        t0 = time.monotonic()
        got.clear()
        until(lambda m: m == "WATCHDOG=1")
        got.clear()
        until(lambda m: m == "WATCHDOG=1")
        self.assertLess(time.monotonic() - t0, 0.5)
        n.proc.send_signal(signal.SIGTERM)
        until(lambda m: m == "STOPPING=1")
        self.assertEqual(n.proc.wait(timeout=10), 0)

    def test_watchdog_tight_while_leading(self):
        """The unit's loose interval on a follower; the leader asks for its
        tight one (leader-watchdog-ms) before it holds anything."""
        n, sock = self.start_notified(5000000)
        got = []
        # cluster.py: heartbeat 50 ms, so 50 + 200, in the wake-up that made
        # it leader
        while not any(m.startswith("WATCHDOG_USEC=") for m in got):
            got.append(sock.recv(4096).decode())
        self.assertIn("WATCHDOG_USEC=250000", got)
        self.assertTrue(any(m.startswith("STATUS=leader") for m in got))
        pings = []
        t0 = time.monotonic()
        while len(pings) < 5:
            if sock.recv(4096).decode() == "WATCHDOG=1":
                pings.append(time.monotonic())
        # Fed at every heartbeat's wake-up (at most every quarter interval).
        self.assertLess(max(b - a for a, b in zip([t0] + pings, pings)), 0.25)

    def test_idle_follower_wakes_for_heartbeats_only(self):
        """An idle follower under a loose watchdog (the unit's, for nodes
        that hold nothing) pings systemd once per half interval, not more
        (each ping wakes systemd), and wakes for nothing but its leader's
        heartbeats: the pings ride those wake-ups, and the watchdog's
        fallback timer is never due while they come."""
        c = Cluster(3, heartbeat_ms=250, election_ms=600)
        self.addCleanup(c.teardown)
        lead, watched = c.nodes[0], c.nodes[1]
        path = os.path.join(c.dir, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        sock.settimeout(10)
        watched.extra_env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}
        c.start()
        first = c.wait_leader()
        if first != lead.name:
            c.node(first).ctl("transfer", lead.name)
        c.wait(lambda: c.leader() == lead.name, what="%s leading" % lead.name)

        def wakes(n):
            with open("/proc/%d/task/%d/status" % (n.proc.pid, n.proc.pid)) as f:
                return int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)$", f.read(),
                                     re.M).group(1))

        # What it said while the cluster settled (a change of interval
        # pings at once) is not the idle follower's.
        sock.setblocking(False)
        try:
            while sock.recv(4096):
                pass
        except BlockingIOError:
            pass
        sock.settimeout(10)
        pings = []
        while len(pings) < 10:
            if sock.recv(4096).decode() == "WATCHDOG=1":
                pings.append((time.monotonic(), wakes(lead), wakes(watched)))
        pings = pings[2:]
        gaps = [b[0] - a[0] for a, b in zip(pings, pings[1:])]
        # Half of 2 s, less what a late read of the socket takes off; load
        # only makes pings come later.
        self.assertGreater(min(gaps), 0.75, "pings %s s apart" % gaps)
        led, followed = pings[-1][1] - pings[0][1], pings[-1][2] - pings[0][2]
        # The leader wakes at least once per heartbeat it sends; the follower
        # once per heartbeat it gets, and for nothing else.
        self.assertLessEqual(followed, led + 2, "the follower woke %d times, its leader %d"
                             % (followed, led))

    def test_holder_waits_for_the_fence(self):
        """After a crash, the new leader leads at once but holds (Holder,
        what plugins follow) only once the old leader's fence time has
        passed since its voters last heard it; with fence = false at
        once."""
        for fence in (True, False):
            c = Cluster(3)
            self.addCleanup(c.teardown)
            # With the defaults the fence ends before an election can (a
            # 400 ms election outlasts lease + keeper): a slow keeper makes
            # it the longer one, to see where it counts from.
            for n in c.nodes:
                with open(n.config, "a") as f:
                    f.write("[cluster]\n" + ("keeper-ms = 1000\n" if fence else "fence = false\n"))
            check = subprocess.run([SPARROWD, "--check-config", "--config", c.nodes[0].config],
                                   capture_output=True, text=True)
            self.assertEqual(check.returncode, 0, check.stderr)
            c.start()
            old = c.node(c.wait_leader())
            c.wait(lambda: old.status()["holder"], what="the first leader holds")
            old.kill()
            killed = time.monotonic()
            rest = [n for n in c.nodes if n is not old]
            leading = holding = None
            deadline = killed + 20
            while holding is None and time.monotonic() < deadline:
                for n in rest:
                    s = n.status()
                    now = time.monotonic()
                    if s and s["role"] == "leader" and leading is None:
                        leading = now
                    if s and s["holder"]:
                        self.assertEqual(s["role"], "leader")
                        holding = now
                time.sleep(0.005)
            self.assertIsNotNone(holding, "never held")
            if fence:
                ms = int(re.search(r"holds addresses (\d+) ms after its voters", check.stdout)
                         .group(1))
                # cluster.py: lease 350 + keeper 1000, plus 5 % and a tick
                self.assertEqual(ms, 1427)
                # the last heartbeat came at most one interval (50 ms) before
                # the kill
                self.assertGreater(holding - killed, (ms - 50) / 1000 - 0.02)
                self.assertGreater(holding, leading)
                # ... and not much later: counted from that heartbeat, not
                # from the election (an election takes up to 800 ms here)
                self.assertLess(holding - killed, ms / 1000 + 0.4)
            else:
                self.assertIn("fence: off", check.stdout)
                self.assertLess(holding - leading, 0.3)
            c.teardown()

    def test_notify_abstract_socket(self):
        c = Cluster(1)
        self.addCleanup(c.teardown)
        n = c.nodes[0]
        name = "sparrow-test-notify-%d" % os.getpid()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind("\0" + name)
        sock.settimeout(10)
        n.extra_env = {"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "200000"}
        n.start()
        got = []
        # a recv that times out fails the test
        while "READY=1" not in got or "WATCHDOG=1" not in got:
            got.append(sock.recv(4096).decode())


class Snapshots(ClusterTest):
    snapshot_entries = 20

    def test_lagging_node_catches_up_from_a_snapshot(self):
        leader = self.c.node(self.c.wait_leader())
        victim = next(n for n in self.c.nodes if n is not leader)
        victim.kill()
        # More writes than the leader keeps queued for a dead peer (64
        # appends in flight); the log before the snapshot is gone, so only
        # InstallSnapshot can bring the victim back.
        for i in range(150):
            self.set(leader, "k%03d" % i, str(i))
        self.c.wait(lambda: os.path.exists(os.path.join(leader.data_dir, "snapshot")),
                    what="the leader's snapshot")
        victim.start()
        self.c.wait(lambda: self.get(victim, "k149") == "149", what="the victim catching up")
        self.assertEqual(self.get(victim, "k000"), "0")
        self.assertIn("installed the leader's snapshot", victim.read_log())
        self.c.wait(lambda: os.path.exists(os.path.join(victim.data_dir, "snapshot")),
                    what="the snapshot stored on the victim")

        # A full restart rebuilds every store from snapshot plus log.
        for n in self.c.nodes:
            self.assertEqual(n.stop(), 0)
        self.c.start()
        leader = self.c.node(self.c.wait_leader())
        listing = leader.ctl("ls", "k").stdout
        self.assertEqual(len(json.loads(listing)), 150, listing)


class BusPolicy(unittest.TestCase):
    """dbus/org.sparrow.cluster1.conf on a bus that denies by default, as
    the system bus does: root owns the name and anyone may call, and
    sparrowd itself refuses changes from others when polkit does not
    authorize them (here there is no polkitd at all; the lab has one)."""

    def setUp(self):
        policy = os.path.join(os.path.dirname(__file__), "..", "..", "dbus",
                              "org.sparrow.cluster1.conf")
        if os.geteuid() != 0 or not shutil.which("setpriv"):
            self.skipTest("skipped: needs root and setpriv to act as another user")
        self.c = Cluster(1, bus_policy=os.path.abspath(policy))
        self.addCleanup(self.c.teardown)
        # The unprivileged user must reach the bus socket.
        for d in (self.c.dir, self.c.nodes[0].dir):
            os.chmod(d, 0o755)
        # ... and run sparrowctl, wherever the build tree is.
        self.ctl = os.path.join(self.c.dir, "sparrowctl")
        shutil.copy2(shutil.which(SPARROWCTL), self.ctl)
        self.c.start()
        self.n = self.c.nodes[0]
        self.c.wait_leader()

    def as_nobody(self, *args):
        return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups",
                               self.ctl] + list(args), env=self.n.env, capture_output=True,
                              text=True)

    def test_root_changes_others_read_and_are_refused_changes(self):
        self.n.ctl("set", "k", "v")
        r = self.as_nobody("status")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("leader", r.stdout)
        r = self.as_nobody("get", "k")
        self.assertEqual((r.returncode, r.stdout.strip()), (0, "v"), r.stderr)
        self.assertEqual(self.as_nobody("ls").returncode, 0)
        for args in (("set", "k", "w"), ("del", "k"), ("transfer",),
                     ("members", "remove", "n1")):
            r = self.as_nobody(*args)
            self.assertEqual(r.returncode, 1, args)
            self.assertIn("not allowed", r.stderr, args)
        self.assertEqual(json.loads(self.n.ctl("get", "k").stdout)["value"], "v")


class Ipv6(unittest.TestCase):
    def test_cluster_on_ipv6_loopback(self):
        try:
            with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
                s.bind(("::1", 0))
        except OSError as e:
            self.skipTest("skipped: no IPv6 loopback (::1): %s" % e)
        c = Cluster(3, host="::1")
        self.addCleanup(c.teardown)
        c.start()
        leader = c.node(c.wait_leader())
        self.assertTrue(leader.status()["leader_address"].startswith("[::1]:"))
        leader.ctl("set", "k", "v6")
        for n in c.nodes:
            c.wait(lambda n=n: n.ctl("get", "--stale", "k", check=False).returncode == 0,
                   what="replication over IPv6")


class NoBus(unittest.TestCase):
    def test_runs_and_stops_cleanly_without_a_bus(self):
        c = Cluster(1)
        self.addCleanup(c.teardown)
        n = c.nodes[0]
        n.bus = True  # no dbus-daemon: the address below leads nowhere
        n.extra_env = {"DBUS_SYSTEM_BUS_ADDRESS": "unix:path=" + os.path.join(c.dir, "nobus")}
        try:
            n.start()
            time.sleep(1.5)
            self.assertTrue(n.running())
            n.proc.send_signal(signal.SIGTERM)
            self.assertEqual(n.proc.wait(timeout=10), 0, n.read_log())
        finally:
            n.bus = None
        log = n.read_log()
        self.assertIn("system bus", log)
        self.assertNotIn("CRITICAL", log)


class FiveNodes(ClusterTest):
    size = 5

    def test_elects_one_leader_and_survives_two_crashes(self):
        leader = self.c.wait_leader()
        self.assertEqual(self.c.leaders(), [leader])
        followers = [n for n in self.c.nodes if n.name != leader]
        followers[0].kill()
        self.c.node(leader).kill()
        rest = [n for n in self.c.nodes if n.running()]
        new = self.c.wait_leader(rest)
        self.set(self.c.node(new), "k", "v")


class Tls(ClusterTest):
    tls = True

    def test_cluster_over_mutual_tls(self):
        leader = self.c.node(self.c.wait_leader())
        self.set(leader, "k", "v")
        for n in self.c.nodes:
            self.c.wait(lambda n=n: self.get(n, "k") == "v", what="replication over TLS")

    def test_transfer_asked_on_a_follower(self):
        leader = self.c.node(self.c.wait_leader())
        follower = next(n for n in self.c.nodes if n is not leader)
        follower.ctl("transfer", follower.name)
        self.assertEqual(follower.status()["role"], "leader")
        self.assertEqual(self.c.wait_leader(), follower.name)

    def test_foreign_ca_cannot_join(self):
        leader = self.c.node(self.c.wait_leader())
        term = leader.status()["term"]
        # A node whose certificate comes from another CA, claiming a member's name.
        rogue_certs = os.path.join(self.c.dir, "rogue-certs")
        subprocess.run([os.environ.get("SPARROW_CERTS", "sparrow-certs"), "ca", rogue_certs],
                       check=True, capture_output=True)
        victim = next(n for n in self.c.nodes if n is not leader)
        victim.kill()
        rogue = Node(self.c, "rogue")
        rogue.name = victim.name
        rogue.port = victim.port
        rogue.write_config(self.c.nodes, tls=self.c.tls_files(victim.name, rogue_certs))
        rogue.start()
        self.addCleanup(rogue.teardown)
        time.sleep(2)
        self.assertEqual(leader.status()["term"], term)
        self.assertEqual(self.c.leader([leader]), leader.name)
        self.assertIn("127.0.0.1", leader.read_log())
        self.assertRegex(leader.read_log().lower(), "certificate|refus")


class FenceKeeper(unittest.TestCase):
    """With fence = true a node holds only while its fence keeper is armed
    with the end of its lease (sparrow-fence)."""

    def test_keeper_lost_then_back(self):
        c = Cluster(3)
        self.addCleanup(c.teardown)
        c.start()
        leader = c.node(c.wait_leader())
        c.wait(lambda: leader.status()["holder"], what="the leader holds")
        self.assertEqual(leader.status()["fence_keeper"], "armed")
        leader.kill_keeper()
        # At once, not at the end of the lease: nothing would fence it.
        c.wait(lambda: not leader.status()["holder"], timeout=2.0,
               what="Holder false once the keeper is gone")
        c.wait(lambda: "fence keeper lost" in leader.read_log(), timeout=2.0,
               what="the loss in the log")
        self.assertEqual(leader.status()["role"], "leader")
        leader.start_keeper()
        c.wait(lambda: leader.status()["holder"], timeout=10.0,
               what="the leader holds again once its keeper is back")

    def test_no_keeper_no_holder(self):
        c = Cluster(1)
        self.addCleanup(c.teardown)
        n = c.nodes[0]
        n.start(keeper=False)
        c.wait(lambda: "not holding until it answers" in n.read_log(), timeout=10.0,
               what="the missing keeper in the log")
        c.wait(lambda: n.status() and n.status()["role"] == "leader", what="a leader")
        s = n.status()
        self.assertFalse(s["holder"])
        self.assertIn("No such file or directory", s["fence_keeper"])
        self.assertIn("Fence:   NOT IN PLACE, holds nothing: fence keeper " + n.keeper_sock,
                      subprocess.run([SPARROWCTL, "status"], env=n.env, capture_output=True,
                                     text=True, timeout=60).stdout)
        n.start_keeper()
        c.wait(lambda: n.status()["holder"], timeout=10.0, what="it holds once the keeper is there")


class Config(unittest.TestCase):
    def check(self, text):
        d = os.path.join(os.environ.get("TMPDIR", "/tmp"), "sparrow-config-%d" % os.getpid())
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "sparrow.conf")
        with open(path, "w") as f:
            f.write(text)
        r = subprocess.run([SPARROWD, "--check-config", "--config", path],
                           capture_output=True, text=True)
        return path, r

    def test_errors_name_file_and_key(self):
        path, r = self.check("[node]\nname = a\nlisten = 127.0.0.1:7400\n[cluster]\n"
                             "election-ms = soon\n[tls]\ninsecure = true\n")
        self.assertEqual(r.returncode, 1)
        self.assertIn(path, r.stderr)
        self.assertIn("election-ms", r.stderr)

    def test_valid_file(self):
        path, r = self.check("[node]\nname = a\nlisten = 127.0.0.1:7400\n[tls]\ninsecure = true\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("fence: a new leader holds addresses 587 ms after its voters last heard", r.stdout)
        self.assertIn("fault model: the fence covers one fault of the old leader", r.stdout)
        self.assertIn("ended by the leader watchdog, up to 1511 ms after the last heartbeat", r.stdout)
        self.assertRegex(r.stdout, r"expected failover after a crash: \d+ to \d+ ms")

    def test_unknown_group_warns_after_plugins(self):
        path, r = self.check("[node]\nname = a\nlisten = 127.0.0.1:7400\n[tls]\ninsecure = true\n"
                             "[vpi]\naddresses = 10.0.0.1/24@eth0\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("%s: [vpi]: unknown group (keys: addresses), ignored" % path, r.stderr)

    def test_plugin_module_missing_is_an_error(self):
        nowhere = os.path.join(os.environ.get("TMPDIR", "/tmp"), "sparrow-no-plugins")
        os.environ["SPARROW_PLUGIN_DIR"] = nowhere
        self.addCleanup(os.environ.pop, "SPARROW_PLUGIN_DIR")
        path, r = self.check("[node]\nname = a\nlisten = 127.0.0.1:7400\n[tls]\ninsecure = true\n"
                             "[vip]\naddresses = 10.77.0.100/24@eth0\n")
        self.assertEqual(r.returncode, 1)
        self.assertIn("plugin vip: cannot load %s/libsparrow-plugin-vip.so" % nowhere, r.stderr)


if __name__ == "__main__":
    main()
