"""A compromised member leads (issue 21): it commits member records, keys
and a configuration change that no request would pass, and a snapshot
carrying such records.  Every other node refuses each, alike, says so in
its log with the entry's index and term, counts it (RefusedEntries), and
nothing of it reaches the members, the store or the leader's address.

The rogue is tests/rogue-node: a real node (its own name and
certificate, the real transport and storage) with the tests-only entry
points of daemon/node-testing.h, which sparrowd does not have."""

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster, Node  # noqa: E402

ROGUE = os.environ.get("SPARROW_ROGUE_NODE")

# What a hostile leader would write, and the rule each breaks.
BAD_MEMBERS = [
    ("mallory", "10.0.0.9\nlogfile /etc/cron.d/x\nrestrict default\nserver 192.0.2.1:7400"),
    ("mallory", "1.2.3.4 noselect key 1:7000"),
    ("mallory", "10.0.0.9;x:7400"),
    ("mallory", "h\u00e9llo.example:7400"),
    ("mallory", "a" * 300 + ":7400"),
    ("bad name", "10.0.0.9:7400"),
]
BAD_KEYS = ["old\nkey", "a\u202eb"]
BAD_CONF = ("mallory", "10.0.0.9\nserver 192.0.2.66 iburst:7400")


def escape(text):
    """For g_strcompress: every byte but printable ASCII as octal."""
    out = []
    for b in text.encode():
        if 0x21 <= b < 0x7f and b != ord("\\"):
            out.append(chr(b))
        else:
            out.append("\\%03o" % b)
    return "".join(out)


class RogueNode(Node):
    """The rogue in place of a sparrowd: no bus; commands on its stdin."""

    def start(self):
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen([ROGUE, self.config], env=self.env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.answers = queue.Queue()
        self.role = None
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            if line.startswith("role "):
                self.role = line[5:]
            else:
                self.answers.put(line)

    def kill(self, sig=signal.SIGKILL):
        super().kill(sig)
        if self.proc:
            self.proc.stdin.close()
            self.proc.stdout.close()

    def command(self, *args):
        """The entry's index, or None when the rogue could not propose
        (not leading, or its term has nothing committed yet)."""
        self.proc.stdin.write(" ".join(escape(a) for a in args) + "\n")
        self.proc.stdin.flush()
        answer = self.answers.get(timeout=10)
        return int(answer[3:]) if answer.startswith("ok ") else None


@unittest.skipUnless(ROGUE, "SPARROW_ROGUE_NODE is not set (meson sets it)")
class RogueLeader(unittest.TestCase):
    def setUp(self):
        self.c = Cluster(3, tls=True)
        self.addCleanup(self.c.teardown)
        self.rogue = self.c.nodes[0]
        self.rogue.__class__ = RogueNode  # same name, port, certificate
        self.followers = self.c.nodes[1:]
        self.c.start()

    def take_lead(self):
        """The rogue leads: it wins an election, or is handed leadership."""
        def leads():
            if self.rogue.role == "leader":
                return True
            s = self.followers[0].status()
            if s and s["leader"] and s["leader"] != self.rogue.name:
                self.c.node(s["leader"]).ctl("transfer", self.rogue.name, check=False)
            return False
        self.c.wait(leads, timeout=30, what="the rogue leading")

    def propose(self, *args):
        return self.c.wait(lambda: self.rogue.command(*args), what="the rogue's %s" % args[0])

    def get(self, node, key):
        r = node.ctl("get", "--stale", key, check=False)
        return r.returncode == 0 and json.loads(r.stdout)["value"] == "1"

    def assert_untouched(self, node, refused_names, refused_keys):
        s = node.status()
        addresses = {m["address"] for m in s["members"]} - {""}
        self.assertLessEqual(addresses, {n.address for n in self.c.nodes}, s["members"])
        for name in refused_names:
            self.assertNotIn(name, {m["name"] for m in s["members"]})
        self.assertEqual(s["leader"], self.rogue.name)
        self.assertEqual(s["leader_address"], self.rogue.address)
        keys = node.ctl("ls", "--stale").stdout
        for key in refused_keys:
            self.assertNotIn(key.encode("unicode_escape").decode(), keys)
            self.assertNotIn(key, keys)
        return s

    def test_crafted_entries_and_snapshot_refused_everywhere(self):
        self.take_lead()
        indexes = [self.propose("member", name, address) for name, address in BAD_MEMBERS]
        indexes += [self.propose("key", key) for key in BAD_KEYS]
        indexes.append(self.propose("conf", *BAD_CONF))
        self.propose("set", "marker", "1")
        for n in self.followers:
            self.c.wait(lambda: self.get(n, "marker"), what="%s applying the marker" % n.name)
            # the configuration change itself is Raft's and takes effect: a
            # learner, whose record (name and address) was refused
            self.c.wait(lambda: len(n.status()["members"]) == 4,
                        what="%s publishing the learner" % n.name)
        for n in self.followers:
            s = self.assert_untouched(n, ["mallory", "bad name"], BAD_KEYS)
            self.assertEqual(s["refused_entries"], len(indexes), n.name)
            log = n.read_log()
            for index in indexes:
                lines = re.findall(r"entry %d \(term \d+\) refused, .*" % index, log)
                self.assertEqual(len(lines), 1, "%s: entry %d: %s" % (n.name, index, lines))
            # the text of a refused record is echoed escaped: no line of it
            self.assertNotIn("\nlogfile", log)
            self.assertNotIn("\nserver 192.0.2", log)

        # A follower that comes back without its data (a replaced disk)
        # catches up by the rogue's snapshot: the appends the rogue's
        # transport queued for it while it was away no longer fit its log.
        late, other = self.followers[1], self.followers[0]
        late.stop()
        shutil.rmtree(late.data_dir)
        self.propose("set", "marker2", "1")
        self.c.wait(lambda: self.get(other, "marker2"), what="the second marker")
        snapshot_at = self.rogue.command("compact", "mallory2", BAD_MEMBERS[0][1], "bad\nkey2")
        self.assertIsNotNone(snapshot_at)
        late.start()
        self.c.wait(lambda: self.get(late, "marker2"), what="%s catching up" % late.name)
        log = late.read_log()
        self.assertIn("installed the leader's snapshot at index %d" % snapshot_at, log)
        refused = re.findall(r"snapshot at index %d \(term \d+\): record refused, left out: (.*)"
                             % snapshot_at, log)
        self.assertEqual(len(refused), 2, refused)
        self.assertIn("mallory2", refused[0] + refused[1])
        s = self.assert_untouched(late, ["mallory", "mallory2", "bad name"],
                                  BAD_KEYS + ["bad\nkey2"])
        self.assertEqual(s["refused_entries"], 2)
        # the one that stayed never installed it, and counted nothing more
        self.assertEqual(other.status()["refused_entries"], len(indexes))
        # a plain request passes, as before
        self.propose("set", "marker3", "1")
        for n in self.followers:
            self.c.wait(lambda: self.get(n, "marker3"), what="%s applying a write" % n.name)


if __name__ == "__main__":
    from cluster import main
    main()
