#!/usr/bin/env python3
"""Idle cost of a node, sparrow next to keepalived, in the same window
(printed, never asserted).

sparrow: 3 real sparrowd on 127.0.0.1 with TLS and the daemon's default
timings, each with the unit's Environment= and answering systemd's
watchdog as sparrow.service asks (NOTIFY_SOCKET, WATCHDOG_USEC from the
unit's WatchdogSec=); no [vip].
keepalived (as root, when /usr/sbin/keepalived is there): 3 instances at
advert_int 0.25 with VRRPv3 (a failover like sparrow's defaults), each in a
network namespace this script makes (10.77.0.0/24 on a bridge in a fourth
one), priorities 150/100/50.  Both sets run at once and are sampled over
the same window, so the machine's noise falls on both.

Per node (a daemon's processes and threads summed): CPU % of one core from
the threads' schedstat (ns), wake-ups per second (voluntary context
switches of every thread: each is a sleep that a wake-up ended),
preemptions per second (involuntary ones: mostly a peer it woke taking the
CPU); memory in MiB from smaps_rollup: its own (private pages, clean or
dirty: what it alone holds), PSS (its own plus its share of pages others
map too: this varies with what else runs on the machine, the shared
libraries above all) and RSS.  --threads adds sparrow's wake-ups per thread.

--compare BUILD adds a second cluster of another build's sparrowd (run
with the unit environment of the tree it was built from), e.g. the code
before a change, measured in the same windows: rows "compared".

Usage: idle-bench.py [--seconds S] [--rounds N] [--no-keepalived] [--threads]
                     [--compare BUILD] [BUILD_DIR]
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "integration"))

KEEPALIVED = "/usr/sbin/keepalived"
NS = "sp-idle-"  # this script's namespaces: sp-idle-br, sp-idle-k1..3
PRIORITIES = (150, 100, 50)


def tasks(pid):
    try:
        return os.listdir("/proc/%d/task" % pid)
    except FileNotFoundError:
        return []


def task_sample(pid, task):
    """(CPU ns, wake-ups, preemptions, thread name) of one thread."""
    base = "/proc/%d/task/%s/" % (pid, task)
    try:
        with open(base + "schedstat") as f:
            ns = int(f.read().split()[0])
        with open(base + "status") as f:
            status = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    woke = int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)$", status, re.M).group(1))
    preempted = int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)$", status, re.M).group(1))
    name = re.search(r"^Name:\s+(.*)$", status, re.M).group(1)
    return ns, woke, preempted, name


def memory(pid):
    """(private, PSS, RSS) in MiB."""
    with open("/proc/%d/smaps_rollup" % pid) as f:
        text = f.read()
    kb = {k: int(v) for k, v in re.findall(r"^(\w+):\s+(\d+) kB$", text, re.M)}
    return ((kb["Private_Clean"] + kb["Private_Dirty"]) / 1024.0, kb["Pss"] / 1024.0,
            kb["Rss"] / 1024.0)


def snapshot(pids):
    """{(pid, tid): (ns, wake-ups, preemptions, name)} of every thread of pids."""
    out = {}
    for pid in pids:
        for t in tasks(pid):
            s = task_sample(pid, t)
            if s:
                out[(pid, t)] = s
    return out


class Daemon:
    """One node of either kind: a label, the pids of its processes."""

    def __init__(self, kind, name, pids):
        self.kind, self.name, self.pids = kind, name, pids
        self.role = ""


def measure(daemons, seconds):
    """Per daemon: (CPU %, wake-ups/s, preemptions/s, (private, PSS, RSS),
    {thread name: wake-ups/s})."""
    pids = [p for d in daemons for p in d.pids]
    t0 = time.monotonic()
    a = snapshot(pids)
    time.sleep(seconds)
    b = snapshot(pids)
    wall = time.monotonic() - t0
    rows = []
    for d in daemons:
        ns = woke = preempted = 0
        per_thread = {}
        for key in b:
            if key[0] in d.pids and key in a:
                ns += b[key][0] - a[key][0]
                woke += b[key][1] - a[key][1]
                preempted += b[key][2] - a[key][2]
                name = b[key][3]
                per_thread[name] = per_thread.get(name, 0) + (b[key][1] - a[key][1]) / wall
        mem = [sum(m) for m in zip(*(memory(p) for p in d.pids))]
        rows.append((ns / 1e9 / wall * 100, woke / wall, preempted / wall, mem, per_thread))
    return rows


# -- sparrow ----------------------------------------------------------------

class NotifySocket:
    """systemd's notification socket, as far as the watchdog goes."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        threading.Thread(target=self.drain, daemon=True).start()

    def drain(self):
        while self.sock.recv(4096):
            pass

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


