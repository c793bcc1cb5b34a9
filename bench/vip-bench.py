#!/usr/bin/python3
"""The virtual address's failover, sparrow next to keepalived, in the lab
(printed, never asserted).  As root:

  /usr/bin/python3 bench/vip-bench.py BUILD [--trials N] [--seed S] [--phase P] [--quick]
                                            [--stacks A,B] [--scenarios A,B]
  /usr/bin/python3 bench/vip-bench.py BUILD --idle [--idle-seconds S]

BUILD is a meson build directory of this tree (for bench/arp-watch).

Stacks, each in a fresh 3-node lab (n1..n3, 10.77.0.11-13) holding
10.77.0.100/24 on eth0:

  keepalived       VRRP defaults: advert_int 1 (VRRPv2), priorities
                   150/100/50 (preemption on, as by default)
  keepalived-fast  advert_int 0.1, vrrp_version 3
  sparrow          sparrow.service as shipped (watchdog, TLS), defaults
  sparrow-fast     heartbeat-ms 50, election-ms 150, fence on (the keeper)

Scenarios, on the node whose MAC answers for the address (the holder):

  kill9      SIGKILL to every process of the daemon (sent from the host)
  stop       systemctl stop of the daemon's unit
  crash      SIGKILL to the node's PID 1 (the whole node goes)
  linkdown   the node's link to the bridge goes down
  sigstop    SIGSTOP to every process of the daemon, SIGCONT 5 s later
  partition  the holder and the other members cannot reach each other
             (each side: a prohibit route to the other's /32 and strict
             rp_filter, which also drops VRRP's multicast), while the
             observer still reaches everyone; healed 2 s after the
             failover (3 s after the trigger at the least)
  rolling    a rolling restart, as a package upgrade does it: systemctl
             restart of the daemon on n1, n2 then n3, each once the
             cluster settled again (a trial is the three restarts); the
             table has a row per restart of the holder, measured from its
             restart to the settled cluster, and for sparrow a line counts
             how each leader came (sparrowd's "leading in term N: handed
             over" or "elected" in the members' journals): a planned
             restart should never need an election.  Its "two" counts
             restarts with an overlap (keepalived's old master taking the
             address back later is its preemption)

A trial waits until the cluster is settled (every daemon active, one MAC
alone answering for 1.5 s, 3 s for keepalived at advert_int 1 which may
still be preempting), sleeps a random 0..1 s (0..--phase; random.Random
seeded with --seed, the stack and the scenario), triggers, watches, then
repairs the node (restarts the daemon, reboots the node, brings the link up, heals)
for the next trial.  The observer (bench/arp-watch in the observer's
namespace) asks for the address every 10 ms; every figure comes from its
replies, on CLOCK_MONOTONIC, the clock the trigger is taken on:

  failover  trigger -> first reply from a MAC other than the old holder's
  gap       the longest time without any reply, from the last reply before
            the trigger to the end of the window
  overlap   a MAC is *answering* from one of its replies to a later one
            when it never went 30 ms (3 requests) without replying in
            between; overlap is the total time during which two or more
            MACs were answering at once, within the window
  two       trials in which the old holder answered after the new one had
            answered: both held the address at that moment

The window ends 2 s after the failover; for sigstop not before 2 s after
SIGCONT, for partition not before 1.5 s after the heal.  A daemon that
leaves its address behind when killed keeps answering next to the new
holder until repaired: such an overlap runs to the end of the window (2 s).

--idle: one lab, the daemons under their shipped units one after the
other (keepalived advert_int 1; keepalived advert_int 0.25 VRRPv3, a
failover like sparrow's defaults; sparrow defaults with TLS and the unit's
watchdog; without [vip] while the tree has no plugins/vip): per node,
CPU of one core over --idle-seconds (default 60) from
/proc/PID/stat utime+stime of the daemon's processes (10 ms ticks) and
from their threads' /proc/PID/task/*/schedstat (nanoseconds), PSS and RSS from
/proc/PID/smaps_rollup (PSS shares library pages among their users; RSS
counts them in full).
"""

import argparse
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.abspath(os.path.join(here, ".."))
sys.path.insert(0, os.path.join(SOURCE, "tests", "lab"))
import lab  # noqa: E402
import sparrowlab  # noqa: E402

