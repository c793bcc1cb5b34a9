#!/usr/bin/env python3
"""Benchmarks of a real 3-node sparrowd cluster on 127.0.0.1 (printed, never
asserted):

  1. failover: SIGKILL of the leader -> a new leader visible on D-Bus (ms);
  2. graceful transfer: TransferLeadership -> the target leads (ms);
  3. Set throughput and latency through D-Bus, 1 and 32 concurrent clients,
     fsync on (bench/write-bench, a C client);
  4. idle RSS and CPU of one sparrowd.

Usage: cluster-bench.py [--trials N] [--heartbeat-ms H --election-ms E] [BUILD_DIR]
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
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


def dbus_leader(node):
    """Leader as node's D-Bus shows it, over one persistent connection per
    node (python3-gi), so polling costs well under a millisecond."""
    from gi.repository import Gio, GLib

    bus = getattr(node, "bench_bus", None)
    if bus is None:
        bus = node.bench_bus = Gio.DBusConnection.new_for_address_sync(
            node.env["DBUS_SYSTEM_BUS_ADDRESS"], Gio.DBusConnectionFlags.AUTHENTICATION_CLIENT
            | Gio.DBusConnectionFlags.MESSAGE_BUS_CONNECTION, None, None)
    try:
        r = bus.call_sync("org.sparrow.cluster1", "/org/sparrow/cluster1",
                          "org.freedesktop.DBus.Properties", "Get",
                          GLib.Variant("(ss)", ("org.sparrow.cluster1.Manager", "Leader")),
                          None, Gio.DBusCallFlags.NONE, 1000, None)
    except GLib.Error:
        return None
    return r.unpack()[0] or None


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
        c = Cluster(3, heartbeat_ms=args.heartbeat_ms, election_ms=args.election_ms)
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
    c = Cluster(3, heartbeat_ms=args.heartbeat_ms, election_ms=args.election_ms)
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
    c = Cluster(3, heartbeat_ms=args.heartbeat_ms, election_ms=args.election_ms)
    try:
        c.start()
        leader = c.node(c.wait_leader())
        for clients in (1, 32):
            subprocess.run([os.path.join(args.build, "bench", "write-bench"), "--clients",
                            str(clients), "--seconds", str(args.seconds)], env=leader.env,
                           check=True)
    finally:
        c.teardown()


def bench_idle(Cluster, args):
    c = Cluster(3, heartbeat_ms=args.heartbeat_ms, election_ms=args.election_ms)
    try:
        c.start()
        c.wait_leader()
        time.sleep(2)
        tick = os.sysconf("SC_CLK_TCK")
        for n in c.nodes:
            def cpu():
                with open("/proc/%d/stat" % n.proc.pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                return int(fields[11]) + int(fields[12])
            c0, t0 = cpu(), time.monotonic()
            time.sleep(args.seconds)
            used = (cpu() - c0) / tick / (time.monotonic() - t0) * 100
            with open("/proc/%d/status" % n.proc.pid) as f:
                rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
            role = n.status()["role"]
            print("idle %s (%-8s): RSS %5.1f MiB, CPU %.3f %% of a core"
                  % (n.name, role, rss / 1024.0, used), flush=True)
    finally:
        c.teardown()


def main():
    try:
        import gi  # noqa: F401  (a D-Bus client without a process per call)
    except ImportError:
        sys.exit("cluster-bench needs python3-gi: apt-get install python3-gi; run it with "
                 "/usr/bin/python3")
    p = argparse.ArgumentParser()
    p.add_argument("build", nargs="?", default=os.path.join(here, "..", "build"))
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--heartbeat-ms", type=int, default=50)
    p.add_argument("--election-ms", type=int, default=400)
    p.add_argument("--only", choices=["failover", "transfer", "writes", "idle"])
    args = p.parse_args()
    build = args.build = os.path.abspath(args.build)
    os.environ.setdefault("SPARROWD", os.path.join(build, "daemon", "sparrowd"))
    os.environ.setdefault("SPARROWCTL", os.path.join(build, "daemon", "sparrowctl"))
    from cluster import Cluster

    print("3 nodes on 127.0.0.1, heartbeat %d ms, election timeout %d ms"
          % (args.heartbeat_ms, args.election_ms), flush=True)
    for name, fn in (("failover", bench_failover), ("transfer", bench_transfer),
                     ("writes", bench_writes), ("idle", bench_idle)):
        if args.only in (None, name):
            fn(Cluster, args)


if __name__ == "__main__":
    main()
