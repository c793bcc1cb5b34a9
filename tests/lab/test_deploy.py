"""doc/deploy.md, run as written: its command blocks, in order, on three
real hosts (alpha, beta, gamma: the lab's n1, n2, n3) and the admin's
machine (the observer), with the packages built from this tree, and the
lab's addresses for 192.0.2.11-13; the hosts' firewall drops what it does
not allow, until the document's nftables rule lets the members in.  The copy block's ssh and scp lines are
done between the hosts' file systems (the lab has no sshd).  Then the
cluster the document promises: one leader, every member reachable, the CA
key on the admin's machine only.  And what the package promises on
upgrade and removal.  Opt-in: SPARROW_LAB=1."""

import json
import os
import re
import shlex
import shutil
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
import lab  # noqa: E402
import sparrowlab  # noqa: E402

SOURCE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOC = os.path.join(SOURCE, "doc", "deploy.md")
HOSTS = ("alpha", "beta", "gamma")
# The hosts' firewall before the walkthrough: Debian's nftables set-up,
# dropping what it does not allow.
FIREWALL = """#!/usr/sbin/nft -f
flush ruleset
table inet filter {
	chain input {
		type filter hook input priority filter; policy drop;
		iif lo accept
		ct state established,related accept
		icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
	}
}
"""


def blocks(text):
    """(marker, argument, code) of every ```sh block: each is preceded by
    a marker saying where it runs (run: HOSTS), that it copies (copy), or
    why the lab does not run it (lab: WHY)."""
    out = []
    for m in re.finditer(r"(?:<!-- (\w+):([^>]*)-->\n)?```sh\n(.*?)```", text, re.S):
        if not m.group(1):
            raise AssertionError("%s: a sh block without a marker: %r" % (DOC, m.group(3)[:60]))
        out.append((m.group(1), m.group(2).strip(), m.group(3)))
    return out