VIP = "10.77.0.100"
PRIORITIES = (150, 100, 50)
STACKS = ("keepalived", "keepalived-fast", "sparrow", "sparrow-fast")
SCENARIOS = ("kill9", "stop", "crash", "linkdown", "sigstop", "partition", "rolling")
QUICK_SCENARIOS = ("kill9", "linkdown", "partition")
ANSWERING = 0.030  # a MAC that went this long without replying stopped answering
AFTER = 2.0        # the window goes on this long after the failover


class Stack:
    """How one HA daemon is configured, started and hurt in the lab."""

    def __init__(self, name):
        self.name = name
        self.keepalived = name.startswith("keepalived")
        self.unit = "keepalived.service" if self.keepalived else "sparrow.service"
        self.comm = "keepalived" if self.keepalived else "sparrowd"
        self.settle = 3.0 if name == "keepalived" else 1.5

    def settled_holder(self, the_lab):
        """Who holds the address once all is well: keepalived's highest
        priority takes it back (preemption); sparrow keeps any leader."""
        return the_lab.members[:1] if self.keepalived else the_lab.members

    def setup(self, node, ctx):
        """Writes this stack's configuration into node's root before it boots."""
        if self.keepalived:
            write_keepalived(node, ctx.lab, "0.1" if self.name == "keepalived-fast" else "1",
                             self.name == "keepalived-fast")
        else:
            write_sparrow(node, ctx, fast=self.name == "sparrow-fast")

    def start(self, ctx):
        for n in ctx.lab.members:
            n.sh("systemctl start keepalived.service" if self.keepalived
                 else "systemctl enable --now sparrow.target")


def write_keepalived(node, the_lab, advert_int, v3):
    prio = PRIORITIES[the_lab.members.index(node)]
    lab.write(os.path.join(node.root, "etc/keepalived/keepalived.conf"),
              "global_defs {\n  router_id %s\n%s}\n"
              "vrrp_instance lab {\n  interface eth0\n  virtual_router_id 77\n"
              "  priority %d\n  advert_int %s\n  virtual_ipaddress {\n    %s/24 dev eth0\n  }\n}\n"
              % (node.name, "  vrrp_version 3\n" if v3 else "", prio, advert_int, VIP))


def write_sparrow(node, ctx, fast, vip=True):
    members = ";".join("%s=%s:7400" % (n.name, n.ip) for n in ctx.lab.members)
    timing = "heartbeat-ms = 50\nelection-ms = 150\n" if fast else ""
    lab.write(os.path.join(node.root, "etc/sparrow/sparrow.conf"),
              "[node]\nname = %s\nlisten = %s:7400\n[cluster]\ninitial-members = %s\n%s"
              "[tls]\nca = /etc/sparrow/tls/ca.pem\ncert = /etc/sparrow/tls/node.pem\n"
              "key = /etc/sparrow/tls/node.key\n%s"
              % (node.name, node.ip, members, timing,
                 "[vip]\naddresses = %s/24@eth0\n" % VIP if vip else ""))
    sparrowlab.install_tls(node, ctx.certs)


class Context:
    """What the stacks share: sparrow's packages, its certificates, the lab;
    how leadership came in the rolling restarts, per stack."""
    debs = ()
    certs = None
    lab = None
    phase = 1.0

    def __init__(self):
        self.ways = {}


def build_sparrow(ctx, work):
    """sparrow's Debian packages of this tree, installed on the nodes as the
    lab tests install them (lab.build_debs, lab.installed_layer: the
    package's postinst made sparrowd's user), and the nodes' certificates."""
    ctx.debs = list(lab.build_debs(SOURCE).values())
    ctx.certs = sparrowlab.make_certs(work)


# -- faults ---------------------------------------------------------------

def daemon_pids(node, comm):
    """Host pids of node's processes named comm."""
    out = []
    for p in node.processes():
        try:
            with open("/proc/%d/comm" % p) as f:
                if f.read().strip() == comm:
                    out.append(p)
        except OSError:
            pass
    return out


def kill_daemon(node, stack):
    """SIGKILL to every process of the daemon, stopped first: one by one,
    keepalived's VRRP process would see its parent die first and shut down
    cleanly.  (Not cgroup.kill: on this machine the containers share their
    cgroups, a unit's cgroup holds that unit of every node.)"""
    signal_daemon(node, stack, signal.SIGSTOP)
    signal_daemon(node, stack, signal.SIGKILL)


def signal_daemon(node, stack, sig):
    for p in daemon_pids(node, stack.comm):
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass


