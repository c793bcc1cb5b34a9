"""Real sparrowd processes on 127.0.0.1, each with its own private
dbus-daemon standing in for the system bus, driven through sparrowctl.

Nothing here is mocked: the daemons talk TCP (optionally mutual TLS) to
each other, write their data directories, and answer on D-Bus.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SPARROWD = os.environ.get("SPARROWD", "sparrowd")
SPARROWCTL = os.environ.get("SPARROWCTL", "sparrowctl")
SPARROW_CERTS = os.environ.get("SPARROW_CERTS", "sparrow-certs")
SPARROW_FENCE = os.environ.get("SPARROW_FENCE", "sparrow-fence")
# The keeper kills a sparrowd that did not see its lease end this long after
# it (20 ms in the unit).  Loaded test machines wake sanitized daemons later
# than that; the kill itself is tested with the keeper alone (test-keeper.py).
# Benchmarks set the unit's.
KEEPER_GRACE_MS = int(os.environ.get("SPARROW_KEEPER_GRACE_MS", "1000"))

BUS_CONFIG = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={path}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
{policy}
  </policy>
{include}
</busconfig>
"""

# Everyone may do everything (and monitor).
OPEN_POLICY = """    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>"""

# The policy of Debian's system bus: deny by default.
SYSTEM_POLICY = """    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>"""


