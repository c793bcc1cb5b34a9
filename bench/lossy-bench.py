#!/usr/bin/python3
"""sparrow and keepalived on a lossy, delayed network between the members,
in the lab (printed, never asserted).  As root:

  /usr/bin/python3 bench/lossy-bench.py BUILD [--loss PCT] [--delay-ms D]
        [--jitter-ms J] [--seconds S] [--stacks A,B] [--seed N] [--debs DIR]
        [--cluster-conf "election-ms = 400"] [--kills N [--kill-every S]]

BUILD is a meson build directory of this tree (bench/arp-watch,
bench/nfq-delay).  --debs DIR: sparrow's .deb files from DIR (e.g. a
directory lab.build_debs made before) instead of building them from the tree.
--cluster-conf: lines added to sparrow's [cluster] section (";" separates
them), e.g. another election range on the same network.  --kills N
(sparrow only): instead of --seconds, once the network is lossy, SIGKILL
the leader's sparrowd N times (a random 0..1 s after a leader leads, then
--kill-every seconds, default 8, for the election; systemd restarts it) and
print, per kill, the time until another node took leadership and the terms
begun until then: more than one is a split vote (or lost votes).

One 3-node lab (n1..n3), the stacks one after the other, each alone on it:

  sparrow          sparrow.service as shipped (TLS, watchdog, defaults),
                   [vip] 10.77.0.100/24@eth0
  keepalived-0.25  advert_int 0.25, VRRPv3 (a failover like sparrow's)
  keepalived       VRRP defaults (advert_int 1, VRRPv2)
  keepalived holds the address with priorities 150/100/50, preemption on.

Once a stack has settled (one MAC alone answers for the address), every
member drops --loss percent (default 20) of what it receives from the other
members (iptables' statistic match in its own network namespace) and holds
the rest --delay-ms ± --jitter-ms (default 30 ± 20, uniform; bench/nfq-delay
behind iptables' NFQUEUE target, in the member's namespace), for --seconds
(default 60); each direction between two members sees the loss and the
delay once.  The observer (arp-watch, every 10 ms; its own traffic is not
hurt) and each node's journal and D-Bus say what happened in that window:

  per node   sparrow: sparrow-leader.target started / stopped (sparrowd's
             journal); keepalived: MASTER / BACKUP state entered
  changes    leadership changes: a leader (sparrow: Role "leader" in a term;
             keepalived: MASTER) other than the one before
  elections  sparrow: campaigns (a node's Role became "candidate": the bus
             shows a pre-candidate as one), terms begun in the window (each
             is an election: with pre-vote, a term begins only when a
             pre-vote won), those that elected a leader, and those in which
             no node became leader (a split vote, or the votes were lost)
  lapses     sparrow: the leader's lease lapsed (LeaseValid false) and came
             back while it went on leading (a lease lapse without a change of
             leader), or it stopped leading before; restarts: the target
             stopped and started again on the same node with no other node
             starting it in between
  silent     share of the window in which nothing answered for the address
             (gaps of more than 30 ms between any two replies)
  two        two-holder samples: replies from a MAC within 15 ms of a reply
             from another MAC; overlap: time during which two MACs were
             answering (see bench/vip-bench.py); keepalived's own two-master
             time: time during which two or more nodes' journals say MASTER

Sparrow's state comes from `busctl monitor` of its Manager object on each
node (Role, Term, LeaseValid changes, stamped on the host's clock when read:
a few ms late at worst); the figures are from the window only, every member
sees every window.
"""

import argparse
import glob
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.abspath(os.path.join(here, ".."))
sys.path.insert(0, os.path.join(SOURCE, "tests", "lab"))
import lab  # noqa: E402
import sparrowlab  # noqa: E402

VIP = "10.77.0.100"
PACKAGES = lab.PACKAGES + ",iptables"
STACKS = ("sparrow", "keepalived-0.25", "keepalived")
ANSWERING = 0.030
SAME_ROUND = 0.015
MANAGER = "org.sparrow.cluster1.Manager"


