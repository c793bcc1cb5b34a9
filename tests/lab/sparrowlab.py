"""A 3-node lab with sparrow's Debian packages installed, TLS on, default
timings, and the example leader-only unit enabled on every node, taking
0.3 s to stop as real workloads do: the setup the lab tests of sparrow
share (test_sparrow.py, test_fence.py) and bench/lab-failover.py reuses.
ClassLabCase, make_certs() and write_config() are what test_vip.py and
test_timesync.py, whose labs live for a class, share of it."""

import os
import tempfile
import time
import unittest

import lab

SOURCE = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
EXAMPLE = "sparrow-leader-example.service"
TARGET = "sparrow-leader.target"
MARKER = "/run/sparrow/leader"


# Capability numbers (linux/capability.h), as /proc/PID/status counts them.
CAP_DAC_OVERRIDE = 1
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
# What sparrowd needs as shipped (the vip plugin's); the timesync drop-in
# adds CAP_DAC_OVERRIDE.
DAEMON_CAPS = (CAP_NET_ADMIN, CAP_NET_RAW)
# A command's prefix that runs it as sparrowd's user, as a compromised
# sparrowd would.
AS_SPARROW = "setpriv --reuid=sparrow --regid=sparrow --init-groups "


def make_certs(work):
    """A CA and the certificates of n1..n3 in work/certs (tools/sparrow-certs);
    returns that directory."""
    certs = os.path.join(work, "certs")
    tool = os.path.join(SOURCE, "tools", "sparrow-certs")
    lab.run(tool, "ca", certs)
    for i in range(3):
        lab.run(tool, "node", certs, "n%d" % (i + 1))
    return certs


def group_id(node, name):
    """The gid of group name in node's /etc/group."""
    with open(os.path.join(node.root, "etc/group")) as f:
        for line in f:
            fields = line.split(":")
            if fields[0] == name:
                return int(fields[2])
    raise lab.LabError("%s: no group %s" % (node.name, name))


def install_tls(node, certs):
    """node's /etc/sparrow/tls from certs (make_certs): ca.pem, node.pem and
    node.key, as doc/deploy.md has them: the key readable by group sparrow
    (sparrowd's user's, created by the package), nobody else."""
    tls = os.path.join(node.root, "etc/sparrow/tls")
    os.makedirs(tls, exist_ok=True)
    for src, dst in (("ca.pem", "ca.pem"), (node.name + ".pem", "node.pem"),
                     (node.name + ".key", "node.key")):
        lab.run("cp", os.path.join(certs, src), os.path.join(tls, dst))
    gid = group_id(node, "sparrow")
    for path, mode in ((tls, 0o750), (os.path.join(tls, "node.key"), 0o640)):
        os.chown(path, 0, gid)
        os.chmod(path, mode)


def write_config(node, certs, extra=""):
    """node's /etc/sparrow: a sparrow.conf naming every member of its lab,
    TLS on with its certificate from certs (install_tls), then extra (more
    groups)."""
    members = ";".join("%s=%s:7400" % (n.name, n.ip) for n in node.lab.members)
    lab.write(os.path.join(node.root, "etc/sparrow/sparrow.conf"),
              "[node]\nname = %s\nlisten = %s:7400\n[cluster]\ninitial-members = %s\n"
              "[tls]\nca = /etc/sparrow/tls/ca.pem\ncert = /etc/sparrow/tls/node.pem\n"
              "key = /etc/sparrow/tls/node.key\n%s" % (node.name, node.ip, members, extra))
    install_tls(node, certs)


def with_units(units):
    """Has setUp install units ({file name: text}) on every member before
    it boots, enabled like the example."""
    def mark(test):
        test.units = units
        return test
    return mark


class ClassLabCase(unittest.TestCase):
    """One lab for all the tests of a class, in order, with sparrow's
    packages installed (on a rootfs of packages) and configure(node) run
    on every member before it boots; the class starts what it needs."""

    packages = lab.PACKAGES

    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="sparrow-lab-certs-")
        try:
            cls.debs = lab.build_debs(SOURCE)
            cls.certs = make_certs(cls.work)
            cls.lab = lab.Lab(3, debs=cls.debs.values(), setup=cls.configure,
                              packages=cls.packages)
            cls.lab.up()
        except BaseException:
            lab.run("rm", "-rf", cls.work)
            raise

    @classmethod
    def tearDownClass(cls):
        cls.lab.down()
        lab.run("rm", "-rf", cls.work)


