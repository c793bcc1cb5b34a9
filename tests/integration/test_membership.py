"""Membership changes and argument checking, as an admin meets them on a
real cluster: refused requests change nothing, errors are clear."""

import json
import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster  # noqa: E402

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


if __name__ == "__main__":
    unittest.main()