def free_port(host="127.0.0.1"):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class Node:
    def __init__(self, cluster, name):
        self.cluster = cluster
        self.name = name
        self.port = free_port(cluster.host)
        self.dir = os.path.join(cluster.dir, name)
        self.data_dir = os.path.join(self.dir, "data")
        self.config = os.path.join(self.dir, "sparrow.conf")
        self.log_path = os.path.join(self.dir, "sparrowd.log")
        self.bus_path = os.path.join(self.dir, "bus")
        self.bus = None
        self.proc = None
        self.log = None
        self.keeper_sock = os.path.join(self.dir, "keeper.sock")
        self.keeper_log_path = os.path.join(self.dir, "keeper.log")
        self.keeper = None
        self.extra_env = {}
        os.makedirs(self.dir)

    @property
    def address(self):
        if ":" in self.cluster.host:
            return "[%s]:%d" % (self.cluster.host, self.port)
        return "%s:%d" % (self.cluster.host, self.port)

    @property
    def env(self):
        env = dict(os.environ)
        env["DBUS_SYSTEM_BUS_ADDRESS"] = "unix:path=" + self.bus_path
        env.pop("NOTIFY_SOCKET", None)
        env["G_DEBUG"] = "fatal-criticals"
        if self.cluster.leak_checks:
            # Every allocation visible to LeakSanitizer in sanitized builds.
            env["G_SLICE"] = "always-malloc"
        env.update(self.extra_env)
        return env

    def start_bus(self):
        conf = os.path.join(self.dir, "bus.conf")
        with open(conf, "w") as f:
            if self.cluster.bus_policy:  # like the system bus, plus that file
                f.write(BUS_CONFIG.format(path=self.bus_path, policy=SYSTEM_POLICY,
                                          include="<include>%s</include>" % self.cluster.bus_policy))
            else:
                f.write(BUS_CONFIG.format(path=self.bus_path, policy=OPEN_POLICY, include=""))
        self.bus = subprocess.Popen(
            ["dbus-daemon", "--config-file=" + conf, "--nofork", "--print-address"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.bus.stdout.readline()  # the address: the bus is listening

    def write_config(self, members, join=False, tls=None, extra=""):
        lines = [
            "[node]",
            "name = %s" % self.name,
            "listen = %s" % self.address,
            "data-dir = %s" % self.data_dir,
            "[cluster]",
            "initial-members = %s" % ";".join("%s=%s" % (m.name, m.address) for m in members),
        ]
        if self.cluster.keepers:
            lines.append("fence-keeper = %s" % self.keeper_sock)
        else:
            lines.append("fence = false")
        # None: the daemon's defaults
        if self.cluster.heartbeat_ms is not None:
            lines.append("heartbeat-ms = %d" % self.cluster.heartbeat_ms)
        if self.cluster.election_ms is not None:
            lines.append("election-ms = %d" % self.cluster.election_ms)
        lines += [
            "join = %s" % ("true" if join else "false"),
            "snapshot-entries = %d" % self.cluster.snapshot_entries,
            "[tls]",
        ]
        if tls:
            lines += ["ca = %s" % tls[0], "cert = %s" % tls[1], "key = %s" % tls[2]]
        else:
            lines += ["insecure = true"]
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n" + extra)

    def start_keeper(self):
        """This node's fence keeper, as sparrow-fence.service runs it (no
        unit to stop here); waits until it listens."""
        with open(self.keeper_log_path, "a") as log:
            self.keeper = subprocess.Popen(
                [SPARROW_FENCE, "--socket", self.keeper_sock, "--grace-ms", str(KEEPER_GRACE_MS)],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while not os.path.exists(self.keeper_sock):
            if self.keeper.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("sparrow-fence did not start: see " + self.keeper_log_path)
            time.sleep(0.01)

    def kill_keeper(self):
        if self.keeper and self.keeper.poll() is None:
            self.keeper.kill()
            self.keeper.wait(timeout=10)
        if os.path.exists(self.keeper_sock):
            os.unlink(self.keeper_sock)

    def start(self, keeper=True):
        if not self.bus:
            self.start_bus()
        if (keeper and self.cluster.keepers
                and (not self.keeper or self.keeper.poll() is not None)):
            self.start_keeper()
        self.log = open(self.log_path, "a")
        self.proc = subprocess.Popen([SPARROWD, "--config", self.config], env=self.env,
                                     stdout=self.log, stderr=subprocess.STDOUT)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig=signal.SIGKILL):
        if self.running():
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)
        if self.log:
            self.log.close()
            self.log = None

    def stop(self):
        self.kill(signal.SIGTERM)
        return self.proc.returncode if self.proc else None

    def ctl(self, *args, check=True):
        r = subprocess.run([SPARROWCTL, "--json"] + list(args), env=self.env,
                           capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError("sparrowctl %s on %s: exit %d: %s%s" % (
                " ".join(args), self.name, r.returncode, r.stdout, r.stderr))
        return r

    def status(self):
        r = self.ctl("status", check=False)
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)

    def monitor_properties(self):
        """dbus-monitor printing this node's PropertiesChanged, once it
        listens; the caller terminates it."""
        m = subprocess.Popen(
            ["dbus-monitor", "--address", self.env["DBUS_SYSTEM_BUS_ADDRESS"],
             "type='signal',sender='org.sparrow.cluster1',"
             "interface='org.freedesktop.DBus.Properties',member='PropertiesChanged'"],
            stdout=subprocess.PIPE, text=True)
        m.stdout.readline()  # its own NameAcquired
        return m

    def read_log(self):
        with open(self.log_path) as f:
            return f.read()

    def teardown(self):
        self.kill()
        self.kill_keeper()
        if self.bus:
            self.bus.terminate()
            self.bus.wait(timeout=10)
            self.bus = None


class Cluster:
    def __init__(self, size, heartbeat_ms=50, election_ms=400, tls=False, snapshot_entries=10000,
                 bus_policy=None, host="127.0.0.1", leak_checks=True, keepers=True):
        """bus_policy: a policy file to run each bus like the system bus
        with it; else every bus lets everyone do everything.  Timings None:
        the daemon's defaults.  leak_checks False: the daemons run as in
        production (benchmarks), not set up for LeakSanitizer.  keepers
        False: no fence keepers, and [cluster] fence = false."""
        self.dir = tempfile.mkdtemp(prefix="sparrow-test-")
        self.bus_policy = bus_policy
        self.host = host
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.leak_checks = leak_checks
        self.keepers = keepers
        self.snapshot_entries = snapshot_entries
        self.nodes = [Node(self, "n%d" % (i + 1)) for i in range(size)]
        self.certs = None
        if tls:
            self.certs = os.path.join(self.dir, "certs")
            subprocess.run([SPARROW_CERTS, "ca", self.certs], check=True, capture_output=True)
        for n in self.nodes:
            n.write_config(self.nodes, tls=self.tls_files(n.name))

    def tls_files(self, name, certs=None):
        certs = certs or self.certs
        if not certs:
            return None
        if not os.path.exists(os.path.join(certs, name + ".pem")):
            subprocess.run([SPARROW_CERTS, "node", certs, name], check=True, capture_output=True)
        return (os.path.join(certs, "ca.pem"), os.path.join(certs, name + ".pem"),
                os.path.join(certs, name + ".key"))

    def node(self, name):
        return next(n for n in self.nodes if n.name == name)

    def add_node(self, name):
        n = Node(self, name)
        self.nodes.append(n)
        return n

    def start(self):
        for n in self.nodes:
            n.start()

    def live(self):
        return [n for n in self.nodes if n.running()]

    def wait(self, predicate, timeout=20.0, what="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))

    def leader(self, nodes=None):
        """The leader every given live node agrees on, else None."""
        nodes = nodes or self.live()
        seen = set()
        for n in nodes:
            s = n.status()
            if not s or not s["leader"]:
                return None
            seen.add(s["leader"])
        if len(seen) != 1:
            return None
        name = seen.pop()
        s = self.node(name).status() if self.node(name).running() else None
        return name if s and s["role"] == "leader" else None

    def wait_leader(self, nodes=None, timeout=20.0):
        return self.wait(lambda: self.leader(nodes), timeout, "an agreed leader")

    def leaders(self):
        out = []
        for n in self.live():
            s = n.status()
            if s and s["role"] == "leader":
                out.append(n.name)
        return out

    def teardown(self):
        for n in self.nodes:
            n.teardown()
        if os.environ.get("SPARROW_KEEP_TEST_DIRS"):
            print("kept", self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def main():
    """Runs a test module's tests for meson: exit 77 (skipped) when
    dbus-daemon is missing or every test skipped itself."""
    import sys
    import unittest

    if not shutil.which("dbus-daemon"):
        print("skipped: dbus-daemon is not installed (apt-get install dbus-daemon)")
        sys.exit(77)
    result = unittest.main(module="__main__", verbosity=2, exit=False).result
    for _, reason in result.skipped:
        print("skipped: %s" % reason)
    if result.testsRun and len(result.skipped) == result.testsRun:
        sys.exit(77)  # meson: skipped
    sys.exit(0 if result.wasSuccessful() else 1)


def unit_watchdog_usec():
    """WatchdogSec= of units/sparrow.service.in, in microseconds: the
    benchmarks run sparrowd with the watchdog its unit gives it."""
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "units",
                        "sparrow.service.in")
    with open(path) as f:
        m = re.search(r"^WatchdogSec=(\d+)(ms|s)$", f.read(), re.M)
    return int(m.group(1)) * (1000 if m.group(2) == "ms" else 1000000)