def assert_least_privilege(test, node, caps=DAEMON_CAPS):
    """node's sparrowd runs as user sparrow, not root, with exactly caps as
    its effective, permitted, ambient and bounding capabilities, and can
    gain no others (no_new_privs, a seccomp filter)."""
    pid = node.sh("systemctl show --property=MainPID --value sparrow.service").stdout.strip()
    test.assertNotIn(pid, ("", "0"))
    status = dict(line.split(":", 1) for line in node.sh("cat /proc/%s/status" % pid)
                  .stdout.splitlines())
    status = {k: v.strip() for k, v in status.items()}
    uid = node.sh("id -u sparrow").stdout.strip()
    gid = node.sh("id -g sparrow").stdout.strip()
    test.assertNotEqual(uid, "0")
    test.assertEqual(status["Uid"].split(), [uid] * 4)
    test.assertEqual(status["Gid"].split(), [gid] * 4)
    test.assertLessEqual(set(status["Groups"].split()), {gid})
    want = sum(1 << c for c in caps)
    for field in ("CapEff", "CapPrm", "CapAmb", "CapBnd"):
        test.assertEqual(int(status[field], 16), want,
                         "%s %s: %s, not %#x" % (node.name, field, status[field], want))
    test.assertEqual(status["NoNewPrivs"], "1")
    test.assertEqual(status["Seccomp"], "2")
    print("%s: sparrowd (pid %s) uid %s, CapEff %s" % (node.name, pid, uid, status["CapEff"]))


class SparrowLabCase(unittest.TestCase):
    """Builds the packages once (lab.build_debs caches them); each test gets
    a fresh lab."""

    # More of sparrow.conf (groups of plugins), for every member.
    extra_config = ""

    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="sparrow-lab-certs-")
        cls.debs = lab.build_debs(SOURCE)
        cls.certs = make_certs(cls.work)

    @classmethod
    def tearDownClass(cls):
        lab.run("rm", "-rf", cls.work)

    def setUp(self):
        self.units = getattr(getattr(self, self._testMethodName), "units", {})
        self.lab = lab.Lab(3, debs=self.debs.values(), setup=self.configure)
        self.lab.up()
        self.addCleanup(self.lab.down)
        for n in self.lab.members:
            n.sh("systemctl enable %s && systemctl enable --now sparrow.target"
                 % " ".join([EXAMPLE, *self.units]))

    def configure(self, node):
        write_config(node, self.certs, self.extra_config)
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
        with open(os.path.join(node.root, "usr/share/doc/sparrow/examples", EXAMPLE)) as f:
            lab.write(os.path.join(node.root, "usr/lib/systemd/system", EXAMPLE), f.read())
        for name, text in self.units.items():
            lab.write(os.path.join(node.root, "etc/systemd/system", name), text)

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
                # What sparrowd, its fence keeper and systemd did, for the report.
                print(node.sh("journalctl --no-pager -o short-monotonic -u sparrow.service "
                              "-u sparrow-fence.service -u %s -u %s | tail -120"
                              % (TARGET, EXAMPLE), check=False).stdout, flush=True)
                self.fail("%s still runs the leader-only units" % node.name)
            time.sleep(0.05)

    def role(self, node):
        """The role node's daemon publishes on its bus."""
        out = node.sh("busctl get-property org.sparrow.cluster1 /org/sparrow/cluster1 "
                      "org.sparrow.cluster1.Manager Role", check=False).stdout.split()
        return out[-1].strip('"') if out else ""

    def leader_state(self, node):
        """What node has of leadership, in one look: the jobs systemd has
        queued ("unit/type"), the states of the target and of the
        leader-only unit, and whether the marker is there."""
        out = node.sh("echo jobs $(systemctl list-jobs --no-legend | awk '{print $2 \"/\" $3}');"
                      "echo target $(systemctl is-active %s);"
                      "echo unit $(systemctl is-active %s);"
                      "echo marker $(test -e %s && echo yes || echo no)"
                      % (TARGET, EXAMPLE, MARKER), check=False).stdout
        state = dict((line.split(" ", 1) + [""])[:2] for line in out.splitlines())
        state["jobs"] = state.get("jobs", "").split()
        return state

    def holds(self, state):
        """Whether a node in state runs, starts or may start the leader-only units."""
        return (TARGET + "/start" in state["jobs"] or EXAMPLE + "/start" in state["jobs"]
                or state["target"] != "inactive" or state["unit"] in ("active", "activating")
                or state["marker"] != "no")