def partition(holder, others, on=True):
    """Cuts holder off from others (both ways) or heals it; the observer
    keeps reaching everyone."""
    op = "add" if on else "del"
    for a, peers in [(holder, others)] + [(o, [holder]) for o in others]:
        cmds = ["ip route %s prohibit %s/32" % (op, p.ip) for p in peers]
        if on:
            # Also for what arrives: VRRP is multicast, no route decides
            # where it goes, but strict reverse-path filtering drops what
            # comes from a source this node cannot route back to.
            cmds += ["sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.eth0.rp_filter=1"]
        a.sh("; ".join(cmds), check=False)


def trigger(stack, scenario, holder, ctx):
    """Hurts holder; returns what repair() needs."""
    if scenario == "kill9":
        kill_daemon(holder, stack)
    elif scenario == "stop":
        holder.sh("systemctl --no-block stop " + stack.unit)
    elif scenario == "crash":
        holder.kill()
    elif scenario == "linkdown":
        holder.cut()
    elif scenario == "sigstop":
        signal_daemon(holder, stack, signal.SIGSTOP)
    elif scenario == "partition":
        partition(holder, [n for n in ctx.lab.members if n is not holder])


def repair(stack, scenario, holder, ctx):
    if scenario == "crash":
        holder.reboot()
    elif scenario == "linkdown":
        holder.cut(up=True)
    elif scenario == "partition":
        partition(holder, [n for n in ctx.lab.members if n is not holder], on=False)
    # Whatever the fault left of the daemon, it runs again (a no-op when
    # systemd restarted it already).
    holder.sh("systemctl start " + stack.unit, check=False)


# -- what the observer saw ------------------------------------------------

def stretches(times):
    """[(a, b)]: the stretches during which replies at times came less
    than ANSWERING apart."""
    out = []
    for t in times:
        if out and t - out[-1][1] < ANSWERING:
            out[-1][1] = t
        else:
            out.append([t, t])
    return out


def overlap(by_mac, start, end):
    """Total time in [start, end] during which two or more MACs answered."""
    events = []
    for times in by_mac.values():
        for a, b in stretches(times):
            a, b = max(a, start), min(b, end)
            if b > a:
                events += [(a, 1), (b, -1)]
    events.sort()
    total, depth, since = 0.0, 0, None
    for t, d in events:
        if depth >= 2:
            total += t - since
        depth += d
        since = t
    return total


def measure(samples, old_mac, t0, end):
    """failover, gap, overlap (seconds; failover None without one) and
    whether two MACs answered, from the samples of one trial."""
    before = [s.t for s in samples if s.t < t0]
    window = [s for s in samples if t0 <= s.t <= end]
    new = [s.t for s in window if s.mac != old_mac]
    failover = new[0] - t0 if new else None
    times = ([before[-1]] if before else [t0]) + [s.t for s in window] + [end]
    gap = max(b - a for a, b in zip(times, times[1:]))
    by_mac = {}
    for s in window:
        by_mac.setdefault(s.mac, []).append(s.t)
    two = bool(new) and any(s.mac == old_mac and s.t > new[0] for s in window)
    return failover, gap, overlap(by_mac, t0, end), two


