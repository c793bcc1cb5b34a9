"""The lab: real hosts booting real systemd, each with its own system bus,
NetworkManager, chronyd and polkitd, joined on one Linux bridge.

Each node is a systemd-nspawn container of a Debian 12 rootfs (built once
with debootstrap and cached), seen through its own copy-on-write overlay,
in its own network namespace.  The bridge lives in a namespace of its own,
so nothing touches the machine's interfaces; the lab network is
10.77.0.0/24 and fd77::/64.  Everything is torn down afterwards:
containers, mounts, namespaces, directories.

Needs root, debootstrap and systemd-container.  Used by tests/lab/test_*.py
and bench/; `python3 tests/lab/lab.py up` brings a lab up for a look.
"""

import collections
import glob
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time

CACHE = os.environ.get("SPARROW_LAB_CACHE", "/var/cache/sparrow-lab")
PREFIX = "splab"
NET = "10.77.0."
NET6 = "fd77::"
PACKAGES = ("systemd,systemd-sysv,libpam-systemd,dbus,network-manager,chrony,polkitd,"
            "iproute2,iputils-arping,iputils-ping,"
            # the comparison in bench/vip-bench.py
            "keepalived,"
            # the firewall of test_deploy.py
            "nftables,"
            # sparrow's own run-time dependencies (debian/control), installed
            # here since the lab has no network: dpkg finds them
            "libglib2.0-0,glib-networking,dbus-user-session,libjson-glib-1.0-0,openssl")
# The same with ntpsec instead of chrony (Debian has them conflict): the
# timesync plugin's ntpd backend.
PACKAGES_NTPSEC = PACKAGES.replace(",chrony,", ",ntpsec,")


def stamp(packages):
    """A cached rootfs built from other packages or another prepare() is rebuilt."""
    return "packages=%s prepare=4\n" % packages

# Labs made by this process (their tags and directories), for leftovers().
MADE = []


class LabError(Exception):
    pass


def run(*cmd, check=True, **kw):
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    r = subprocess.run(list(cmd), **kw)
    if check and r.returncode != 0:
        raise LabError("%s: exit %d: %s%s" % (" ".join(cmd), r.returncode, r.stdout, r.stderr))
    return r


def missing():
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "the lab needs root"
    for tool in ("debootstrap", "systemd-nspawn", "ip", "nsenter"):
        if not shutil.which(tool):
            return "%s is not installed (apt-get install debootstrap systemd-container)" % tool
    return None


def mirror():
    """The Debian mirror this machine's apt already uses."""
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        with open(path) as f:
            text = f.read()
        for stanza in text.split("\n\n"):
            if re.search(r"^Suites:.*\bbookworm\b", stanza, re.M) and "debian-security" not in stanza:
                m = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
                if m:
                    return m.group(1)
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
        if os.path.exists(path):
            with open(path) as f:
                for line in f:
                    m = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", line)
                    if m:
                        return m.group(1)
    raise LabError("no bookworm mirror in this machine's apt sources")


def rootfs(packages=PACKAGES):
    """The cached Debian 12 rootfs, built on first use (about a minute)."""
    # One per package set: a lab of another branch may be using another.
    text = stamp(packages)
    root = os.path.join(CACHE, "bookworm-" + hashlib.sha256(text.encode()).hexdigest()[:12])
    done = os.path.join(root, ".complete")
    if os.path.exists(done):
        with open(done) as f:
            if f.read() == text:
                return root
    os.makedirs(CACHE, exist_ok=True)
    tmp = root + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    run("debootstrap", "--variant=minbase", "--include=" + packages, "bookworm", tmp, mirror())
    prepare(tmp)
    shutil.rmtree(root, ignore_errors=True)
    os.rename(tmp, root)
    with open(done, "w") as f:
        f.write(text)
    return root


def tree_files(source):
    """The files of the source tree (tracked or not, not ignored)."""
    out = run("git", "-C", source, "ls-files", "-z", "--cached", "--others",
              "--exclude-standard").stdout
    return sorted(f for f in set(out.split("\0")) if f and os.path.isfile(os.path.join(source, f)))


