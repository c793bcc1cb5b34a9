"""Membership changes and argument checking, as an admin meets them on a
real cluster: refused requests change nothing, errors are clear."""

import json
import os
import signal
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster, free_port  # noqa: E402

INVALID = "org.sparrow.cluster1.Error.InvalidArgument"
NOT_FOUND = "org.sparrow.cluster1.Error.NotFound"


class Membership(unittest.TestCase):
    def setUp(self):
        self.c = Cluster(3)
        self.addCleanup(self.c.teardown)
        self.c.start()

    def error(self, node, *args):
        """The D-Bus error name and message sparrowctl reports for args."""
        r = node.ctl(*args, check=False)
        self.assertNotEqual(r.returncode, 0, "%s succeeded: %s" % (args, r.stdout))
        e = json.loads(r.stdout)
        return e["error"], e["message"]

    def set(self, node, key, value):
        node.ctl("set", key, value)

    def get(self, node, key):
        r = node.ctl("get", "--stale", key, check=False)
        return json.loads(r.stdout)["value"] if r.returncode == 0 else None

    def member(self, node, name):
        s = node.status()
        return next((m for m in s["members"] if m["name"] == name), None) if s else None

    def add_learner(self, leader, name, port=None):
        n = self.c.add_node(name) if port is None else self.c.node(name)
        if port is not None:
            n.port = port
        n.write_config([m for m in self.c.nodes if m.name != name] + [n], join=True)
        self.c.wait(lambda: leader.ctl("members", "add", "--learner", name, n.address,
                                       check=False).returncode == 0,
                    what="%s added" % name)
        n.start()
        return n

    def remove(self, leader, name):
        self.c.wait(lambda: leader.ctl("members", "remove", name, check=False).returncode == 0,
                    what="%s removed" % name)
        self.c.wait(lambda: self.member(leader, name) is None, what="%s gone" % name)

    def test_refused_add_changes_no_address(self):
        leader = self.c.node(self.c.wait_leader())
        n1 = self.c.node("n1")
        for flags in ([], ["--learner"]):
            name, message = self.error(leader, "members", "add", *flags, "n1", "127.0.0.1:9")
            self.assertEqual(name, INVALID)
            self.assertIn("n1 is already a member", message)
            self.assertIn("nothing was changed", message)
        # Another member's address is refused as well.
        name, message = self.error(leader, "members", "add", "n9", n1.address)
        self.assertEqual(name, INVALID)
        self.assertIn("address of n1", message)

        # A membership change, and moving a member (remove + add, as the
        # README says): n4 comes back on another port.
        n4 = self.add_learner(leader, "n4")
        self.set(leader, "a", "1")
        self.c.wait(lambda: self.get(n4, "a") == "1", what="n4 catching up")
        self.remove(leader, "n4")
        n4.stop()
        n4 = self.add_learner(leader, "n4", port=free_port())
        self.set(leader, "b", "2")
        self.c.wait(lambda: self.get(n4, "b") == "2", what="n4 catching up at its new address")
        self.c.wait(lambda: (self.member(leader, "n4") or {}).get("address") == n4.address,
                    what="the leader showing n4's new address")
        self.remove(leader, "n4")
        n4.stop()

        # A full restart: every node rebuilds its address book from its log.
        for n in self.c.nodes[:3]:
            self.assertEqual(n.stop(), 0, n.read_log()[-2000:])
        for n in self.c.nodes[:3]:
            n.start()
        leader = self.c.node(self.c.wait_leader(self.c.nodes[:3], timeout=40))
        for n in self.c.nodes[:3]:
            self.c.wait(lambda: (self.member(n, "n1") or {}).get("address") == n1.address,
                        what="%s knowing n1 at %s" % (n.name, n1.address))
        self.set(leader, "c", "3")
        self.c.wait(lambda: self.get(n1, "c") == "3", what="n1 catching up")
        self.c.wait(lambda: (self.member(leader, "n1") or {}).get("reachable"),
                    what="n1 reachable from the leader")

        # n1 counts: with another voter down, n1 and the third still commit.
        victim = leader if leader.name != "n1" else self.c.node("n2")
        victim.kill(signal.SIGKILL)
        rest = [n for n in self.c.nodes[:3] if n is not victim]
        leader = self.c.node(self.c.wait_leader(rest, timeout=40))
        self.set(leader, "d", "4")
        self.c.wait(lambda: all(self.get(n, "d") == "4" for n in rest), what="a write without %s"
                    % victim.name)

    def test_invalid_keys_and_names_are_refused_everywhere(self):
        leader = self.c.node(self.c.wait_leader())
        follower = next(n for n in self.c.nodes if n is not leader)
        self.set(leader, "ok", "v")
        huge = "x" * 5000
        bad_keys = ["", "a\x1bb", "line\nbreak", "tab\there", "del\x7f", "c1\u0085",
                    "\u202eevil", "iso\u2066late", "k" * 257, huge]
        for node in (leader, follower):
            for key in bad_keys:
                for args in (["get", key], ["set", key, "v"], ["del", key],
                             ["cas", key, "0", "v"], ["ls", key]):
                    if args[0] == "ls" and key == "":
                        continue  # the empty prefix lists everything
                    name, message = self.error(node, *args)
                    self.assertEqual(name, INVALID, "%s on %s: %s" % (args[0], node.name, message))
                    self.assertLess(len(message), 300, message)
                    self.assertNotRegex(message, "[\x00-\x1f\x7f\u0085\u202a-\u202e\u2066-\u2069]")
        bad_names = ["", "a b", "n1\x1b", "\u202en1", "n/1", "n" * 64, huge]
        for name in bad_names:
            for args in (["members", "add", name, "127.0.0.1:9"],
                         ["members", "add", "--learner", name, "127.0.0.1:9"],
                         ["members", "remove", name], ["members", "promote", name],
                         ["transfer", name]):
                if args[0] == "transfer" and name == "":
                    continue  # no target: the most up-to-date voter
                error, message = self.error(leader, *args)
                self.assertEqual(error, INVALID, "%s: %s" % (args, message))
                self.assertIn("letters, digits", message)
                self.assertLess(len(message), 300, message)
                self.assertNotIn("x" * 65, message)
        name, message = self.error(leader, "members", "add", "n9", "x" * 5000)
        self.assertEqual(name, INVALID)
        self.assertIn("x" * 64 + "…", message)
        self.assertLess(len(message), 300, message)

        # Members are named by name, never by their internal id.
        checks = [(["members", "promote", follower.name], INVALID, "%s is already a voter"
                   % follower.name),
                  (["members", "remove", "nobody"], NOT_FOUND, "nobody is not a member"),
                  (["members", "promote", "nobody"], NOT_FOUND, "nobody is not a member"),
                  (["transfer", "nobody"], NOT_FOUND, "nobody is not a voting member"),
                  (["members", "remove", leader.name], INVALID, "%s leads" % leader.name)]
        for args, want, text in checks:
            error, message = self.error(leader, *args)
            self.assertEqual(error, want, message)
            self.assertIn(text, message)
            self.assertNotRegex(message, r"\d{6,}")

        # Nothing of the above reached the store.
        r = leader.ctl("ls")
        self.assertEqual([e["key"] for e in json.loads(r.stdout)], ["ok"])
        self.assertEqual(len(leader.status()["members"]), 3)

    def test_restarted_node_names_a_learner_added_while_it_was_down(self):
        leader = self.c.node(self.c.wait_leader())
        down = next(n for n in self.c.nodes if n is not leader)
        self.assertEqual(down.stop(), 0)
        n4 = self.add_learner(leader, "n4")
        self.set(leader, "k", "v")
        self.c.wait(lambda: self.get(n4, "k") == "v", what="n4 catching up")
        for _ in range(2):  # back with the change to catch up on, then with it in its log
            down.start()
            self.c.wait(lambda: self.get(down, "k") == "v", what="%s catching up" % down.name)
            self.c.wait(lambda: (self.member(down, "n4") or {}).get("address") == n4.address,
                        what="%s knowing n4" % down.name)
            self.assertEqual(down.stop(), 0)
        log = down.read_log()
        self.assertIn("member n4 is at %s" % n4.address, log)
        self.assertNotRegex(log, r"member +\(|no known address")
        self.assertNotRegex(log, "LeakSanitizer|runtime error")

if __name__ == "__main__":
    unittest.main()