def settled(ctx, stack, watch, timeout=60):
    """The MAC alone answering once the cluster is quiet, or raises."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = time.monotonic()
        recent = [s for s in list(watch.samples) if s.t > now - stack.settle]
        macs = {s.mac for s in recent}
        # 10 ms requests: most of them answered, by one member.
        if (len(macs) == 1 and len(recent) > stack.settle * 100 * 0.8
                and ctx.lab.by_mac(next(iter(macs))) in stack.settled_holder(ctx.lab)
                and all(n.sh("systemctl is-active " + stack.unit, check=False).stdout.strip()
                        == "active" for n in ctx.lab.members)):
            return next(iter(macs))
        time.sleep(0.2)
    raise lab.LabError("%s: no single holder of %s within %d s (seen: %s)"
                       % (stack.name, VIP, timeout, sorted(watch.macs(since=time.monotonic() - 2))))


def run_trial(ctx, stack, scenario, watch, rng):
    old_mac = settled(ctx, stack, watch)
    holder = ctx.lab.by_mac(old_mac)
    time.sleep(rng.random() * ctx.phase)
    t0 = time.monotonic()
    trigger(stack, scenario, holder, ctx)
    failed_over = None
    deadline = t0 + 20
    while time.monotonic() < deadline:
        new = [s.t for s in list(watch.samples) if s.t >= t0 and s.mac != old_mac]
        if new:
            failed_over = new[0]
            break
        time.sleep(0.02)
    end = (failed_over or deadline) + AFTER
    if scenario == "sigstop":
        time.sleep(max(0, t0 + 5 - time.monotonic()))
        signal_daemon(holder, stack, signal.SIGCONT)
        end = max(end, time.monotonic() + AFTER)
    elif scenario == "partition":
        time.sleep(max(0, max(t0 + 3, (failed_over or deadline) + AFTER) - time.monotonic()))
        partition(holder, [n for n in ctx.lab.members if n is not holder], on=False)
        end = max(end, time.monotonic() + 1.5)
    time.sleep(max(0, end - time.monotonic()))
    result = measure(list(watch.samples), old_mac, t0, end)
    repair(stack, scenario, holder, ctx)
    return result


def leaderships(ctx, t0, t1):
    """How each leader between t0 and t1 (monotonic s) came, from the
    members' journals: ("handed over" or "elected", ...)."""
    out = []
    for n in ctx.lab.members:
        lines = n.sh("journalctl -o json --no-pager -u sparrow.service", check=False).stdout
        for line in lines.splitlines():
            e = json.loads(line)
            msg = e.get("MESSAGE")
            if (isinstance(msg, str) and msg.startswith("leading in term ")
                    and t0 <= int(e["__MONOTONIC_TIMESTAMP"]) / 1e6 <= t1):
                out.append(msg.split(": ", 1)[1])
    return out


def run_rolling(ctx, stack, watch, rng):
    """One rolling restart: [(failover, gap, overlap, two)] per restart of
    the holder, and the ways leadership came meanwhile (sparrow)."""
    t_start = time.monotonic()
    rows = []
    for node in ctx.lab.members:
        old_mac = settled(ctx, stack, watch)
        time.sleep(rng.random() * ctx.phase)
        t0 = time.monotonic()
        node.sh("systemctl --no-block restart " + stack.unit)
        # The restarted daemon is active again before settled() counts.
        deadline = t0 + 60
        while (node.sh("systemctl is-active " + stack.unit, check=False).stdout.strip() != "active"
               or time.monotonic() < t0 + 0.2) and time.monotonic() < deadline:
            time.sleep(0.05)
        settled(ctx, stack, watch)
        end = time.monotonic()
        if ctx.lab.by_mac(old_mac) is node:
            # Two holders: answering at once.  The old holder answering
            # again later is keepalived's preemption, not an overlap.
            failover, gap, both, _ = measure(list(watch.samples), old_mac, t0, end)
            rows.append((failover, gap, both, both > 0))
    ways = [] if stack.keepalived else leaderships(ctx, t_start, time.monotonic())
    return rows, ways


def run_stack(ctx, stack, scenarios, trials, seed):
    """{scenario: [(failover, gap, overlap, two)]} from one fresh lab."""
    ctx.lab = lab.Lab(3, debs=() if stack.keepalived else ctx.debs,
                      setup=lambda n: stack.setup(n, ctx))
    ctx.lab.up()
    results = {}
    try:
        stack.start(ctx)
        with ctx.lab.watch([VIP]) as watch:
            for scenario in scenarios:
                rng = random.Random("%d-%s-%s" % (seed, stack.name, scenario))
                results[scenario] = []
                for i in range(trials):
                    if scenario == "rolling":
                        rows, ways = run_rolling(ctx, stack, watch, rng)
                        results[scenario] += rows
                        if not stack.keepalived:
                            ctx.ways.setdefault(stack.name, []).extend(ways)
                        print("  %s rolling %d: holder restarts: %s; leaders: %s"
                              % (stack.name, i + 1, ", ".join(
                                  "gap %.0f ms%s" % (r[1] * 1000, ", two holders" if r[3] else "")
                                  for r in rows) or "none",
                                 ", ".join(ways) or "-"), file=sys.stderr, flush=True)
                        continue
                    r = run_trial(ctx, stack, scenario, watch, rng)
                    results[scenario].append(r)
                    print("  %s %s %d: failover %s ms, gap %.0f ms, overlap %.0f ms%s"
                          % (stack.name, scenario, i + 1,
                             "none" if r[0] is None else "%.0f" % (r[0] * 1000), r[1] * 1000,
                             r[2] * 1000, ", two holders" if r[3] else ""),
                          file=sys.stderr, flush=True)
    finally:
        ctx.lab.down()
    return results