class Deploy(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.debs = lab.build_debs(SOURCE)
        cls.lab = lab.Lab(3)
        cls.lab.up()
        for n in cls.lab.members:
            lab.write(os.path.join(n.root, "etc/nftables.conf"), FIREWALL, mode=0o755)
            n.sh("nft -f /etc/nftables.conf")

    @classmethod
    def tearDownClass(cls):
        cls.lab.down()

    def host(self, name):
        return self.lab.observer if name == "admin" else self.lab.members[HOSTS.index(name)]

    def lab_text(self, code):
        return re.sub(r"192\.0\.2\.(1[123])\b", lab.NET + r"\1", code)

    def run_on(self, name, code):
        r = self.host(name).sh("cd /root && " + self.lab_text(code), check=False, timeout=120)
        self.assertEqual(r.returncode, 0, "on %s:\n%s\n%s%s" % (name, code, r.stdout, r.stderr))
        return r.stdout

    def port(self):
        """What alpha's connection to beta's port 7400 meets: "dropped" (by
        the firewall), "refused" (nothing listens yet) or "open"."""
        r = self.lab.members[0].sh("timeout 3 bash -c '</dev/tcp/%s/7400'"
                                   % self.lab.members[1].ip, check=False)
        return {124: "dropped", 0: "open"}.get(r.returncode, "refused")

    def copy(self, code):
        """Each line: `ssh root@HOST COMMAND` or `scp FILE... root@HOST:DIR`,
        from the admin's machine."""
        for line in code.strip().splitlines():
            words = shlex.split(line)
            if words[0] == "ssh" and words[1].startswith("root@"):
                self.run_on(words[1][len("root@"):], shlex.join(words[2:]))
            elif words[0] == "scp" and re.fullmatch(r"root@\w+:\S+", words[-1]):
                name, target = words[-1][len("root@"):].split(":", 1)
                for f in words[1:-1]:
                    src = os.path.join(self.lab.observer.root, "root", f)
                    dst = os.path.join(self.host(name).root, target.lstrip("/"),
                                       os.path.basename(f))
                    shutil.copy2(src, dst)
            else:
                self.fail("%s: a copy line the lab cannot do: %s" % (DOC, line))

    def test_1_walkthrough(self):
        with open(DOC) as f:
            steps = blocks(f.read())
        for node in self.lab.nodes:
            for deb in self.debs.values():
                shutil.copy(deb, os.path.join(node.root, "root"))
        ran = 0
        for marker, argument, code in steps:
            if marker == "run":
                firewall = code.startswith("nft ")
                if firewall:
                    self.assertEqual(self.port(), "dropped")
                for name in argument.split():
                    out = self.run_on(name, code)
                    out = "\n".join(line for line in out.splitlines()
                                    if not line.startswith("(Reading database"))
                    print("--- %s: %s\n%s" % (name, code.strip().splitlines()[0], out.strip()))
                ran += 1
                if firewall:
                    self.assertEqual(self.port(), "refused")
                if code.startswith("apt-get install") and argument != "admin":
                    # Installed, and nothing enabled or started.
                    for name in argument.split():
                        n = self.host(name)
                        self.assertEqual(n.sh("systemctl is-enabled sparrow.target",
                                              check=False).stdout.strip(), "disabled")
                        self.assertEqual(n.sh("systemctl is-active sparrow.service",
                                              check=False).stdout.strip(), "inactive")
            elif marker == "copy":
                self.copy(code)
                ran += 1
            else:
                self.assertEqual(marker, "lab", "%s: unknown marker %s" % (DOC, marker))
        self.assertGreaterEqual(ran, 9)

        # What step 7 shows once the election is over: the same leader
        # everywhere, every member reachable from every member.
        t0 = time.monotonic()
        while True:
            status = [json.loads(n.sh("sparrowctl --json status").stdout)
                      for n in self.lab.members]
            leaders = {s.get("leader") for s in status}
            reachable = {(s["node"], m["name"]) for s in status for m in s["members"]
                         if m["reachable"]}
            if (len(leaders) == 1 and None not in leaders and "" not in leaders
                    and len(reachable) == 9):
                break
            self.assertLess(time.monotonic() - t0, 20, status)
            time.sleep(0.2)
        print("leader %s, every member reachable from every member, %.1f s after the status"
              " of step 7" % (leaders.pop(), time.monotonic() - t0))
        out = self.lab.members[0].sh("sparrowctl status").stdout
        print(out)
        for name in HOSTS:
            self.assertIn(name, out)
        for n in self.lab.members:
            self.assertEqual(n.sh("systemctl is-active sparrow.service").stdout.strip(), "active")
            self.assertFalse(os.path.exists(os.path.join(n.root, "etc/sparrow/tls/ca.key")))
            self.assertEqual(sorted(os.listdir(os.path.join(n.root, "etc/sparrow/tls"))),
                             sorted(["ca.pem", HOSTS[self.lab.members.index(n)] + ".pem",
                                     HOSTS[self.lab.members.index(n)] + ".key"]))
            # The key: root's and group sparrow's (sparrowd's), nobody else's.
            key = "/etc/sparrow/tls/%s.key" % HOSTS[self.lab.members.index(n)]
            self.assertEqual(n.sh("stat -c '%U:%G %a' " + key).stdout.strip(), "root:sparrow 640")
            sparrowlab.assert_least_privilege(self, n)

    def test_2_upgrade_leaves_nodes_as_they_are_removal_stops(self):
        """Reinstalling (an upgrade's maintainer scripts) neither restarts a
        running node nor starts a stopped one; removing the package stops
        the node."""
        alpha, beta, gamma = self.lab.members
        gamma.sh("systemctl stop sparrow.target sparrow.service")
        pid = alpha.sh("systemctl show --property=MainPID --value sparrow.service").stdout.strip()
        self.assertNotEqual(pid, "0")
        for n in (alpha, gamma):
            n.sh("cd /root && apt-get install -y --reinstall ./%s"
                 % os.path.basename(self.debs["sparrow"]), timeout=120)
        self.assertEqual(alpha.sh("systemctl show --property=MainPID --value sparrow.service")
                         .stdout.strip(), pid)
        time.sleep(1)
        self.assertEqual(gamma.sh("systemctl is-active sparrow.service", check=False)
                         .stdout.strip(), "inactive")
        beta.sh("apt-get remove -y sparrow", timeout=120)
        self.assertEqual(beta.sh("systemctl is-active sparrow.service", check=False)
                         .stdout.strip(), "inactive")
        self.assertFalse(os.path.exists(os.path.join(beta.root, "usr/sbin/sparrowd")))


if __name__ == "__main__":
    lab.test_main()