def unit_environment(tree):
    """Environment= of the sparrow.service.in of a source tree."""
    env = {}
    with open(os.path.join(tree, "units", "sparrow.service.in")) as f:
        for value in re.findall(r"^Environment=(.*)$", f.read(), re.M):
            for item in value.split():
                k, v = item.split("=", 1)
                env[k] = v
    return env


def start_sparrow(Cluster, sparrowd, tree):
    """A cluster of sparrowd binaries run as the unit of tree runs them."""
    import cluster

    cluster.SPARROWD = sparrowd
    c = Cluster(3, heartbeat_ms=None, election_ms=None, tls=True, leak_checks=False)
    notify = NotifySocket(os.path.join(c.dir, "notify"))
    for n in c.nodes:
        n.extra_env = dict(unit_environment(tree), NOTIFY_SOCKET=notify.path,
                           WATCHDOG_USEC=str(cluster.unit_watchdog_usec()))
    c.start()
    c.wait_leader(timeout=60)
    return c, notify


def source_tree(build):
    """The source tree a meson build directory was set up from."""
    with open(os.path.join(build, "meson-info", "meson-info.json")) as f:
        return json.load(f)["directories"]["source"]


def sparrow_daemons(c, kind="sparrow"):
    out = []
    for n in c.nodes:
        d = Daemon(kind, n.name, [n.proc.pid])
        d.role = n.status()["role"]
        out.append(d)
    return out


# -- keepalived ---------------------------------------------------------------

def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def netns_down():
    for name in ["%sk%d" % (NS, i) for i in (1, 2, 3)] + [NS + "br"]:
        sh("ip", "netns", "del", name, check=False)


