#!/usr/bin/env python3
"""Benchmarks of a real 3-node sparrowd cluster on 127.0.0.1 (printed, never
asserted):

  1. failover: SIGKILL of the leader -> a new leader visible on D-Bus (ms);
  2. graceful transfer: TransferLeadership -> the target leads (ms);
  3. Set throughput and latency through D-Bus, 1 and 32 concurrent clients,
     fsync on, several runs each, with bench/write-bench's two clients: one
     that speaks the D-Bus protocol itself (a load generator that costs the
     shared CPU little) and one through GDBus (what most clients cost);
  4. idle RSS and CPU of each sparrowd, in plaintext, with TLS, and
     answering the watchdog as sparrow.service asks (WatchdogSec=), next to
     bench/heartbeat-floor: the same heartbeat exchange done by a minimal C
     program, i.e. what the kernel alone costs for it on this machine.

The daemons run as in production (no test settings), with the daemon's
default timings unless --heartbeat-ms / --election-ms say otherwise.

Usage: cluster-bench.py [--only NAME] [--trials N] [--heartbeat-ms H --election-ms E] [BUILD_DIR]
"""

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "integration"))


def pct(values, p):
    values = sorted(values)
    k = min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))
    return values[k]


def report(name, ms):
    print("%-34s n=%-3d min %7.1f  median %7.1f  p99 %7.1f  max %7.1f ms" % (
        name, len(ms), min(ms), statistics.median(ms), pct(ms, 99), max(ms)), flush=True)


def new_cluster(Cluster, args, **kw):
    return Cluster(3, heartbeat_ms=args.heartbeat_ms, election_ms=args.election_ms,
                   leak_checks=False, **kw)


def timings(Cluster, args):
    """(heartbeat, election) in ms, as sparrowd itself reads its configuration."""
    c = new_cluster(Cluster, args)
    try:
        out = subprocess.run([os.environ["SPARROWD"], "--check-config", "--config",
                              c.nodes[0].config], capture_output=True, text=True, check=True).stdout
    finally:
        c.teardown()
    m = re.search(r"heartbeat (\d+) ms, election timeout (\d+) ms", out)
    return int(m.group(1)), int(m.group(2))


def manager_property(node, name):
    """A Manager property as node's D-Bus shows it (None when unreachable),
    over one persistent connection per node (python3-gi), so polling costs
    well under a millisecond."""
    from gi.repository import Gio, GLib

    bus = getattr(node, "bench_bus", None)
    if bus is None:
        bus = node.bench_bus = Gio.DBusConnection.new_for_address_sync(
            node.env["DBUS_SYSTEM_BUS_ADDRESS"], Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
            | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)
    try:
        r = bus.call_sync("org.sparrow.cluster1", "/org/sparrow/cluster1",
                          "org.freedesktop.DBus.Properties", "Get",
                          GLib.Variant("(ss)", ("org.sparrow.cluster1.Manager", name)),
                          None, Gio.DBusCallFlags.NONE, 1000, None)
    except GLib.Error:
        return None
    return r.unpack()[0]


def dbus_leader(node):
    return manager_property(node, "Leader") or None


def poll_new_leader(nodes, old, deadline):
    while time.monotonic() < deadline:
        for n in nodes:
            leader = dbus_leader(n)
            if leader and leader != old:
                return leader
        time.sleep(0.001)
    return None


def bench_failover(Cluster, args):
    ms = []
    for _ in range(args.trials):
        c = new_cluster(Cluster, args)
        try:
            c.start()
            old = c.node(c.wait_leader())
            time.sleep(0.5)
            rest = [n for n in c.nodes if n is not old]
            t0 = time.monotonic()
            old.kill(signal.SIGKILL)
            new = poll_new_leader(rest, old.name, t0 + 30)
            if new:
                ms.append((time.monotonic() - t0) * 1000)
        finally:
            c.teardown()
    report("failover (kill -9 -> new leader)", ms)


def bench_transfer(Cluster, args):
    ms = []
    c = new_cluster(Cluster, args)
    try:
        c.start()
        for _ in range(args.trials):
            leader = c.node(c.wait_leader())
            target = next(n for n in c.nodes if n is not leader)
            time.sleep(0.3)
            t0 = time.monotonic()
            leader.ctl("transfer", target.name)
            if poll_new_leader([target], leader.name, t0 + 10) == target.name:
                ms.append((time.monotonic() - t0) * 1000)
    finally:
        c.teardown()
    report("graceful transfer", ms)


def bench_writes(Cluster, args):
    c = new_cluster(Cluster, args)
    try:
        c.start()
        leader = c.node(c.wait_leader())
        for kind in ("wire", "gdbus"):
            for clients in (1, 32):
                rates = []
                for _ in range(args.write_runs):
                    out = subprocess.run([os.path.join(args.build, "bench", "write-bench"),
                                          "--clients", str(clients), "--client", kind,
                                          "--seconds", str(args.seconds)],
                                         env=leader.env, check=True, capture_output=True,
                                         text=True).stdout
                    print(out.rstrip(), flush=True)
                    rates.append(float(re.search(r":\s+(\d+) writes/s", out).group(1)))
                print("Set, %2d client(s), %-5s client: median %.0f writes/s of %d runs (%.0f-%.0f)"
                      % (clients, kind, statistics.median(rates), len(rates), min(rates),
                         max(rates)), flush=True)
    finally:
        c.teardown()


