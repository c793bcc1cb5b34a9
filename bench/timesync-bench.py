#!/usr/bin/env python3
"""Switch-over of the cluster's clock in the lab (printed, never asserted):
time from a leadership change (a planned `sparrowctl transfer` to the
next node, round robin) to every follower's chronyd having selected the
new leader (`chronyc -c -n sources`, state '*'), for

  chrony     the timesync plugin: the sources file rewritten and
             `chronyc reload sources`, chronyd never restarted;
  ntpd       the timesync plugin with backend = ntpd (ntpsec), in a lab of
             its own: ntpd's configuration rewritten and ntpsec.service
             restarted through systemd (minpoll 3, maxpoll 4: ntpd's
             floor), `ntpq -n -p` polled;
  restart    the approach sparrow replaces, in the same lab, sparrow then
             running without [timesync]: at the same moment chrony.conf is
             rewritten on every node (the admin's file plus `local stratum
             10` and `allow` on the new leader, the leader as `server ...
             iburst minpoll -2 maxpoll 2 prefer` elsewhere) and chronyd
             restarted, on all nodes at once.

chrony and restart use the poll settings of tests/lab/test_timesync.py
(minpoll -2, maxpoll 2).  --trials per approach (default 10); the
followers are polled every ~50 ms through nsenter, so figures carry that
granularity.  Prints min/median/max and how many times a follower's daemon
was restarted (its PID changed).  --only chrony,restart,ntpd picks.
As root: /usr/bin/python3 bench/timesync-bench.py [--trials N]
"""

import argparse
import os
import statistics
import sys
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "lab"))
import lab  # noqa: E402
from test_timesync import Ntpd, Timesync, chronyd_pid, ntpd_selected, selected  # noqa: E402


def leader_of(nodes):
    names = {(n.sh("sparrowctl leader", check=False).stdout.split() or [""])[0] for n in nodes}
    by_name = {n.name: n for n in nodes}
    return by_name.get(names.pop()) if len(names) == 1 else None


def wait_leader(nodes, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = leader_of(nodes)
        if n:
            return n
        time.sleep(0.1)
    raise lab.LabError("no leader")


def wait_selected(followers, leader, t0, timeout=60, pick=selected):
    """Seconds from t0 until every follower selected leader, or None."""
    while time.monotonic() - t0 < timeout:
        if all(pick(f) == leader.ip for f in followers):
            return time.monotonic() - t0
        time.sleep(0.05)
    return None


def restart_everything(nodes, leader, admin):
    """What the replaced system does on a leadership change."""
    def one(n):
        if n is leader:
            extra = "local stratum 10\nallow 10.77.0.0/24\n"
        else:
            extra = "server %s iburst minpoll -2 maxpoll 2 prefer\nallow 10.77.0.0/24\n" % leader.ip
        lab.write(os.path.join(n.root, "etc/chrony/chrony.conf"), admin + extra)
        n.sh("systemctl restart chrony.service")
    threads = [threading.Thread(target=one, args=(n,)) for n in nodes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def ntpd_pid(node):
    return node.sh("pidof ntpd", check=False).stdout.strip()


def run(approach, nodes, trials, admin):
    times, restarted = [], 0
    pick, pid = (ntpd_selected, ntpd_pid) if approach == "ntpd" else (selected, chronyd_pid)
    leader = wait_leader(nodes)
    followers = [n for n in nodes if n is not leader]
    if approach == "restart":
        restart_everything(nodes, leader, admin)
    if wait_selected(followers, leader, time.monotonic(), 120, pick) is None:
        raise lab.LabError("%s: the followers never selected %s" % (approach, leader.name))
    for i in range(trials):
        target = nodes[(nodes.index(leader) + 1) % len(nodes)]
        pids = {n.name: pid(n) for n in nodes if n is not target}
        time.sleep(2)
        t0 = time.monotonic()
        leader.sh("sparrowctl transfer " + target.name)
        if approach == "restart":
            restart_everything(nodes, target, admin)
        followers = [n for n in nodes if n is not target]
        took = wait_selected(followers, target, t0, 60, pick)
        restarted += sum(pid(n) != pids[n.name] for n in followers)
        print("%-9s trial %2d: %s -> %s  %s" % (approach, i + 1, leader.name, target.name,
              "%.2f s" % took if took is not None else "not within 60 s"), flush=True)
        if took is not None:
            times.append(took)
        leader = wait_leader(nodes)
    return times, restarted


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=10)
    p.add_argument("--only", default="chrony,restart,ntpd")
    args = p.parse_args()
    only = args.only.split(",")
    why = lab.missing()
    if why:
        sys.exit("timesync-bench: " + why)
    results = {}
    if "ntpd" in only:
        Ntpd.setUpClass()
        try:
            results["ntpd"] = run("ntpd", Ntpd.lab.members, args.trials, None)
        finally:
            Ntpd.tearDownClass()
    if "chrony" not in only and "restart" not in only:
        report(results)
        return
    Timesync.setUpClass()
    try:
        nodes = Timesync.lab.members
        with open(os.path.join(nodes[0].root, "etc/chrony/chrony.conf")) as f:
            admin = f.read()
        if "chrony" in only:
            results["chrony"] = run("chrony", nodes, args.trials, admin)
        # The same lab without the plugin: the bench does the old system's job.
        for n in nodes:
            conf = os.path.join(n.root, "etc/sparrow/sparrow.conf")
            with open(conf) as f:
                text = f.read()
            start = text.index("[timesync]")
            end = text.find("[", start + 1)
            lab.write(conf, text[:start] + (text[end:] if end >= 0 else ""))
        for n in nodes:
            n.sh("systemctl restart sparrow.service")
        if "restart" in only:
            results["restart"] = run("restart", nodes, args.trials, admin)
    finally:
        Timesync.tearDownClass()
    report(results)


def report(results):
    print("\nswitch-over, leadership change -> every follower's time daemon selected the "
          "new leader")
    print("%-10s %6s %8s %8s %8s  %s" % ("approach", "trials", "min", "median", "max",
                                          "follower daemon restarts"))
    for name, (times, restarted) in results.items():
        if times:
            print("%-10s %6d %7.2fs %7.2fs %7.2fs  %d" % (name, len(times), min(times),
                  statistics.median(times), max(times), restarted))
        else:
            print("%-10s %6d %8s %8s %8s  %d" % (name, 0, "-", "-", "-", restarted))


if __name__ == "__main__":
    main()
