"""The vip plugin inside real sparrowd processes, under the sanitizers of
the build, without NetworkManager (each node's private bus has none) and on
an interface that does not exist: nothing on the machine is touched.  What
is left to check is what an admin would see: the leader reports why it
cannot hold the address, the followers hold nothing, a handover moves the
report, and every node stops cleanly."""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from cluster import Cluster, main  # noqa: E402

ADDRESS = "10.77.0.100/24@spvip-none0"


def vip(node):
    s = node.status()
    return next((p for p in s["plugins"] if p["name"] == "vip"), None) if s else None


class VipWithoutNetworkManager(unittest.TestCase):
    def test_leader_reports_followers_hold_nothing(self):
        if not os.environ.get("SPARROW_PLUGIN_DIR"):
            self.skipTest("the vip plugin is not built (libnm missing)")
        c = Cluster(3)
        self.addCleanup(c.teardown)
        for n in c.nodes:
            n.write_config(c.nodes, extra="[vip]\naddresses = %s\non-failure = stay\n" % ADDRESS)
        c.start()
        old = c.node(c.wait_leader())
        error = "spvip-none0: NetworkManager has no device spvip-none0"
        c.wait(lambda: (vip(old) or {}).get("state") == "failed", what="the leader's report")
        self.assertEqual(vip(old)["last_error"], error)
        self.assertEqual(vip(old)["details"]["interfaces"], {"spvip-none0": "missing"})
        for n in c.nodes:
            if n is not old:
                p = vip(n)
                self.assertEqual(p["state"], "inactive", n.name)
                self.assertEqual(p["details"]["addresses"], ["10.77.0.100/24@spvip-none0"])
                self.assertEqual(p["details"]["held"], [])

        # A planned handover: the old leader releases, the new one reports.
        old.ctl("transfer")
        new = c.node(c.wait(lambda: (c.leader() or old.name) != old.name and c.leader(),
                            what="another leader"))
        c.wait(lambda: (vip(new) or {}).get("state") == "failed", what="the new leader's report")
        self.assertEqual(vip(new)["last_error"], error)
        c.wait(lambda: vip(old)["state"] == "inactive", what="the old leader inactive")

        for n in c.nodes:
            self.assertEqual(n.stop(), 0, n.read_log())


if __name__ == "__main__":
    main()