def cpu_ns(pid):
    """CPU time of every thread of pid so far, in nanoseconds."""
    total = 0
    for task in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/schedstat" % (pid, task)) as f:
            total += int(f.read().split()[0])
    return total


def cpu_percent(pids, seconds):
    before = {p: cpu_ns(p) for p in pids}
    t0 = time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    return {p: (cpu_ns(p) - before[p]) / 1e9 / elapsed * 100 for p in pids}


class NotifySocket:
    """A stand-in for systemd's notification socket that counts WATCHDOG=1."""

    def __init__(self, path):
        self.path = path
        self.pings = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        threading.Thread(target=self.drain, daemon=True).start()

    def drain(self):
        while True:
            data = self.sock.recv(4096)
            if not data:  # shut down by close ()
                return
            if data == b"WATCHDOG=1":
                self.pings += 1

    def close(self):
        # shutdown () wakes the recv () of drain (); close () alone would not
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def bench_idle(Cluster, args, heartbeat):
    from cluster import unit_watchdog_usec

    watchdog = unit_watchdog_usec()
    # The third as sparrow.service runs it: answering systemd's watchdog.
    for tls, under_unit in ((False, False), (True, False), (False, True)):
        c = new_cluster(Cluster, args, tls=tls)
        notify = None
        try:
            if under_unit:
                notify = NotifySocket(os.path.join(c.dir, "notify"))
                for n in c.nodes:
                    n.extra_env = {"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": str(watchdog)}
            c.start()
            c.wait_leader()
            time.sleep(3)
            pings = notify.pings if notify else 0
            used = cpu_percent([n.proc.pid for n in c.nodes], args.idle_seconds)
            what = "TLS" if tls else "plaintext"
            if under_unit:
                what += ", answering WatchdogSec=%dms (%.1f pings/s a node)" % (
                    watchdog // 1000, (notify.pings - pings) / args.idle_seconds / len(c.nodes))
            for n in sorted(c.nodes, key=lambda n: n.status()["role"] != "leader"):
                with open("/proc/%d/status" % n.proc.pid) as f:
                    rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
                print("idle %s %-8s: RSS %5.1f MiB, CPU %.3f %% of a core (%d s), %s"
                      % (n.name, n.status()["role"], rss / 1024.0, used[n.proc.pid],
                         args.idle_seconds, what), flush=True)
        finally:
            c.teardown()
            if notify:
                notify.close()
    floor = subprocess.Popen([os.path.join(args.build, "bench", "heartbeat-floor"),
                              str(heartbeat), "2"], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in floor.stdout.readline().split()]
        time.sleep(2)
        used = cpu_percent(pids, args.idle_seconds)
        for i, p in enumerate(pids):
            print("idle floor (minimal C, same exchange) %-8s: CPU %.3f %% of a core"
                  % ("leader" if i == 0 else "follower", used[p]), flush=True)
    finally:
        floor.terminate()
        floor.wait()


def main():
    try:
        import gi  # noqa: F401  (a D-Bus client without a process per call)
    except ImportError:
        sys.exit("cluster-bench needs python3-gi: apt-get install python3-gi; run it with "
                 "/usr/bin/python3")
    p = argparse.ArgumentParser()
    p.add_argument("build", nargs="?", default=os.path.join(here, "..", "build"))
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seconds", type=float, default=5.0, help="length of one write run")
    p.add_argument("--write-runs", type=int, default=3)
    p.add_argument("--idle-seconds", type=int, default=30)
    p.add_argument("--heartbeat-ms", type=int, help="default: the daemon's")
    p.add_argument("--election-ms", type=int, help="default: the daemon's")
    p.add_argument("--only", choices=["failover", "transfer", "writes", "idle"])
    args = p.parse_args()
    build = args.build = os.path.abspath(args.build)
    os.environ.setdefault("SPARROWD", os.path.join(build, "daemon", "sparrowd"))
    os.environ.setdefault("SPARROWCTL", os.path.join(build, "daemon", "sparrowctl"))
    os.environ.setdefault("SPARROW_CERTS", os.path.join(here, "..", "tools", "sparrow-certs"))
    # Every node has its fence keeper, with the unit's grace.
    os.environ.setdefault("SPARROW_FENCE", os.path.join(build, "daemon", "sparrow-fence"))
    os.environ.setdefault("SPARROW_KEEPER_GRACE_MS", "20")
    from cluster import Cluster

    heartbeat, election = timings(Cluster, args)
    print("3 nodes on 127.0.0.1, heartbeat %d ms, election timeout %d ms%s"
          % (heartbeat, election, "" if args.heartbeat_ms or args.election_ms
             else " (the daemon's defaults)"), flush=True)
    for name, fn in (("failover", bench_failover), ("transfer", bench_transfer),
                     ("writes", bench_writes), ("idle", bench_idle)):
        if args.only in (None, name):
            if fn is bench_idle:
                fn(Cluster, args, heartbeat)
            else:
                fn(Cluster, args)


if __name__ == "__main__":
    main()
