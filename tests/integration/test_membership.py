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

    def test_transfer_on_a_follower_or_learner(self):
        """On a follower, a learner or a stranger named is refused there, as
        on the leader; a learner may ask the leader to hand over."""
        leader = self.c.node(self.c.wait_leader())
        follower = next(n for n in self.c.nodes if n is not leader)
        n4 = self.add_learner(leader, "n4")
        self.c.wait(lambda: self.member(follower, "n4") is not None, what="n4 known to the follower")
        for target, want in (("n4", INVALID), ("nobody", NOT_FOUND)):
            error, message = self.error(follower, "transfer", target)
            self.assertEqual(error, want, message)
            self.assertIn("%s is not a voting member" % target, message)
        self.assertEqual(self.c.wait_leader(), leader.name)
        self.c.wait(lambda: (n4.status() or {}).get("leader") == leader.name,
                    what="n4 following %s" % leader.name)
        n4.ctl("transfer")
        self.assertNotEqual(self.c.wait_leader([n for n in self.c.nodes if n is not n4]),
                            leader.name)

    def remove(self, leader, name):
        self.c.wait(lambda: leader.ctl("members", "remove", name, check=False).returncode == 0,
                    what="%s removed" % name)
        self.c.wait(lambda: self.member(leader, name) is None, what="%s gone" % name)

    def restart_all_and_check(self, member):
        """A full restart, after which every voter knows member at its
        address, member catches up and counts: with another voter down,
        member and the third still commit."""
        voters = self.c.nodes[:3]
        for n in voters:
            self.assertEqual(n.stop(), 0, n.read_log()[-2000:])
        for n in voters:
            n.start()
        leader = self.c.node(self.c.wait_leader(voters, timeout=40))
        for n in voters:
            self.c.wait(lambda: (self.member(n, member.name) or {}).get("address")
                        == member.address,
                        what="%s knowing %s at %s" % (n.name, member.name, member.address))
        self.set(leader, "c", "3")
        self.c.wait(lambda: self.get(member, "c") == "3", what="%s catching up" % member.name)
        self.c.wait(lambda: (self.member(leader, member.name) or {}).get("reachable"),
                    what="%s reachable from the leader" % member.name)
        victim = leader if leader is not member else next(n for n in voters if n is not member)
        victim.kill(signal.SIGKILL)
        rest = [n for n in voters if n is not victim]
        leader = self.c.node(self.c.wait_leader(rest, timeout=40))
        self.set(leader, "d", "4")
        self.c.wait(lambda: all(self.get(n, "d") == "4" for n in rest),
                    what="a write without %s" % victim.name)

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

        # A membership change, and a learner moved by remove + add: n4
        # comes back on another port.
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

        self.restart_all_and_check(n1)

    def test_set_member_address_moves_a_voter(self):
        leader = self.c.node(self.c.wait_leader())
        moved, other = [n for n in self.c.nodes if n is not leader]
        new_address = "127.0.0.1:%d" % free_port()
        for args, want, text in [
                (["nobody", new_address], NOT_FOUND, "nobody is not a member"),
                ([leader.name, new_address], INVALID, "%s is the leader" % leader.name),
                ([moved.name, "no-port"], INVALID, "not host:port"),
                ([moved.name, other.address], INVALID, "is the address of %s" % other.name),
                (["bad name", new_address], INVALID, "letters, digits")]:
            error, message = self.error(leader, "members", "set-address", *args)
            self.assertEqual(error, want, message)
            self.assertIn(text, message)
        self.assertEqual(self.error(other, "members", "set-address", moved.name, new_address)[0],
                         "org.sparrow.cluster1.Error.NotLeader")

        self.assertEqual(moved.stop(), 0)
        leader.ctl("members", "set-address", moved.name, new_address)
        moved.port = int(new_address.rsplit(":", 1)[1])
        moved.write_config(self.c.nodes)  # the others' files keep the old address
        moved.start()
        self.set(leader, "a", "1")
        self.c.wait(lambda: self.get(moved, "a") == "1", what="%s catching up" % moved.name)
        for n in self.c.nodes:
            self.c.wait(lambda: (self.member(n, moved.name) or {}).get("address") == new_address,
                        what="%s knowing %s's new address" % (n.name, moved.name))
        self.restart_all_and_check(moved)

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

    def test_added_voter_and_its_address_are_one_entry(self):
        """AddMember is one log entry, the configuration change carrying
        the address: the new member is reached before that entry commits
        (here the new quorum needs it), every node shows it with its
        address, a node joining later gets both from a snapshot, and every
        node after a restart from its log."""
        self.c.wait_leader()  # up, handling SIGTERM
        for n in self.c.nodes:
            self.assertEqual(n.stop(), 0)
        self.c.snapshot_entries = 20
        for n in self.c.nodes:
            n.write_config(self.c.nodes)
        self.c.start()
        leader = self.c.node(self.c.wait_leader())
        up = [n for n in self.c.nodes if n is not leader]
        down = up.pop()
        self.assertEqual(down.stop(), 0)
        n4 = self.c.add_node("n4")
        n4.write_config(self.c.nodes, join=True)
        n4.start()
        before = leader.status()
        # Four voters with one down: the entry commits only once n4 has it.
        leader.ctl("members", "add", "n4", n4.address)
        after = leader.status()
        if after["term"] == before["term"]:  # no election's no-op in between
            self.assertEqual(after["commit_index"], before["commit_index"] + 1)

        def shows_n4(node):
            m = self.member(node, "n4")
            return m is not None and m["address"] == n4.address and m["voter"]

        for n in (leader, up[0], n4):
            self.c.wait(lambda: shows_n4(n),
                        what="%s showing voter n4 at %s" % (n.name, n4.address))

        # Once the entry is compacted away, a node joining later gets n4's
        # address from a snapshot, and one that was down gets it too;
        # neither has it in its file.
        for i in range(30):
            self.set(leader, "k%02d" % i, str(i))
        self.c.wait(lambda: os.path.exists(os.path.join(leader.data_dir, "snapshot")),
                    what="the leader's snapshot")
        n5 = self.c.add_node("n5")
        n5.write_config([n for n in self.c.nodes if n is not n4], join=True)
        leader.ctl("members", "add", "--learner", "n5", n5.address)
        n5.start()
        down.start()
        for n in (n5, down):
            self.c.wait(lambda: self.get(n, "k29") == "29", what="%s catching up" % n.name)
            self.c.wait(lambda: (self.member(n, "n4") or {}).get("address") == n4.address,
                        what="%s knowing n4" % n.name)
        log = n5.read_log()
        self.assertIn("installed the leader's snapshot", log)
        self.assertIn("member n4 is at %s" % n4.address, log)
        for n in (n5, down):
            self.assertNotRegex(n.read_log(), "no known address|address record ignored")

        # A full restart: from each node's snapshot and log.
        for n in self.c.nodes:
            self.assertEqual(n.stop(), 0)
        self.c.start()
        leader = self.c.node(self.c.wait_leader(timeout=40))
        for n in self.c.nodes:
            for m in (n4, n5):
                self.c.wait(lambda: (self.member(n, m.name) or {}).get("address") == m.address,
                            what="%s knowing %s after a restart" % (n.name, m.name))
        for n in self.c.nodes:
            self.assertNotRegex(n.read_log(), "LeakSanitizer|runtime error|address record ignored")


if __name__ == "__main__":
    unittest.main()