def start_keepalived(work):
    """Three keepalived in their own namespaces; returns their parent pids."""
    netns_down()
    sh("ip", "netns", "add", NS + "br")
    br = ["ip", "-n", NS + "br"]
    sh(*br, "link", "add", "br0", "type", "bridge")
    sh(*br, "link", "set", "br0", "up")
    procs = []
    for i in (1, 2, 3):
        ns = "%sk%d" % (NS, i)
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", "p%d" % i,
           "netns", NS + "br")
        sh(*br, "link", "set", "p%d" % i, "master", "br0", "up")
        sh("ip", "-n", ns, "addr", "add", "10.77.0.%d/24" % i, "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        conf = os.path.join(work, "k%d.conf" % i)
        with open(conf, "w") as f:
            f.write("global_defs {\n  router_id k%d\n  vrrp_version 3\n}\n"
                    "vrrp_instance idle {\n  interface eth0\n  virtual_router_id 77\n"
                    "  priority %d\n  advert_int 0.25\n  virtual_ipaddress {\n"
                    "    10.77.0.100/24 dev eth0\n  }\n}\n" % (i, PRIORITIES[i - 1]))
        # -n: the parent stays in the foreground (systemd's unit runs it
        # with --dont-fork too); its VRRP child is forked as usual.
        procs.append(subprocess.Popen(
            ["ip", "netns", "exec", ns, KEEPALIVED, "-n", "-f", conf,
             "-p", os.path.join(work, "k%d.pid" % i), "-r", os.path.join(work, "k%d-vrrp.pid" % i),
             "-i", "k%d" % i], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def keepalived_daemons(procs):
    """Each instance's keepalived processes, once the master has its address."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        out = []
        for i, p in enumerate(procs, 1):
            pids = [p.pid] + children(p.pid)  # ip netns exec execs keepalived
            d = Daemon("keepalived", "k%d" % i, pids)
            held = sh("ip", "-n", "%sk%d" % (NS, i), "-4", "addr", "show", "dev", "eth0").stdout
            d.role = "master" if "10.77.0.100/" in held else "backup"
            out.append(d)
        if (all(len(d.pids) == 2 for d in out)
                and sum(d.role == "master" for d in out) == 1):
            return out
        time.sleep(0.2)
    raise RuntimeError("keepalived: no single master with its VRRP child within 20 s")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("build", nargs="?", default=os.path.join(here, "..", "build"))
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--rounds", type=int, default=1, help="windows measured one after the other")
    p.add_argument("--no-keepalived", action="store_true")
    p.add_argument("--threads", action="store_true", help="sparrow's wake-ups per thread")
    p.add_argument("--compare", metavar="BUILD",
                   help="also another build of sparrowd (as its tree's unit runs it), same windows")
    args = p.parse_args()
    build = os.path.abspath(args.build)
    os.environ.setdefault("SPARROWD", os.path.join(build, "daemon", "sparrowd"))
    os.environ.setdefault("SPARROWCTL", os.path.join(build, "daemon", "sparrowctl"))
    os.environ.setdefault("SPARROW_CERTS", os.path.join(here, "..", "tools", "sparrow-certs"))
    # Every node has its fence keeper, with the unit's grace.
    os.environ.setdefault("SPARROW_FENCE", os.path.join(build, "daemon", "sparrow-fence"))
    os.environ.setdefault("SPARROW_KEEPER_GRACE_MS", "20")
    from cluster import Cluster

    why_not = None
    if args.no_keepalived:
        why_not = "--no-keepalived"
    elif os.geteuid() != 0:
        why_not = "not root: cannot make network namespaces"
    elif not os.path.exists(KEEPALIVED):
        why_not = "%s is not installed" % KEEPALIVED
    work = tempfile.mkdtemp(prefix="sparrow-idle-")
    clusters = []
    procs = []
    try:
        clusters.append(start_sparrow(Cluster, os.environ["SPARROWD"], source_tree(build)))
        if args.compare:
            other = os.path.abspath(args.compare)
            clusters.append(start_sparrow(Cluster, os.path.join(other, "daemon", "sparrowd"),
                                          source_tree(other)))
        if not why_not:
            procs = start_keepalived(work)
        daemons = sparrow_daemons(clusters[0][0])
        if args.compare:
            daemons += sparrow_daemons(clusters[1][0], "compared")
        daemons += keepalived_daemons(procs) if procs else []
        time.sleep(3)  # past start-up
        print("idle, per node, %d s window%s: sparrow defaults (heartbeat %s), TLS, answering "
              "its watchdog%s" % (args.seconds, "s" if args.rounds > 1 else "",
                                  "250 ms", "; keepalived advert_int 0.25, VRRPv3, same windows"
                                  if procs else "; keepalived not measured: " + why_not))
        print("%-11s %-4s %-8s %8s %11s %12s %8s %8s %8s"
              % ("daemon", "node", "role", "CPU %", "wake-ups/s", "preempted/s", "own MiB",
                 "PSS MiB", "RSS MiB"))
        for _ in range(args.rounds):
            for d in daemons:
                if d.kind != "keepalived":
                    c = clusters[d.kind == "compared"][0]
                    d.role = next(n for n in c.nodes if n.name == d.name).status()["role"]
            rows = measure(daemons, args.seconds)
            for d, (cpu, woke, preempted, mem, per_thread) in zip(daemons, rows):
                print("%-11s %-4s %-8s %7.3f%% %11.2f %12.2f %8.2f %8.2f %8.2f"
                      % ((d.kind, d.name, d.role, cpu, woke, preempted) + tuple(mem)), flush=True)
                if args.threads and d.kind == "sparrow":
                    print("    " + ", ".join("%s %.1f/s" % kv for kv in sorted(per_thread.items())))
    finally:
        for pr in procs:
            pr.terminate()
            try:
                pr.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pr.kill()
        if procs:
            netns_down()
        for c, notify in clusters:
            c.teardown()
            notify.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