def spread(values):
    if not values:
        return "%20s" % "-"
    values = sorted(v * 1000 for v in values)
    return "%6.0f %6.0f %6.0f" % (values[0], statistics.median(values), values[-1])


def print_table(table):
    print("\n%-16s %-10s %3s  %-20s  %-20s  %-20s  %s"
          % ("stack", "scenario", "n", "failover ms", "gap ms", "overlap ms", "two"))
    print("%-16s %-10s %3s  %-20s  %-20s  %-20s" % ("", "", "", *["   min    med    max"] * 3))
    for stack, results in table:
        for scenario, rs in results.items():
            fails = [r[0] for r in rs if r[0] is not None]
            print("%-16s %-10s %3d  %s%s  %s  %s  %d/%d"
                  % (stack, scenario, len(rs), spread(fails),
                     "" if len(fails) == len(rs) else " (%d none)" % (len(rs) - len(fails)),
                     spread([r[1] for r in rs]), spread([r[2] for r in rs]),
                     sum(r[3] for r in rs), len(rs)))
    sys.stdout.flush()


def print_ways(ways):
    for stack, w in ways.items():
        print("%-16s rolling: %d leaders, %d handed over, %d elected"
              % (stack, len(w), w.count("handed over"), w.count("elected")))
    sys.stdout.flush()


# -- idle cost ------------------------------------------------------------

# Per process of the daemon: its CPU time in clock ticks (utime + stime,
# all threads) and in nanoseconds (the sum of its threads' schedstat), PSS
# and RSS in kB.  Read inside the node: its own processes only.
SAMPLE = r"""for p in $(pidof %s); do
  echo $p $(cut -d' ' -f14,15 /proc/$p/stat) $(cat /proc/$p/task/*/schedstat | awk '{s += $1} END {print s}') \
    $(awk '/^(Pss|Rss):/ {print $2}' /proc/$p/smaps_rollup | tr '\n' ' ')
done
getconf CLK_TCK"""


def sample(node, comm):
    """{pid: (CPU s from ticks, CPU s from schedstat, PSS MiB, RSS MiB)}."""
    lines = node.sh(SAMPLE % comm).stdout.split("\n")
    hz = int(lines[-2])
    out = {}
    for line in lines[:-2]:
        pid, utime, stime, ns, rss, pss = line.split()
        out[pid] = ((int(utime) + int(stime)) / hz, int(ns) / 1e9, int(pss) / 1024, int(rss) / 1024)
    return out


def idle_window(the_lab, comm, seconds):
    """Per member, over seconds: CPU % of one core from /proc/PID/stat and
    from schedstat, PSS and RSS in MiB, summed over the daemon's processes
    (those there at both ends)."""
    t0 = time.monotonic()
    first = [sample(n, comm) for n in the_lab.members]
    time.sleep(seconds)
    last = [sample(n, comm) for n in the_lab.members]
    wall = time.monotonic() - t0
    rows = []
    for a, b in zip(first, last):
        both = [p for p in b if p in a]
        rows.append((100 * sum(b[p][0] - a[p][0] for p in both) / wall,
                     100 * sum(b[p][1] - a[p][1] for p in both) / wall,
                     sum(b[p][2] for p in both), sum(b[p][3] for p in both)))
    return rows


