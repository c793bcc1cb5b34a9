#!/usr/bin/env python3
"""What the fence keeper (sparrow-fence) costs and how fast it reacts, next
to a real 3-node cluster on 127.0.0.1 with the daemon's default timings:
the leader's keeper's memory (RSS and PSS, /proc/PID/smaps_rollup) and
wake-ups per second while the leader holds (context switches), then its
reaction when the leader's sparrowd is stopped (SIGSTOP): how late after
the lease's end it fenced, and the kill.  Addresses are fenced in
tests/test-keeper.py (which prints the removal time): this cluster holds
none.  Run it by hand on a release build:

  meson setup build-rel -Db_sanitize=none -Dbuildtype=release
  meson compile -C build-rel
  python3 bench/keeper-bench.py build-rel [--seconds N] [--trials N]"""

import argparse
import os
import re
import signal
import sys
import time

here = os.path.dirname(os.path.abspath(__file__))
parser = argparse.ArgumentParser()
parser.add_argument("build")
parser.add_argument("--seconds", type=float, default=20.0)
parser.add_argument("--trials", type=int, default=3)
args = parser.parse_args()
build = os.path.abspath(args.build)
os.environ.setdefault("SPARROWD", os.path.join(build, "daemon", "sparrowd"))
os.environ.setdefault("SPARROWCTL", os.path.join(build, "daemon", "sparrowctl"))
os.environ.setdefault("SPARROW_FENCE", os.path.join(build, "daemon", "sparrow-fence"))
os.environ.setdefault("SPARROW_KEEPER_GRACE_MS", "20")  # the unit's
sys.path.insert(0, os.path.join(here, "..", "tests", "integration"))

from cluster import Cluster  # noqa: E402


def memory_kib(pid):
    with open("/proc/%d/smaps_rollup" % pid) as f:
        text = f.read()
    return {k: int(re.search(r"^%s:\s+(\d+) kB" % k, text, re.M).group(1)) for k in ("Rss", "Pss")}


def switches(pid):
    with open("/proc/%d/status" % pid) as f:
        text = f.read()
    return sum(int(v) for v in re.findall(r"_ctxt_switches:\s+(\d+)", text))


def main():
    for trial in range(args.trials):
        c = Cluster(3, heartbeat_ms=None, election_ms=None, leak_checks=False)
        try:
            c.start()
            leader = c.node(c.wait_leader())
            c.wait(lambda: leader.status()["holder"], what="the leader holds")
            pid = leader.keeper.pid
            before, t0 = switches(pid), time.monotonic()
            time.sleep(args.seconds)
            rate = (switches(pid) - before) / (time.monotonic() - t0)
            mem = memory_kib(pid)
            print("trial %d: leader's keeper: %.2f wake-ups/s while holding; RSS %d KiB, PSS %d KiB"
                  % (trial + 1, rate, mem["Rss"], mem["Pss"]), flush=True)
            stopped = time.monotonic()
            leader.proc.send_signal(signal.SIGSTOP)

            def fenced():
                with open(leader.keeper_log_path) as f:
                    lines = [x.strip() for x in f if x.startswith(("fence (lease", "killed"))]
                return lines if any(x.startswith("killed") for x in lines) else None

            for line in c.wait(fenced, timeout=10, what="the keeper's fence and kill"):
                print("  " + line)
            print("  stopped to killed: %.0f ms (lease and grace, counted from the last extension)"
                  % ((time.monotonic() - stopped) * 1000), flush=True)
        finally:
            c.teardown()


main()