def vip_bench():
    """bench/vip-bench.py as a module (its name has a dash)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("vip_bench", os.path.join(here, "vip-bench.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


VB = vip_bench()


# -- the lossy network -----------------------------------------------------

class Lossy:
    """Loss and delay on what each member receives from the other members,
    in the members' own network namespaces only."""

    def __init__(self, the_lab, loss, delay_ms, jitter_ms, binary, seed):
        self.lab = the_lab
        self.procs = []
        self.summary = {}
        try:
            self._add(loss, delay_ms, jitter_ms, binary, seed)
        except BaseException:
            self.close()
            raise

    def _add(self, loss, delay_ms, jitter_ms, binary, seed):
        for i, n in enumerate(self.lab.members):
            peers = ",".join(p.ip for p in self.lab.members if p is not n)
            cmds = ["iptables -w -N LOSSY", "iptables -w -A INPUT -j LOSSY"]
            if loss:
                cmds.append("iptables -w -A LOSSY -s %s -m statistic --mode random "
                            "--probability %.4f -j DROP" % (peers, loss / 100))
            if delay_ms:
                cmds.append("iptables -w -A LOSSY -s %s -j NFQUEUE --queue-num 0 --queue-bypass"
                            % peers)
                p = subprocess.Popen(
                    ["nsenter", "-t", str(n.pid1), "-n", binary, "--delay-ms", str(delay_ms),
                     "--jitter-ms", str(jitter_ms), "--seed", str(seed * 10 + i + 1)],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                if p.stdout.readline().strip() != "ready":
                    p.wait(timeout=5)
                    raise lab.LabError("nfq-delay on %s: %s" % (n.name, p.stderr.read().strip()))
                self.procs.append((n, p))
            n.sh(" && ".join(cmds))

    def close(self):
        for n in self.lab.members:
            n.sh("iptables -w -D INPUT -j LOSSY; iptables -w -F LOSSY; iptables -w -X LOSSY",
                 check=False)
        for n, p in self.procs:
            p.send_signal(signal.SIGTERM)
            out, err = p.communicate(timeout=10)
            self.summary[n.name] = (out.strip().split("\n")[-1] + " " + err.strip()).strip()


# -- what each node says ---------------------------------------------------

class BusWatch:
    """sparrowd's Manager properties on one node, as they change: events
    [(t, {property: value})], t on the host's CLOCK_MONOTONIC at reading;
    Role "stopped" when sparrowd leaves the bus, "follower" when it is back."""

    def __init__(self, node):
        self.node = node
        self.events = []
        self.proc = subprocess.Popen(
            ["nsenter", "-t", str(node.pid1), "-a", "busctl", "--json=short", "monitor",
             "--match", "type='signal',interface='org.freedesktop.DBus.Properties',"
             "member='PropertiesChanged',path='/org/sparrow/cluster1'",
             "--match", "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',"
             "arg0='org.sparrow.cluster1'"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            t = time.monotonic()
            try:
                msg = json.loads(line)
                first, second = msg["payload"]["data"][:2]
            except (ValueError, KeyError, TypeError):
                continue
            if msg.get("member") == "NameOwnerChanged":
                # sparrowd went (killed) or came back: a new one starts as
                # a follower and says nothing of it on the bus.
                gone = not msg["payload"]["data"][2]
                self.events.append((t, {"Role": "stopped" if gone else "follower"}))
            elif first == MANAGER:
                changed = second
                self.events.append((t, {k: v["data"] for k, v in changed.items()}))

    def state(self):
        """The properties now (busctl get-property), as a starting point."""
        out = {}
        for prop in ("Role", "Term", "LeaseValid", "Leader"):
            r = self.node.sh("busctl get-property org.sparrow.cluster1 /org/sparrow/cluster1 "
                             "%s %s" % (MANAGER, prop), check=False)
            parts = r.stdout.split(None, 1)
            if len(parts) == 2:
                value = parts[1].strip()
                out[prop] = (int(value) if parts[0] == "t" else value == "true"
                             if parts[0] == "b" else json.loads(value))
        return out

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)


def journal(node, unit, since):
    """[(monotonic s, message)] of unit's journal entries after since."""
    out = node.sh("journalctl --no-pager -o json -u %s" % unit, check=False).stdout
    entries = []
    for line in out.splitlines():
        try:
            e = json.loads(line)
            t = int(e["__MONOTONIC_TIMESTAMP"]) / 1e6
            msg = e.get("MESSAGE")
        except (ValueError, KeyError):
            continue
        if t >= since and isinstance(msg, str):
            entries.append((t, msg))
    return entries


# -- figures ---------------------------------------------------------------

def vip_figures(samples, t0, t1):
    """silent share, two-holder samples, overlap seconds, MACs seen."""
    window = sorted((s for s in samples if t0 <= s.t <= t1), key=lambda s: s.t)
    times = [t0] + [s.t for s in window] + [t1]
    silent = sum(b - a for a, b in zip(times, times[1:]) if b - a > ANSWERING)
    two = 0
    for i, s in enumerate(window):
        j = i - 1
        while j >= 0 and s.t - window[j].t <= SAME_ROUND:
            if window[j].mac != s.mac:
                two += 1
                break
            j -= 1
    by_mac = {}
    for s in window:
        by_mac.setdefault(s.mac, []).append(s.t)
    return silent / (t1 - t0), two, VB.overlap(by_mac, t0, t1), len(by_mac)


def sparrow_figures(the_lab, watches, starts, t0, t1):
    """Per node target starts/stops, and the cluster's leadership events."""
    rows = {}
    target = []  # (t, node, started)
    for n in the_lab.members:
        es = journal(n, "sparrow.service", t0)
        es = [(t, m) for t, m in es if t <= t1]
        up = [t for t, m in es if m.startswith("sparrow-leader.target started")]
        down = [t for t, m in es if m == "sparrow-leader.target stopped"]
        target += [(t, n.name, True) for t in up] + [(t, n.name, False) for t in down]
        rows[n.name] = {"started": len(up), "stopped": len(down)}
    target.sort()
    # A restart: the node that started the target last starts it again
    # (it stopped in between), nobody else having started it meanwhile.
    restarts, last_holder = 0, None
    for t, name, started in target:
        if started:
            restarts += last_holder == name
            last_holder = name
    # Leadership: per node, its state through the window.
    leaders = []  # (t, node, term)
    terms_seen = {}  # term: when first seen
    lapses_kept = lapses_lost = campaigns = 0
    base_term = min(st.get("Term", 0) for st in starts.values())
    for n in the_lab.members:
        st = dict(starts[n.name])
        lapsed = False
        for t, changed in watches[n.name].events:
            before_role = st.get("Role")
            st.update(changed)
            if t < t0 or t > t1:
                continue
            if "Term" in changed:
                terms_seen[changed["Term"]] = min(t, terms_seen.get(changed["Term"], t))
            campaigns += st.get("Role") == "candidate" and before_role != "candidate"
            if st.get("Role") == "leader" and (before_role != "leader" or "Term" in changed):
                leaders.append((t, n.name, st.get("Term")))
            if before_role == "leader" and st.get("Role") != "leader" and lapsed:
                lapses_lost += 1
                lapsed = False
            if "LeaseValid" in changed and st.get("Role") == "leader":
                if not changed["LeaseValid"]:
                    lapsed = True
                elif lapsed:
                    lapses_kept += 1
                    lapsed = False
    leaders.sort()
    # The leader when the window opened counts: its first successor is a change.
    changes = 0
    prev = next((name for name, st in starts.items() if st.get("Role") == "leader"), None)
    for t, name, term in leaders:
        if prev is not None and name != prev:
            changes += 1
        prev = name
    begun = sorted(x for x in terms_seen if x > base_term)
    elected = {term for _, _, term in leaders}
    return rows, {"changes": changes, "leaders": len(leaders), "elections": len(begun),
                  "elected": len([x for x in begun if x in elected]),
                  "split": len([x for x in begun if x not in elected]),
                  "campaigns": campaigns, "lapses_kept": lapses_kept, "lapses_lost": lapses_lost,
                  "restarts_same_node": restarts, "leader_list": leaders,
                  "term_times": {x: terms_seen[x] for x in begun}}


def keepalived_figures(the_lab, t0, t1):
    """Per node MASTER / BACKUP entries, changes of master, and the time
    two or more nodes' journals said MASTER at once."""
    rows, events = {}, []
    for n in the_lab.members:
        es = [(t, m) for t, m in journal(n, "keepalived.service", 0) if t <= t1]
        state_at_t0 = None
        for t, m in es:
            if "Entering" in m and t < t0:
                state_at_t0 = "MASTER" if "MASTER STATE" in m else "other"
        master = [t for t, m in es if t >= t0 and "Entering MASTER STATE" in m]
        other = [t for t, m in es if t >= t0 and ("Entering BACKUP STATE" in m
                                                  or "Entering FAULT STATE" in m)]
        rows[n.name] = {"started": len(master), "stopped": len(other)}
        events += [(t0, n.name, state_at_t0 == "MASTER")]
        events += [(t, n.name, True) for t in master] + [(t, n.name, False) for t in other]
    events.sort()
    masters, two, changes, last, prev_t, prev = set(), 0.0, 0, None, t0, None
    for t, name, is_master in events + [(t1, None, None)]:
        if len(masters) >= 2:
            two += t - prev_t
        prev_t = t
        if name is None:
            break
        if is_master:
            masters.add(name)
            if t > t0 and prev is not None and prev != name:
                changes += 1
            prev = name
        else:
            masters.discard(name)
    return rows, {"changes": changes, "two_master_s": two}


# -- the stacks ------------------------------------------------------------

def write_sparrow(node, ctx, cluster_conf):
    """vip-bench's configuration (defaults, TLS, [vip]), cluster_conf's
    lines added to [cluster]."""
    VB.write_sparrow(node, ctx, False)
    path = os.path.join(node.root, "etc/sparrow/sparrow.conf")
    with open(path) as f:
        text = f.read()
    extra = "".join(line.strip() + "\n" for line in cluster_conf.split(";") if line.strip())
    lab.write(path, text.replace("[tls]\n", extra + "[tls]\n", 1))


def start_stack(ctx, stack):
    for n in ctx.lab.members:
        if stack == "sparrow":
            n.sh("systemctl stop keepalived.service; systemctl enable --now sparrow.target")
            # A configuration sparrowd refuses (--cluster-conf) says so here,
            # not as an address nobody holds.
            r = n.sh("/usr/sbin/sparrowd --check-config", check=False)
            if r.returncode != 0:
                raise lab.LabError("%s: sparrowd --check-config: %s%s"
                                   % (n.name, r.stdout.strip(), r.stderr.strip()))
        else:
            n.sh("systemctl stop sparrow.target sparrow.service", check=False)
            VB.write_keepalived(n, ctx.lab, "1" if stack == "keepalived" else "0.25",
                                stack != "keepalived")
            n.sh("systemctl restart keepalived.service")


def run_stack(ctx, stack, args, watch, nfq):
    start_stack(ctx, stack)
    vb_stack = VB.Stack("keepalived" if stack == "keepalived" else
                        "keepalived-fast" if stack.startswith("keepalived") else "sparrow")
    VB.settled(ctx, vb_stack, watch, timeout=120)
    buses, starts = {}, {}
    if stack == "sparrow":
        for n in ctx.lab.members:
            buses[n.name] = BusWatch(n)
        time.sleep(0.5)
        starts = {n.name: buses[n.name].state() for n in ctx.lab.members}
    lossy = Lossy(ctx.lab, args.loss, args.delay_ms, args.jitter_ms, nfq, args.seed)
    t0 = time.monotonic()
    kills = []
    try:
        if stack == "sparrow" and args.kills:
            kills = kill_leaders(ctx, buses, starts, args)
        else:
            time.sleep(args.seconds)
    finally:
        t1 = time.monotonic()
        lossy.close()
        for b in buses.values():
            b.close()
    silent, two, overlap, macs = vip_figures(list(watch.samples), t0, t1)
    if stack == "sparrow":
        rows, cluster = sparrow_figures(ctx.lab, buses, starts, t0, t1)
    else:
        rows, cluster = keepalived_figures(ctx.lab, t0, t1)
    cluster.update(silent=silent, two=two, overlap=overlap, macs=macs, seconds=t1 - t0,
                   delay=lossy.summary, kills=kill_figures(kills, cluster) if kills else None)
    return rows, cluster


def current_leader(ctx, buses, starts, after):
    """The member that last became leader, after monotonic time after (a
    killed leader's last word on the bus stays "leader"), or None."""
    best = None
    for n in ctx.lab.members:
        role, since = starts[n.name].get("Role"), 0.0
        for t, changed in list(buses[n.name].events):
            if "Role" in changed and changed["Role"] != role:
                role, since = changed["Role"], t
        if role == "leader" and since >= after and (best is None or since > best[0]):
            best = (since, n)
    return best and best[1]


def kill_leaders(ctx, buses, starts, args):
    """--kills times: once a leader leads (and a random 0..1 s later),
    SIGKILL its sparrowd (systemd starts it again), then --kill-every
    seconds for the election.  Returns [(t, killed node's name)]."""
    rng = random.Random("%d-kills" % args.seed)
    kills, after = [], 0.0
    for _ in range(args.kills):
        deadline = time.monotonic() + 30
        leader = None
        while leader is None and time.monotonic() < deadline:
            leader = current_leader(ctx, buses, starts, after)
            time.sleep(0.1)
        if leader is None:
            break
        time.sleep(rng.random())
        after = time.monotonic()
        kills.append((after, leader.name))
        VB.kill_daemon(leader, VB.Stack("sparrow"))
        time.sleep(args.kill_every)
    return kills


def kill_figures(kills, cluster):
    """Per kill: the time to the next leader taking by another node, and
    the terms begun until then (more than one: a split vote or votes lost)."""
    out = []
    for (tk, name), nxt in zip(kills, kills[1:] + [(float("inf"), None)]):
        takings = [t for t, who, _ in cluster["leader_list"] if tk < t < nxt[0] and who != name]
        until = takings[0] if takings else nxt[0]
        terms = [x for x, t in cluster["term_times"].items() if tk < t <= until]
        out.append((takings[0] - tk if takings else None, len(terms)))
    return out


def print_result(stack, rows, cluster, args):
    print("\n%s, %.0f s at %g %% loss%s between members:"
          % (stack, cluster["seconds"], args.loss,
             " and %d ± %d ms delay" % (args.delay_ms, args.jitter_ms) if args.delay_ms else ""))
    what = "leader target" if stack == "sparrow" else "MASTER / BACKUP entered"
    for name, r in rows.items():
        print("  %-4s %s: started %d, stopped %d" % (name, what, r["started"], r["stopped"]))
    print("  leadership changes %d" % cluster["changes"])
    if stack == "sparrow":
        print("  campaigns (pre-vote or vote) %d; elections (terms begun) %d: elected %d, "
              "without a leader (split or lost) %d; leader takings %d"
              % (cluster["campaigns"], cluster["elections"], cluster["elected"], cluster["split"],
                 cluster["leaders"]))
        print("  lease lapses on a leader: it went on leading %d, it lost leadership %d; "
              "target restarted on the same node %d"
              % (cluster["lapses_kept"], cluster["lapses_lost"], cluster["restarts_same_node"]))
    else:
        print("  two-master time (journals) %.0f ms" % (cluster["two_master_s"] * 1000))
    print("  address silent %.1f %% of the window; two-holder samples %d; overlap %.0f ms; "
          "MACs %d" % (100 * cluster["silent"], cluster["two"], cluster["overlap"] * 1000,
                       cluster["macs"]))
    if cluster["kills"]:
        ks = cluster["kills"]
        elected = sorted(k[0] for k in ks if k[0] is not None)
        print("  leader killed %d times: a new leader in %d (ms min/median/max %s); terms begun "
              "until then: %s; kills needing more than one term %d"
              % (len(ks), len(elected), VB.spread(elected).strip(),
                 " ".join(str(k[1]) for k in ks), sum(k[1] > 1 for k in ks)))
    for name, s in sorted(cluster["delay"].items()):
        print("  nfq-delay %s: %s" % (name, s))
    sys.stdout.flush()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("build")
    p.add_argument("--loss", type=float, default=20)
    p.add_argument("--delay-ms", type=int, default=30)
    p.add_argument("--jitter-ms", type=int, default=20)
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--stacks", default=",".join(STACKS))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--debs", help="directory of sparrow's .deb files to install")
    p.add_argument("--kills", type=int, default=0,
                   help="sparrow: SIGKILL the leader's sparrowd N times instead of --seconds")
    p.add_argument("--kill-every", type=float, default=8)
    p.add_argument("--cluster-conf", default="", help="lines for sparrow's [cluster], ';' apart")
    args = p.parse_args()
    why = lab.missing()
    if why:
        sys.exit("lossy-bench: " + why)
    tools = {}
    for tool in ("arp-watch", "nfq-delay"):
        tools[tool] = os.path.abspath(os.path.join(args.build, "bench", tool))
        if not os.access(tools[tool], os.X_OK):
            sys.exit("lossy-bench: %s is not built (meson compile -C %s)" % (tools[tool],
                                                                            args.build))
    os.environ["SPARROW_ARP_WATCH"] = tools["arp-watch"]
    stacks = args.stacks.split(",")
    for s in stacks:
        if s not in STACKS:
            sys.exit("lossy-bench: unknown stack %s (known: %s)" % (s, ", ".join(STACKS)))
    random.seed(args.seed)
    ctx = VB.Context()
    work = tempfile.mkdtemp(prefix="sparrow-lossy-bench-")
    try:
        if args.debs:
            ctx.debs = [d for d in glob.glob(os.path.join(args.debs, "*.deb"))
                        if os.path.basename(d).split("_")[0] == "sparrow"
                        or os.path.basename(d).startswith("sparrow-plugin-")]
            ctx.certs = sparrowlab.make_certs(work)
        else:
            VB.build_sparrow(ctx, work)
        ctx.lab = lab.Lab(3, debs=ctx.debs, packages=PACKAGES,
                          setup=lambda n: write_sparrow(n, ctx, args.cluster_conf))
        ctx.lab.up()
        results = []
        try:
            with ctx.lab.watch([VIP]) as watch:
                for stack in stacks:
                    rows, cluster = run_stack(ctx, stack, args, watch, tools["nfq-delay"])
                    print_result(stack, rows, cluster, args)
                    results.append((stack, rows, cluster))
        finally:
            ctx.lab.down()
        print("\nsummary (%g %% loss, %s; sparrow [cluster] %s):"
              % (args.loss, "%d ± %d ms" % (args.delay_ms, args.jitter_ms) if args.delay_ms
                 else "no delay", args.cluster_conf or "defaults"))
        print("%-16s %8s %8s %8s %9s %6s %10s" % ("stack", "starts", "stops", "changes", "silent",
                                                   "two", "two-master"))
        for stack, rows, cluster in results:
            print("%-16s %8d %8d %8d %8.1f%% %6d %10s"
                  % (stack, sum(r["started"] for r in rows.values()),
                     sum(r["stopped"] for r in rows.values()), cluster["changes"],
                     100 * cluster["silent"], cluster["two"],
                     "-" if stack == "sparrow" else "%.0f ms" % (cluster["two_master_s"] * 1000)))
    finally:
        lab.run("rm", "-rf", work)


if __name__ == "__main__":
    main()