def run_idle(ctx, seconds, vip):
    """One lab: keepalived at advert_int 1, then at 0.25 (VRRPv3), then
    sparrow (with [vip] when the tree has the plugin), each alone."""
    ctx.lab = lab.Lab(3, debs=ctx.debs, setup=lambda n: write_sparrow(n, ctx, False, vip))
    ctx.lab.up()
    rows = []
    try:
        with ctx.lab.watch([VIP]) as watch:
            for label, advert, v3 in (("keepalived advert_int 1", "1", False),
                                      ("keepalived advert_int 0.25 v3", "0.25", True)):
                for n in ctx.lab.members:
                    write_keepalived(n, ctx.lab, advert, v3)
                    n.sh("systemctl restart keepalived.service")
                holder = ctx.lab.by_mac(settled(ctx, Stack("keepalived"), watch))
                rows.append((label, idle_window(ctx.lab, "keepalived", seconds), holder))
            for n in ctx.lab.members:
                n.sh("systemctl stop keepalived.service")
            Stack("sparrow").start(ctx)
            if vip:
                holder = ctx.lab.by_mac(settled(ctx, Stack("sparrow"), watch))
            else:
                holder = sparrow_leader(ctx)
            rows.append(("sparrow defaults, TLS, unit%s" % ("" if vip else ", no [vip]"),
                         idle_window(ctx.lab, "sparrowd", seconds), holder))
    finally:
        ctx.lab.down()
    print("\nidle, %d s per window, per node (* holds the address, or leads): CPU %% of one "
          "core from /proc/PID/stat (10 ms ticks) and from schedstat (ns); PSS and RSS in MiB"
          % seconds)
    print("%-40s %-5s %9s %9s %7s %7s" % ("daemon", "node", "cpu stat", "cpu ns", "PSS", "RSS"))
    for label, per_node, holder in rows:
        for node, (cpu, cpu_ns, pss, rss) in zip(ctx.lab.members, per_node):
            print("%-40s %-5s %8.3f%% %8.3f%% %7.1f %7.1f"
                  % (label, node.name + ("*" if node is holder else ""), cpu, cpu_ns, pss, rss))


def sparrow_leader(ctx, timeout=60):
    """The leader once every sparrowd is up and one leads (without [vip]
    nothing answers for the address to tell)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = ctx.lab.members[0].sh("sparrowctl leader", check=False)
        active = all(n.sh("systemctl is-active sparrow.service", check=False).stdout.strip()
                     == "active" for n in ctx.lab.members)
        if r.returncode == 0 and active:
            name = r.stdout.split()[0]
            time.sleep(2)
            return next(n for n in ctx.lab.members if n.name == name)
        time.sleep(0.2)
    raise lab.LabError("sparrow: no leader within %d s" % timeout)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("build", help="meson build directory (for bench/arp-watch)")
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--phase", type=float, default=1.0,
                   help="the random phase before a trigger is 0..PHASE s (0: at once once "
                   "settled, the harshest for a node restarted just before)")
    p.add_argument("--quick", action="store_true",
                   help="3 trials of %s" % ", ".join(QUICK_SCENARIOS))
    p.add_argument("--stacks", default=",".join(STACKS))
    p.add_argument("--scenarios", default=None)
    p.add_argument("--idle", action="store_true", help="idle CPU and memory instead")
    p.add_argument("--idle-seconds", type=float, default=60)
    args = p.parse_args()
    why = lab.missing()
    if why:
        sys.exit("vip-bench: " + why)
    watcher = os.path.abspath(os.path.join(args.build, "bench", "arp-watch"))
    if not os.access(watcher, os.X_OK):
        sys.exit("vip-bench: %s is not built (meson compile -C %s)" % (watcher, args.build))
    os.environ["SPARROW_ARP_WATCH"] = watcher
    stacks = [Stack(s) for s in args.stacks.split(",")]
    for s in stacks:
        if s.name not in STACKS:
            sys.exit("vip-bench: unknown stack %s (known: %s)" % (s.name, ", ".join(STACKS)))
    scenarios = (args.scenarios.split(",") if args.scenarios
                 else QUICK_SCENARIOS if args.quick else SCENARIOS)
    for s in scenarios:
        if s not in SCENARIOS:
            sys.exit("vip-bench: unknown scenario %s (known: %s)" % (s, ", ".join(SCENARIOS)))
    trials = 3 if args.quick else args.trials
    has_vip = os.path.isdir(os.path.join(SOURCE, "plugins", "vip"))
    lab.rootfs()
    ctx = Context()
    ctx.phase = args.phase
    work = tempfile.mkdtemp(prefix="sparrow-vip-bench-")
    try:
        if args.idle or (has_vip and not all(s.keepalived for s in stacks)):
            build_sparrow(ctx, work)
        if args.idle:
            run_idle(ctx, args.idle_seconds, has_vip)
            return
        table = []
        for stack in stacks:
            if not stack.keepalived and not has_vip:
                print("%s: skipped: no plugins/vip in this tree" % stack.name, flush=True)
                continue
            table.append((stack.name, run_stack(ctx, stack, scenarios, trials, args.seed)))
            print_table(table[-1:])
            print_ways({k: v for k, v in ctx.ways.items() if k == stack.name})
        print("\nall (%d trials each, seed %d):" % (trials, args.seed))
        print_table(table)
        print_ways(ctx.ways)
    finally:
        lab.run("rm", "-rf", work)


if __name__ == "__main__":
    main()
