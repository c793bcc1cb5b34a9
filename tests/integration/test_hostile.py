"""Only members speak Raft: a real 3-node cluster over mutual TLS, and a
hostile peer (tests/hostile-peer.c, the real transport) with certificates
the cluster CA signed, sending forced votes, TimeoutNow, appends,
heartbeats, snapshots and transfer requests.  Leader, term and lease must
not move; each refusal shows in the victims' logs, which the tests wait
for (with a deadline) before they look at the cluster."""

import os
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cluster import SPARROW_CERTS, Cluster  # noqa: E402

HOSTILE_PEER = os.environ.get("HOSTILE_PEER")
ALL_KINDS = "vote,append,heartbeat,snapshot,transfer-request,timeout-now"
# What a member may send anyway (Appends of a higher term and transfer
# requests are its right); what it must not get away with.
MEMBER_KINDS = "vote,timeout-now"


def fingerprint(pem):
    out = subprocess.run(["openssl", "x509", "-noout", "-fingerprint", "-sha256", "-in", pem],
                         check=True, capture_output=True, text=True).stdout
    return out.strip().split("=", 1)[1]


@unittest.skipUnless(HOSTILE_PEER, "HOSTILE_PEER is not set (run through meson test)")
@unittest.skipUnless(shutil.which("openssl"), "openssl is not installed")
class Hostile(unittest.TestCase):
    def setUp(self):
        self.c = Cluster(3, tls=True)
        self.addCleanup(self.c.teardown)
        # n3's first certificate, replaced (same name, same CA) and revoked
        # on every node.
        self.old = os.path.join(self.c.dir, "old-certs")
        os.makedirs(self.old)
        for f in ("ca.pem", "ca.key"):
            shutil.copy(os.path.join(self.c.certs, f), self.old)
        self.c.tls_files("n3", self.old)
        revoked = "revoked = %s\n" % fingerprint(os.path.join(self.old, "n3.pem"))
        for n in self.c.nodes:
            n.write_config(self.c.nodes, tls=self.c.tls_files(n.name), extra=revoked)
        self.c.start()
        self.leader = self.c.node(self.c.wait_leader())
        self.c.wait(lambda: self.leader.status()["lease_valid"], what="the leader's lease")
        self.term = self.leader.status()["term"]

    def attack(self, name, kinds, victims, certs=None, cert_name=None, claim_id=None):
        ca, pem, key = self.c.tls_files(cert_name or name, certs)
        args = [HOSTILE_PEER, "--name", name, "--cert", pem, "--key", key, "--ca", ca,
                "--term", str(self.term), "--kinds", kinds, "--duration-ms", "1500"]
        for v in victims:
            args += ["--target", "%s=%s" % (v.name, v.address)]
        if claim_id:
            args += ["--id", claim_id]
        r = subprocess.run(args, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)

    def wait_logged(self, nodes, text):
        for n in nodes:
            self.c.wait(lambda n=n: text in n.read_log(), timeout=20,
                        what="%r in %s's log" % (text, n.name))

    def assert_unmoved(self, nodes):
        """Leader, term and lease as before, on every given node."""
        for n in nodes:
            s = n.status()
            self.assertEqual(s["term"], self.term, n.name)
            self.assertEqual(s["leader"], self.leader.name, n.name)
        self.assertTrue(self.leader.status()["lease_valid"])
        self.assertEqual(self.c.leaders(), [self.leader.name])

    def test_non_member_certificate_gets_no_further_than_the_hello(self):
        # mallory: a certificate the cluster CA signed, for a name that is no member.
        self.attack("mallory", ALL_KINDS, self.c.nodes)
        self.wait_logged(self.c.nodes, "mallory is not a member; closing")
        self.assert_unmoved(self.c.nodes)

    def test_member_certificate_with_another_id_is_refused(self):
        victims = [n for n in self.c.nodes if n.name != "n3"]
        self.attack("n3", ALL_KINDS, victims, claim_id="%016x" % 0x1234)
        self.wait_logged(victims, "certificate refused: claims the id 0000000000001234, n3's is")
        self.assert_unmoved(self.c.nodes)

    def test_member_forcing_votes_moves_nobody(self):
        # n3 stopped; its certificate (a member's) in hostile hands: forced
        # votes without the leader's notice, TimeoutNow not from the leader.
        n3 = self.c.node("n3")
        if n3 is self.leader:
            n3 = next(n for n in self.c.nodes if n is not self.leader)
        n3.kill()
        victims = [n for n in self.c.nodes if n is not n3]
        self.attack(n3.name, MEMBER_KINDS, victims)
        self.wait_logged(victims, "dropped TimeoutNow from %s" % n3.name)
        self.assert_unmoved(victims)

    def test_removed_member_refused_at_the_hello(self):
        victim = next(n for n in self.c.nodes if n is not self.leader)
        victim.kill()
        self.c.wait(lambda: self.leader.ctl("members", "remove", victim.name,
                                            check=False).returncode == 0,
                    what="%s removed" % victim.name)
        rest = [n for n in self.c.nodes if n is not victim]
        self.c.wait(lambda: all(victim.name not in [m["name"] for m in n.status()["members"]]
                                for n in rest), what="the removal everywhere")
        self.term = self.leader.status()["term"]
        self.attack(victim.name, ALL_KINDS, rest)
        self.wait_logged(rest, "%s is not a member; closing" % victim.name)
        self.assert_unmoved(rest)

    def test_revoked_certificate_refused(self):
        # n3's old certificate: the CA signed it for a member's name, but it
        # was replaced and revoked.
        victims = [n for n in self.c.nodes if n.name != "n3"]
        self.attack("n3", ALL_KINDS, victims, certs=self.old)
        self.wait_logged(victims, "certificate refused: revoked (SHA-256")
        self.assert_unmoved(self.c.nodes)


if __name__ == "__main__":
    from cluster import main
    main()