def build_debs(source):
    """sparrow's Debian packages, built from source as doc/deploy.md builds
    them (dpkg-buildpackage -us -uc -b; without the unit tests, which the
    suites run) in a copy of the tree, and cached per tree state: returns
    {package: path of its .deb} of sparrow and its plugins."""
    digest = hashlib.sha256()
    files = tree_files(source)
    for f in files:
        with open(os.path.join(source, f), "rb") as fh:
            digest.update(f.encode() + b"\0" + fh.read() + b"\0")
    out = os.path.join(CACHE, "debs", digest.hexdigest()[:16])
    if not os.path.exists(os.path.join(out, ".complete")):
        tmp = tempfile.mkdtemp(prefix="sparrow-deb-")
        try:
            tree = os.path.join(tmp, "sparrow")
            os.makedirs(tree)
            run("tar", "-C", source, "-cf", os.path.join(tmp, "tree.tar"), "--", *files)
            run("tar", "-C", tree, "-xf", os.path.join(tmp, "tree.tar"))
            run("dpkg-buildpackage", "-us", "-uc", "-b", cwd=tree,
                env=dict(os.environ, DEB_BUILD_OPTIONS="nocheck parallel=%d" % os.cpu_count()))
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            for deb in glob.glob(os.path.join(tmp, "*.deb")):
                if "-dbgsym_" not in deb:
                    shutil.move(deb, out)
            write(os.path.join(out, ".complete"), "")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    debs = {os.path.basename(d).split("_")[0]: d for d in glob.glob(os.path.join(out, "*.deb"))}
    # A node's packages: the Cockpit page and the GNOME Shell extension need
    # Cockpit and GNOME, which the lab's hosts do not have.
    return {p: d for p, d in debs.items() if p == "sparrow" or p.startswith("sparrow-plugin-")}


def installed_layer(debs, packages=PACKAGES):
    """An overlay layer over rootfs(packages) with debs installed by dpkg,
    cached per packages: what `apt-get install ./PACKAGE.deb` leaves on a
    host."""
    lower = rootfs(packages)
    digest = hashlib.sha256(lower.encode())
    for deb in sorted(debs):
        with open(deb, "rb") as f:
            digest.update(f.read())
    layer = os.path.join(CACHE, "installed-" + digest.hexdigest()[:12])
    if os.path.exists(layer + ".complete"):
        return layer
    tmp = tempfile.mkdtemp(prefix="sparrow-layer-", dir=CACHE)
    upper, work, root = (os.path.join(tmp, d) for d in ("upper", "work", "root"))
    for d in (upper, work, root):
        os.makedirs(d)
    try:
        run("mount", "-t", "overlay", "overlay", "-o",
            "lowerdir=%s,upperdir=%s,workdir=%s" % (lower, upper, work), root)
        try:
            for deb in debs:
                shutil.copy(deb, os.path.join(root, "var/tmp"))
            run("systemd-nspawn", "--quiet", "--keep-unit", "--register=no", "--resolv-conf=off",
                "--machine=%s-install%d" % (PREFIX, os.getpid()), "--directory=" + root, "dpkg", "-i",
                *("/var/tmp/" + os.path.basename(d) for d in debs))
            for deb in debs:
                os.unlink(os.path.join(root, "var/tmp", os.path.basename(deb)))
        finally:
            run("umount", root)
        shutil.rmtree(layer, ignore_errors=True)
        os.rename(upper, layer)
        write(layer + ".complete", "")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return layer


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def prepare(root):
    """What every node shares: chronyd without CAP_SYS_TIME (the clock is
    the host's), no logins, an empty machine id (each boot makes
    its own), and the journal in memory: the nodes are thrown away, and a
    boot then never waits on, or fails in, moving it to /var (seen once:
    systemd-journal-flush.service failed and left a node degraded)."""
    write(os.path.join(root, "etc/systemd/system/chrony.service.d/lab.conf"),
          "[Unit]\nConditionCapability=\n[Service]\nExecStart=\n"
          "ExecStart=!/usr/sbin/chronyd $DAEMON_OPTS -x\n")
    write(os.path.join(root, "etc/systemd/journald.conf.d/lab.conf"),
          "[Journal]\nStorage=volatile\n")
    write(os.path.join(root, "etc/machine-id"), "")
    # No logins in the lab (commands run through nsenter and setpriv, no
    # PAM), so no login bookkeeping either: these oneshots were seen failing
    # at boot (twice in some forty boots, not reproduced since) and leaving
    # a node degraded.
    for unit in ("console-getty.service", "getty@tty1.service", "systemd-user-sessions.service",
                 "systemd-update-utmp.service", "systemd-update-utmp-runlevel.service"):
        link = os.path.join(root, "etc/systemd/system", unit)
        if os.path.lexists(link):
            os.unlink(link)
        os.symlink("/dev/null", link)


