#!/usr/bin/env python3
"""Failover of a leader-only unit in the lab (printed, never asserted):
time from the event on the leader to the example leader-only unit being
active on another node, for

  node-crash    SIGKILL to the leader node's PID 1,
  planned-stop  `systemctl stop sparrow` on the leader,
  daemon-crash  `kill -9` of sparrowd on the leader,

each over --trials fresh 3-node labs (default 10), plus the lab's bring-up
time.  Polls every node with systemctl through nsenter, so figures carry a
granularity of about 20 ms.  As root: bench/lab-failover.py [--trials N]
"""

import argparse
import os
import statistics
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "lab"))
import lab  # noqa: E402
from sparrowlab import EXAMPLE, SparrowLabCase  # noqa: E402


class Trial(SparrowLabCase):
    """Reuses the lab tests' configuration; not run as a test here."""
    units = {}

    def runTest(self):
        pass


def holder(nodes):
    for n in nodes:
        if n.sh("systemctl is-active " + EXAMPLE, check=False).stdout.strip() == "active":
            return n
    return None


def trial(kind):
    t = Trial()
    t.lab = lab.Lab(3, debs=Trial.debs.values(), setup=t.configure)
    boot = t.lab.up()
    try:
        for n in t.lab.members:
            n.sh("systemctl enable %s && systemctl enable --now sparrow.target" % EXAMPLE)
        old = t.wait_one_holder()
        time.sleep(1)
        rest = [n for n in t.lab.members if n is not old]
        t0 = time.monotonic()
        if kind == "node-crash":
            os.kill(old.pid1, 9)
        elif kind == "planned-stop":
            old.sh("systemctl --no-block stop sparrow.service")
        else:
            old.sh("kill -9 $(systemctl show --property=MainPID --value sparrow.service)")
        while time.monotonic() - t0 < 30:
            if holder(rest):
                return (time.monotonic() - t0) * 1000, boot
        return None, boot
    finally:
        t.lab.down()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--trials", type=int, default=10)
    args = p.parse_args()
    why = lab.missing()
    if why:
        sys.exit("lab-failover: " + why)
    t0 = time.monotonic()
    lab.rootfs()
    print("rootfs ready in %.1f s (%s)" % (time.monotonic() - t0, lab.CACHE), flush=True)
    Trial.setUpClass()
    boots = []
    try:
        for kind in ("node-crash", "planned-stop", "daemon-crash"):
            ms = []
            for _ in range(args.trials):
                took, boot = trial(kind)
                boots.append(boot)
                if took is not None:
                    ms.append(took)
            ms.sort()
            print("%-13s n=%-2d min %6.0f  median %6.0f  max %6.0f ms" % (
                kind, len(ms), ms[0], statistics.median(ms), ms[-1]), flush=True)
        print("lab boot (3 nodes + observer, cached rootfs): median %.2f s"
              % statistics.median(boots))
    finally:
        Trial.tearDownClass()


if __name__ == "__main__":
    main()
