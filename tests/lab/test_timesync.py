"""The timesync plugin on real hosts: the leader serves time through
chronyd, the followers' chronyd selects it and switches to a new leader
(a crash, a planned transfer) through `reload sources`, never restarted;
the admin's chrony.conf is never touched and comes back in use when
sparrow stops; a node without chrony reports it and the cluster goes on.
Then the same with ntpd (ntpsec), restarted through systemd, in a lab of
its own (ntpsec conflicts with chrony).  One lab per backend, its tests in
order.  Opt-in: SPARROW_LAB=1."""

import hashlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import lab  # noqa: E402
import sparrowlab  # noqa: E402

PLUGIN = "/org/sparrow/cluster1/plugin/timesync org.sparrow.cluster1.Plugin"
VIP = "10.77.0.100"
# A source of the admin's own, beside the pool of Debian's chrony.conf
# (unreachable in the lab): what chronyd uses again once sparrow stops.
ADMIN_SOURCE = "10.77.0.250"
DROP_IN = "/etc/chrony/conf.d/sparrow.conf"
TIMESYNC_DROP_IN = "/usr/share/sparrow/sparrow.service.d/timesync.conf"
# sparrowd's capabilities with that drop-in.
CAPS = sparrowlab.DAEMON_CAPS + (sparrowlab.CAP_DAC_OVERRIDE,)
SOURCES = "/etc/chrony/sources.d/sparrow.sources"
# What a symlink planted at SOURCES points to: sparrowd must replace the
# link, never write through it.
VICTIM = "/etc/sparrow-victim"
VICTIM_TEXT = "# not sparrow's\n"
NTPD_WRAPPER = """#!/bin/sh
skip=
for a do
    shift
    if [ -n "$skip" ]; then skip=; continue; fi
    if [ "$a" = -u ]; then skip=1; continue; fi
    set -- "$@" "$a"
done
exec /usr/libexec/lab/ntpd "$@"
"""


def sources(node):
    """chronyd's sources on node: {address: (state, offset in s)}."""
    out = node.sh("chronyc -c -n sources", check=False).stdout
    found = {}
    for line in out.splitlines():
        f = line.split(",")
        if len(f) >= 10:
            found[f[2]] = (f[1], float(f[8]))
    return found


def selected(node):
    """The address chronyd selected on node ('*'), or None."""
    return next((a for a, (state, _) in sources(node).items() if state == "*"), None)


def ntpd_selected(node):
    """The address ntpd selected on node ('*' in ntpq -p), or None."""
    for line in node.sh("ntpq -n -p", check=False).stdout.splitlines():
        if line.startswith("*"):
            return line[1:].split()[0]
    return None


def chronyd_pid(node):
    return node.sh("cat /run/chrony/chronyd.pid", check=False).stdout.strip()