class Node:
    def __init__(self, lab, name, index):
        self.lab = lab
        self.name = name
        self.ip = NET + str(index)
        self.ip6 = NET6 + str(index)
        # Fixed per node, so that an observer's samples name the node.
        self.mac = "02:77:00:00:00:%02x" % index
        self.netns = "%s-%s" % (lab.tag, name)
        self.dir = os.path.join(lab.dir, name)
        self.upper = os.path.join(self.dir, "upper")
        self.work = os.path.join(self.dir, "work")
        self.root = os.path.join(self.dir, "root")
        self.proc = None
        self.pid1 = None
        self.busy = []  # the busy loops of starve()

    # -- bring-up ---------------------------------------------------------

    def create(self):
        for d in (self.upper, self.work, self.root):
            os.makedirs(d)
        run("mount", "-t", "overlay", "overlay", "-o", "lowerdir=%s,upperdir=%s,workdir=%s"
            % (self.lab.lower, self.upper, self.work), self.root)
        write(os.path.join(self.root, "etc/hostname"), self.name + "\n")
        write(os.path.join(self.root, "etc/NetworkManager/system-connections/lab.nmconnection"),
              "[connection]\nid=lab\ntype=ethernet\ninterface-name=eth0\n"
              "[ipv4]\nmethod=manual\naddress1=%s/24\n[ipv6]\nmethod=manual\naddress1=%s/64\n"
              % (self.ip, self.ip6),
              mode=0o600)
        run("ip", "netns", "add", self.netns)
        host_end = "%s%d" % (PREFIX, self.lab.nodes.index(self))
        # Made right in the lab's namespaces: the machine's own namespace
        # never holds a lab interface, so labs do not clash in it.
        run("ip", "link", "add", host_end, "netns", self.lab.bridge_ns, "type", "veth", "peer",
            "name", "eth0", "address", self.mac, "netns", self.netns)
        self.lab.ns(self.lab.bridge_ns, "ip", "link", "set", host_end, "master", "br0", "up")
        self.host_end = host_end

    def cgroups(self):
        """The node's own cgroup in each hierarchy systemd manages.  With
        --keep-unit and no machined, nspawn leaves the container in its
        caller's cgroup: nodes sharing one, each node's systemd created and
        cleaned up its units' cgroups among the others' (early boot units
        failing with status 219/CGROUP, "Failed to kill control group")."""
        name = "%s-%s" % (self.lab.tag, self.name)
        if os.path.exists("/sys/fs/cgroup/cgroup.procs"):
            roots = ["/sys/fs/cgroup"]
        else:
            roots = [r for r in ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified")
                     if os.path.exists(r + "/cgroup.procs")]
        return [os.path.join(r, "sparrow-lab", name) for r in roots]

    def boot(self):
        groups = self.cgroups()
        for g in groups:
            os.makedirs(g, exist_ok=True)

        def enter():
            for g in groups:
                with open(os.path.join(g, "cgroup.procs"), "w") as f:
                    f.write("0")

        log = open(os.path.join(self.dir, "console.log"), "w")
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "--quiet", "--keep-unit", "--register=no", "--boot",
             "--private-network", "--network-namespace-path=/run/netns/" + self.netns,
             "--machine=" + self.name, "--directory=" + self.root] + self.lab.binds,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=enter)
        log.close()

    def find_pid1(self, deadline):
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise LabError("%s: systemd-nspawn exited %d (see %s/console.log)"
                               % (self.name, self.proc.returncode, self.dir))
            for child in children(self.proc.pid):
                with open("/proc/%d/comm" % child) as f:
                    if f.read().strip() == "systemd":
                        self.pid1 = child
                        return
            time.sleep(0.02)
        raise LabError("%s: systemd did not start" % self.name)

    def wait_booted(self, deadline):
        while time.monotonic() < deadline:
            state = self.sh("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return state
            time.sleep(0.1)
        raise LabError("%s: not booted (%s)" % (self.name, state))

    # -- helpers the tests share ------------------------------------------

    def sh(self, command, check=True, timeout=60):
        """Runs a shell command inside the node (all its namespaces)."""
        return run("nsenter", "-t", str(self.pid1), "-a", "/bin/sh", "-c", command, check=check,
                   timeout=timeout)

    @property
    def bus(self):
        """The node's system bus, for busctl --address= or GDBus."""
        return "unix:path=/proc/%d/root/run/dbus/system_bus_socket" % self.pid1

    def kill(self):
        """A crash: SIGKILL to PID 1 takes the whole node down.  Its link
        goes down with it: the node's network namespace outlives its
        processes, and its kernel would go on answering for its addresses
        (a virtual one included), which a crashed host does not."""
        self.cut()
        os.kill(self.pid1, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def reboot(self, timeout=120):
        """Boots a killed node again, its network as a boot finds it: no
        addresses, the link up."""
        self.lab.ns(self.netns, "ip", "address", "flush", "dev", "eth0")
        self.lab.ns(self.netns, "ip", "link", "set", "eth0", "down")
        self.cut(up=True)
        self.boot()
        deadline = time.monotonic() + timeout
        self.find_pid1(deadline)
        self.wait_booted(deadline)

    def poweroff(self, timeout=30):
        os.kill(self.pid1, signal.SIGRTMIN + 4)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def processes(self):
        """Host pids of every process in the node's pid namespace."""
        ns = os.readlink("/proc/%d/ns/pid" % self.pid1)
        out = []
        for p in os.listdir("/proc"):
            if p.isdigit():
                try:
                    if os.readlink("/proc/%s/ns/pid" % p) == ns:
                        out.append(int(p))
                except OSError:
                    pass
        return out

    def pause(self):
        """Freezes every process of the node (the kernel still answers ping)."""
        for p in self.processes():
            os.kill(p, signal.SIGSTOP)

    def resume(self):
        for p in self.processes():
            os.kill(p, signal.SIGCONT)

    # -- CPU starvation and freezing (host cgroup v1 hierarchies) ----------

    def service_pid(self, unit="sparrow.service"):
        """The host pid of unit's main process in the node, or None."""
        out = self.sh("systemctl show -p MainPID --value " + unit, check=False).stdout.strip()
        if not out.isdigit() or out == "0":
            return None
        for p in self.processes():
            try:
                with open("/proc/%d/status" % p) as f:
                    nspid = next(line.split()[1:] for line in f if line.startswith("NSpid:"))
            except (OSError, StopIteration):
                continue
            if nspid[-1] == out:
                return p
        return None

    def service_pids(self, unit="sparrow.service"):
        """Host pids of every process in the cgroup of unit's main process
        (the node's systemd keeps a unit's processes in one)."""
        main = self.service_pid(unit)
        if main is None:
            return []
        with open("/proc/%d/cgroup" % main) as f:
            path = next(line.rstrip("\n").split(":", 2)[2] for line in f
                        if line.split(":")[1] == "name=systemd")
        with open(os.path.join("/sys/fs/cgroup/systemd", path.lstrip("/"), "cgroup.procs")) as f:
            return sorted(int(p) for p in f.read().split())

    def _group(self, controller, what):
        return os.path.join("/sys/fs/cgroup", controller, "sparrow-lab",
                            "%s-%s-%s" % (self.lab.tag, self.name, what))

    @staticmethod
    def _remove(group):
        """rmdir, once the last process left (an exiting one may linger)."""
        deadline = time.monotonic() + 10
        while True:
            try:
                os.rmdir(group)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    @staticmethod
    def _move(group, pids):
        for p in pids:
            try:
                with open(os.path.join(group, "cgroup.procs"), "w") as f:
                    f.write(str(p))
            except ProcessLookupError:
                pass

    def starve(self, percent=1, loops=2, pid=None):
        """Starves sparrowd (or pid, a host pid) of CPU as a loaded host
        does: into a host cpu cgroup (v1) whose quota is percent of a 1 s
        period, with loops busy processes that use the quota up (see
        starve_loops).  Returns the pid starved."""
        pid = pid or self.service_pid()
        if pid is None:
            raise LabError("%s: sparrowd does not run" % self.name)
        self._move(self.starve_loops(percent, loops), [pid])
        return pid

    def starve_loops(self, percent=1, loops=2):
        """The starving group with its busy loops, nothing of the node in
        it yet (starve() adds sparrowd); returns its path."""
        group = self._group("cpu", "starve")
        if os.path.isdir(group):
            return group
        os.makedirs(group)
        with open(os.path.join(group, "cpu.cfs_period_us"), "w") as f:
            f.write("1000000")
        with open(os.path.join(group, "cpu.cfs_quota_us"), "w") as f:
            f.write(str(int(percent * 10000)))
        for _ in range(loops):
            busy = subprocess.Popen(["sh", "-c", "while :; do :; done"])
            self.busy.append(busy)
            self._move(group, [busy.pid])
        return group

    def starve_period(self, timeout=5):
        """When (time.monotonic()) the starving group's last period began,
        as seen by polling its cpu.stat: the next begin a second apart, the
        busy loops keeping its period timer running."""
        path = os.path.join(self.starve_loops(), "cpu.stat")

        def periods():
            with open(path) as f:
                return next(int(line.split()[1]) for line in f if line.startswith("nr_periods"))

        first = periods()
        deadline = time.monotonic() + timeout
        while periods() == first:
            if time.monotonic() > deadline:
                raise LabError("%s: the starving group's period does not turn" % self.name)
            time.sleep(0.0005)
        return time.monotonic()

    def unstarve(self):
        """Ends starve(): the busy loops end, what is left goes back to
        the root cpu group, the group goes."""
        group = self._group("cpu", "starve")
        for busy in self.busy:
            busy.kill()
            busy.wait()
        self.busy = []
        if os.path.isdir(group):
            with open(os.path.join(group, "cgroup.procs")) as f:
                self._move("/sys/fs/cgroup/cpu", [int(p) for p in f.read().split()])
            self._remove(group)

    def freeze(self, unit="sparrow.service"):
        """Freezes every process of unit in the node through a host freezer
        cgroup (v1), as `systemctl freeze` would: the nodes' systemd (252, on
        this host's hybrid cgroup hierarchy) answers that a unit "does not
        support freezing".  Returns the pids frozen."""
        pids = self.service_pids(unit)
        if not pids:
            raise LabError("%s: %s has no process" % (self.name, unit))
        group = self._group("freezer", "freeze")
        os.makedirs(group, exist_ok=True)
        self._move(group, pids)
        with open(os.path.join(group, "freezer.state"), "w") as f:
            f.write("FROZEN")
        deadline = time.monotonic() + 10
        while True:
            with open(os.path.join(group, "freezer.state")) as f:
                if f.read().strip() == "FROZEN":
                    return pids
            if time.monotonic() > deadline:
                raise LabError("%s: %s did not freeze" % (self.name, unit))
            time.sleep(0.005)

    def thaw(self):
        group = self._group("freezer", "freeze")
        if not os.path.isdir(group):
            return
        with open(os.path.join(group, "freezer.state"), "w") as f:
            f.write("THAWED")
        with open(os.path.join(group, "cgroup.procs")) as f:
            self._move("/sys/fs/cgroup/freezer", [int(p) for p in f.read().split()])
        self._remove(group)

    def cut(self, up=False):
        """Takes the node's link to the bridge down (or up again)."""
        self.lab.ns(self.lab.bridge_ns, "ip", "link", "set", self.host_end,
                    "up" if up else "down")

    # -- teardown ---------------------------------------------------------

    def destroy(self):
        self.unstarve()
        self.thaw()
        if self.proc and self.proc.poll() is None:
            if self.pid1:
                self.poweroff(timeout=15)
            else:
                self.proc.kill()
                self.proc.wait(timeout=30)
        if os.path.ismount(self.root):
            run("umount", self.root, check=False)
        run("ip", "netns", "delete", self.netns, check=False)
        # Emptied: the cgroups the node's systemd made within go first.
        for g in self.cgroups():
            for d, _, _ in sorted(os.walk(g), key=lambda w: -w[0].count("/")):
                try:
                    os.rmdir(d)
                except OSError:
                    pass


def children(pid):
    out = []
    for task in glob.glob("/proc/%d/task/*/children" % pid):
        with open(task) as f:
            out += [int(p) for p in f.read().split()]
    return out


Sample = collections.namedtuple("Sample", "t address mac")


class Watch:
    """A running bench/arp-watch in a node's network namespace (see
    Lab.watch).  samples: every reply so far, in order of arrival; macs()
    summarises them."""

    def __init__(self, node, addresses, interval_ms=10):
        binary = os.environ.get("SPARROW_ARP_WATCH")
        if not binary or not os.access(binary, os.X_OK):
            raise LabError("SPARROW_ARP_WATCH must name the built bench/arp-watch (got %r)"
                           % binary)
        self.samples = []
        self.proc = subprocess.Popen(
            ["nsenter", "-t", str(node.pid1), "-n", binary, "--interval-ms", str(interval_ms),
             "eth0"] + list(addresses), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            usec, address, mac = line.split()
            self.samples.append(Sample(int(usec) / 1e6, address, mac))

    def macs(self, address=None, since=None, until=None):
        """The MACs that answered (address, if given) between since and
        until (monotonic seconds, open ends when None)."""
        return {s.mac for s in list(self.samples)
                if (address is None or s.address == address) and (since is None or s.t >= since)
                and (until is None or s.t <= until)}

    def close(self):
        """Stops arp-watch; raises LabError if it had failed."""
        failed = self.proc.poll() is not None
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        if failed:
            raise LabError("arp-watch exited %d: %s" % (self.proc.returncode, err.strip()))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Lab:
    """n nodes (n1..nN at 10.77.0.11.., fd77::11..) and an observer
    (10.77.0.2, fd77::2)."""

    def __init__(self, n=3, binds=(), setup=None, debs=(), packages=PACKAGES):
        """debs: .deb files every node has installed (see installed_layer);
        setup(node): runs on each member's root before it boots; packages:
        the rootfs's (PACKAGES_NTPSEC: ntpsec instead of chrony)."""
        if not 1 <= n <= 5:
            raise LabError("the lab has 1 to 5 nodes")
        self.lower = rootfs(packages)
        if debs:
            self.lower = installed_layer(list(debs), packages) + ":" + self.lower
        self.dir = tempfile.mkdtemp(prefix="sparrow-lab-")
        # Names of its own: labs of several test runs may be up at once.
        self.tag = "%s%04x" % (PREFIX, os.getpid() & 0xffff)
        MADE.append((self.tag, self.dir))
        self.bridge_ns = self.tag + "-bridge"
        self.binds = ["--bind-ro=%s" % b for b in binds]
        self.setup = setup
        self.nodes = [Node(self, "n%d" % (i + 1), 11 + i) for i in range(n)]
        self.observer = Node(self, "observer", 2)
        self.nodes.append(self.observer)

    def ns(self, netns, *cmd):
        return run("ip", "netns", "exec", netns, *cmd)

    def up(self, timeout=120):
        t0 = time.monotonic()
        try:
            run("ip", "netns", "add", self.bridge_ns)
            self.ns(self.bridge_ns, "ip", "link", "add", "br0", "type", "bridge")
            self.ns(self.bridge_ns, "ip", "link", "set", "br0", "up")
            for n in self.nodes:
                n.create()
                if n is not self.observer and self.setup:
                    self.setup(n)
                n.boot()
            deadline = time.monotonic() + timeout
            for n in self.nodes:
                n.find_pid1(deadline)
            for n in self.nodes:
                n.wait_booted(deadline)
        except BaseException:
            self.down()
            raise
        return time.monotonic() - t0

    @property
    def members(self):
        return [n for n in self.nodes if n is not self.observer]

    def who_has(self, ip):
        """The node that answers ARP for ip, as the observer sees it."""
        r = self.observer.sh("arping -c 1 -w 2 -I eth0 %s" % ip, check=False)
        m = re.search(r"\[([0-9a-fA-F:]{17})\]", r.stdout)
        if not m:
            return None
        return self.by_mac(m.group(1))

    def by_mac(self, mac):
        """The member whose eth0 has mac, or None."""
        return next((n for n in self.members if n.mac == mac.lower()), None)

    def watch(self, addresses, interval_ms=10):
        """Which MAC answers each of addresses, as the observer sees it:
        `with lab.watch(["10.77.0.100"]) as w:` runs bench/arp-watch (path in
        $SPARROW_ARP_WATCH; the lab tests get it from meson) in the
        observer's network namespace, asking for every address each
        interval_ms (ARP for IPv4, neighbour solicitation for IPv6).
        w.samples grows while the block runs: one Sample(t, address, mac)
        per reply, t in seconds of CLOCK_MONOTONIC (time.monotonic() here,
        journald's monotonic timestamps in the nodes).  See Watch."""
        return Watch(self.observer, addresses, interval_ms)

    def down(self):
        for n in self.nodes:
            try:
                n.destroy()
            except Exception as e:  # go on: leave as little behind as possible
                print("lab teardown: %s: %s" % (n.name, e))
        run("ip", "netns", "delete", self.bridge_ns, check=False)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        self.up()
        return self

    def __exit__(self, *exc):
        self.down()


def leftovers():
    """Namespaces, mounts or processes of labs this process made that are
    still on the machine (labs of other processes may run meanwhile)."""
    found = []
    for tag, tmp in MADE:
        if os.path.isdir("/run/netns"):
            found += [ns for ns in os.listdir("/run/netns") if ns.startswith(tag + "-")]
        with open("/proc/self/mountinfo") as f:
            found += [line.split()[4] for line in f if tmp + "/" in line.split()[4]]
        r = run("pgrep", "-f", "systemd-nspawn.*" + tmp + "/", check=False)
        found += ["process " + p for p in r.stdout.split()]
    return found


def test_main():
    """Runs a lab test module's tests, or reports them skipped (exit 77 for
    meson) when the lab is not asked for or cannot run here."""
    import sys
    import unittest

    why = missing()
    if not os.environ.get("SPARROW_LAB"):
        why = "the lab is opt-in: set SPARROW_LAB=1 (needs root, debootstrap, systemd-container)"
    if why:
        print("skipped: " + why)
        sys.exit(77)
    result = unittest.main(module="__main__", verbosity=2, exit=False).result
    # Nothing ran but skips (a class's setUpClass skipping counts as one
    # skip and no test run): meson must see a skip, not a pass.
    if result.wasSuccessful() and result.skipped and result.testsRun <= len(result.skipped):
        print("skipped: " + "; ".join(sorted({why for _, why in result.skipped})))
        sys.exit(77)
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    import sys

    why = missing()
    if why:
        sys.exit("lab: " + why)
    with Lab(int(sys.argv[2]) if len(sys.argv) > 2 else 3) as lab:
        for n in lab.nodes:
            print("%-9s %-12s pid1 %d  %s" % (n.name, n.ip, n.pid1, n.bus))
        if len(sys.argv) > 1 and sys.argv[1] == "up":
            input("lab is up; Enter tears it down ")