def conf_digest(node, backend="chrony"):
    path = "etc/chrony/chrony.conf" if backend == "chrony" else "etc/ntpsec/ntp.conf"
    with open(os.path.join(node.root, path), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


class Timesync(sparrowlab.ClassLabCase):
    backend = "chrony"
    poll = "minpoll = -2\nmaxpoll = 2\n"

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.digests = {n.name: conf_digest(n, cls.backend) for n in cls.lab.members}
        for n in cls.lab.members:
            n.sh("systemctl enable --now sparrow.target")

    @classmethod
    def has_vip(cls):
        return "sparrow-plugin-vip" in cls.debs

    @classmethod
    def configure(cls, node):
        sparrowlab.write_config(node, cls.certs,
                                "[timesync]\nbackend = %s\nallow = 10.77.0.0/24\n%s%s"
                                % (cls.backend, cls.poll, "[vip]\naddresses = %s/24@eth0\n" % VIP
                                   if cls.has_vip() else ""))
        # The plugin's rights, as sparrow.conf(5) has the admin enable them.
        drop_ins = os.path.join(node.root, "etc/systemd/system/sparrow.service.d")
        os.makedirs(drop_ins, exist_ok=True)
        os.symlink(TIMESYNC_DROP_IN, os.path.join(drop_ins, "timesync.conf"))
        if cls.backend == "chrony":
            lab.write(os.path.join(node.root, "etc/chrony/sources.d/admin.sources"),
                      "server %s iburst\n" % ADMIN_SOURCE)
            lab.write(os.path.join(node.root, VICTIM.lstrip("/")), VICTIM_TEXT)
            os.symlink(VICTIM, os.path.join(node.root, SOURCES.lstrip("/")))
        else:
            # As the lab does for chronyd (-x): ntpd without CAP_SYS_TIME,
            # which it could not keep when it drops root (-u): it stays root.
            lab.write(os.path.join(node.root, "etc/systemd/system/ntpsec.service.d/lab.conf"),
                      "[Unit]\nConditionCapability=\n")
            real = os.path.join(node.root, "usr/libexec/lab/ntpd")
            os.makedirs(os.path.dirname(real), exist_ok=True)
            lab.run("cp", "-a", os.path.join(node.root, "usr/sbin/ntpd"), real)
            lab.write(os.path.join(node.root, "usr/sbin/ntpd"), NTPD_WRAPPER, mode=0o755)

    # -- helpers ----------------------------------------------------------

    def wait(self, what, check, timeout):
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                self.fail("timed out (%d s) waiting for %s" % (timeout, what))
            time.sleep(0.1)

    def leader(self, nodes=None, timeout=20):
        """The leader every node of nodes (default: all) names, among them."""
        nodes = nodes or self.lab.members

        def one():
            names = {(n.sh("sparrowctl leader", check=False).stdout.split() or [""])[0]
                     for n in nodes}
            by_name = {n.name: n for n in nodes}
            return by_name.get(names.pop()) if len(names) == 1 else None
        return self.wait("one leader", one, timeout)

    def wait_following(self, followers, leader, timeout=20):
        """Until every follower's chronyd selected leader; the seconds it took."""
        start = time.monotonic()
        self.wait("%s selecting %s" % ([f.name for f in followers], leader.name),
                  lambda: all(selected(f) == leader.ip for f in followers), timeout)
        return time.monotonic() - start

    def details(self, node):
        out = node.sh("busctl get-property org.sparrow.cluster1 %s Details" % PLUGIN).stdout
        return out

    def prop(self, node, name):
        out = node.sh("busctl get-property org.sparrow.cluster1 %s %s" % (PLUGIN, name)).stdout
        return out.split(" ", 1)[1].strip().strip('"')

    # -- the tests, in order ------------------------------------------------

    def test_0_symlink_replaced_not_followed(self):
        if self.backend != "chrony":
            self.skipTest("chrony only")
        for n in self.lab.members:
            path = os.path.join(n.root, SOURCES.lstrip("/"))
            self.wait("%s's %s written" % (n.name, SOURCES),
                      lambda: not os.path.islink(path) and os.path.isfile(path), 30)
            with open(os.path.join(n.root, VICTIM.lstrip("/"))) as f:
                self.assertEqual(f.read(), VICTIM_TEXT)

    def test_1_followers_select_the_leader(self):
        if self.backend != "chrony":
            self.skipTest("chrony only")
        leader = self.leader()
        followers = [n for n in self.lab.members if n is not leader]
        took = self.wait_following(followers, leader, timeout=30)
        print("followers selected %s after %.1f s" % (leader.name, took))
        for f in followers:
            self.assertIn("prefer", f.sh("cat " + SOURCES).stdout)
            offset = sources(f)[leader.ip][1]
            print("%s: offset to the leader %.6f s" % (f.name, offset))
            self.assertLess(abs(offset), 0.001)
        # The leader serves its own clock: no source of its own selected.
        self.assertNotIn(leader.ip, sources(leader))
        self.assertIn("local stratum 10 distance 0", leader.sh("cat " + DROP_IN).stdout)
        # What a user sees of it.
        f = followers[0]
        self.wait("the status on D-Bus",
                  lambda: '"synchronised" b true' in self.details(f), 40)
        self.assertIn('"source" s "%s"' % leader.ip, self.details(f))
        self.assertEqual(self.prop(f, "State"), "active")
        status = f.sh("sparrowctl status").stdout
        self.assertIn("TIME (chrony, follower): synchronised to %s, stratum 10" % leader.ip,
                      status)
        print(status)
        for n in self.lab.members:
            sparrowlab.assert_least_privilege(self, n, CAPS)

    def test_2_leader_crash(self):
        if self.backend != "chrony":
            self.skipTest("chrony only")
        old = self.leader()
        followers = [n for n in self.lab.members if n is not old]
        self.wait_following(followers, old, timeout=30)
        pids = {f.name: chronyd_pid(f) for f in followers}
        old.kill()
        t0 = time.monotonic()
        new = self.leader(followers)
        survivor = [f for f in followers if f is not new]
        self.wait_following(survivor, new, timeout=30)
        print("crash of %s: %s selected %s %.1f s after the crash"
              % (old.name, survivor[0].name, new.name, time.monotonic() - t0))
        for f in followers:
            self.assertEqual(chronyd_pid(f), pids[f.name], "%s: chronyd restarted" % f.name)
        old.reboot()
        self.wait_following([old], new, timeout=60)
        self.assertEqual(self.leader(), new)

    def test_3_planned_transfer(self):
        if self.backend != "chrony":
            self.skipTest("chrony only")
        old = self.leader()
        followers = [n for n in self.lab.members if n is not old]
        self.wait_following(followers, old, timeout=30)
        pids = {n.name: chronyd_pid(n) for n in self.lab.members}
        target = followers[0]
        t0 = time.monotonic()
        old.sh("sparrowctl transfer " + target.name)
        self.assertEqual(self.leader(), target)
        others = [n for n in self.lab.members if n is not target]
        self.wait_following(others, target, timeout=30)
        print("transfer to %s: every follower selected it %.1f s after"
              % (target.name, time.monotonic() - t0))
        for n in self.lab.members:
            self.assertEqual(chronyd_pid(n), pids[n.name], "%s: chronyd restarted" % n.name)

    def test_5_stop_gives_back_the_admin_config(self):
        if self.backend != "chrony":
            self.skipTest("chrony only")
        leader = self.leader()
        f = next(n for n in self.lab.members if n is not leader)
        self.assertIn(leader.ip, sources(f))
        f.sh("systemctl stop sparrow.service")
        for path in (DROP_IN, SOURCES):
            self.assertFalse(os.path.exists(f.root + path), path + " left behind")
        self.wait("%s's chronyd back on the admin's sources" % f.name,
                  lambda: leader.ip not in sources(f) and ADMIN_SOURCE in sources(f), 15)
        self.assertEqual(f.sh("systemctl is-active chrony").stdout.strip(), "active")
        for n in self.lab.members:
            self.assertEqual(conf_digest(n), self.digests[n.name], n.name)
        f.sh("systemctl start sparrow.service")
        self.wait_following([f], self.leader(), timeout=30)

    def test_6_no_chrony(self):
        if self.backend != "chrony":
            self.skipTest("chrony only")
        leader = self.leader()
        f = next(n for n in self.lab.members if n is not leader)
        f.sh("systemctl stop chrony && dpkg -r chrony >/dev/null && systemctl restart sparrow")
        self.wait("the failure on D-Bus", lambda: self.prop(f, "State") == "failed", 15)
        error = self.prop(f, "LastError")
        print("%s reports: %s" % (f.name, error))
        self.assertIn("chrony", error)
        self.assertIn("timesync", f.sh("sparrowctl status").stdout)
        self.assertIn("timesync", f.sh("journalctl -u sparrow --no-pager").stdout)
        # The cluster goes on, its leader and service address too.
        self.assertEqual(self.leader(), leader)
        self.assertEqual(f.sh("systemctl is-active sparrow").stdout.strip(), "active")
        if self.has_vip():
            self.assertIn(VIP + "/", leader.sh("ip -br addr show dev eth0").stdout)

    def test_7_without_the_drop_in(self):
        """The plugin's rights are the drop-in's: a node without it runs
        sparrowd with the vip plugin's capabilities only, and the plugin
        says what is missing."""
        if self.backend != "chrony":
            self.skipTest("chrony only")
        leader = self.leader()
        # Not test_6's node, which has no chronyd.
        f = next(n for n in self.lab.members if n is not leader
                 and n.sh("test -x /usr/sbin/chronyd", check=False).returncode == 0)
        link = "/etc/systemd/system/sparrow.service.d/timesync.conf"
        f.sh("rm %s && systemctl daemon-reload && systemctl restart sparrow" % link)
        try:
            sparrowlab.assert_least_privilege(self, f)
            self.wait("the failure on D-Bus", lambda: self.prop(f, "State") == "failed", 15)
            error = self.prop(f, "LastError")
            print("%s reports: %s" % (f.name, error))
            self.assertIn("timesync drop-in", error)
        finally:
            f.sh("ln -s %s %s && systemctl daemon-reload && systemctl restart sparrow"
                 % (TIMESYNC_DROP_IN, link))
        self.wait_following([f], self.leader(), timeout=30)


class Ntpd(Timesync):
    """Test 4: ntpd cannot change its sources at run time, so every
    change restarts ntpsec.service, through systemd."""
    backend = "ntpd"
    packages = lab.PACKAGES_NTPSEC
    poll = "minpoll = 3\nmaxpoll = 4\n"

    def unit(self, node):
        out = node.sh("systemctl show -p InvocationID -p MainPID -p ActiveState ntpsec").stdout
        return dict(line.split("=", 1) for line in out.split())

    def wait_ntp(self, followers, leader, timeout=90):
        start = time.monotonic()
        self.wait("%s selecting %s" % ([f.name for f in followers], leader.name),
                  lambda: all(ntpd_selected(f) == leader.ip for f in followers), timeout)
        return time.monotonic() - start

    def test_4_ntpd(self):
        leader = self.leader()
        followers = [n for n in self.lab.members if n is not leader]
        print("ntpd: followers selected %s after %.1f s"
              % (leader.name, self.wait_ntp(followers, leader)))
        f = followers[0]
        self.assertIn("-c /etc/ntpsec/sparrow.conf", f.sh("ps -o args= -C ntpd").stdout)
        sparrowlab.assert_least_privilege(self, f, CAPS)
        self.wait("the status on D-Bus", lambda: '"synchronised" b true' in self.details(f), 40)
        self.assertIn("TIME (ntpd, follower): synchronised to %s" % leader.ip,
                      f.sh("sparrowctl status").stdout)
        # A planned transfer: every other node's ntpd restarted by systemd
        # (a new invocation of the unit, its main process ntpd) on the new
        # leader as its source.
        units = {n.name: self.unit(n) for n in self.lab.members}
        target = followers[0]
        t0 = time.monotonic()
        leader.sh("sparrowctl transfer " + target.name)
        self.assertEqual(self.leader(), target)
        others = [n for n in self.lab.members if n is not target]
        self.wait_ntp(others, target)
        print("ntpd: transfer to %s, every follower selected it %.1f s after"
              % (target.name, time.monotonic() - t0))
        for n in others:
            now = self.unit(n)
            self.assertNotEqual(now["InvocationID"], units[n.name]["InvocationID"], n.name)
            self.assertEqual(now["ActiveState"], "active")
            self.assertEqual(n.sh("pidof ntpd").stdout.strip(), now["MainPID"])
        # sparrow stopped: ntpd back on the admin's file, untouched.
        f = others[0]
        f.sh("systemctl stop sparrow.service")
        for path in ("/etc/ntpsec/sparrow.conf",
                     "/run/systemd/system/ntpsec.service.d/sparrow.conf"):
            # Seen from inside: /run is the node's own tmpfs.
            self.assertNotEqual(f.sh("test -e " + path, check=False).returncode, 0,
                                path + " left behind")
        self.wait("ntpd on the admin's file", lambda: "-c /etc/ntpsec/ntp.conf"
                  in f.sh("ps -o args= -C ntpd", check=False).stdout, 15)
        for n in self.lab.members:
            self.assertEqual(conf_digest(n, "ntpd"), self.digests[n.name], n.name)


if __name__ == "__main__":
    lab.test_main()
