"""Issue 22, section 0: a leader starved of CPU must not run the
leader-only unit beside the new leader.  Its sparrowd goes into a host cpu
cgroup with a quota of 1 % of a 1 s period that busy loops use up (lab.py,
Node.starve), at a random phase after the cluster settled; no [vip]: the
example leader-only unit only.  Both nodes' copies are read from their
journals as test_fence.py does: the old copy's "Stopped" before the new
holder's first start, in every trial.

The first hole: an old leader that stopped leading went back to the loose
5 s watchdog before it had released (its target's stop confirmed): starved,
it escaped the tight watchdog while it still held.  The second: a SIGKILLed
process in a throttled cgroup exits only when its cgroup runs again; the
fence keeper (outside the cgroup) covers it.  Each trial says how the old
copy ended (watchdog, pid kept or not) and when.

SPARROW_STARVE_TRIALS=N trials (default 6), SPARROW_FENCE_SEED=S replays;
SPARROW_STARVE_PERCENT (1) and SPARROW_STARVE_LOOPS (busy loops, 2) set
the starvation;
SPARROW_STARVE_CLUSTER="key = value" adds to [cluster] (e.g. keeper-ms =
1000: a fence as long as the watchdog's reaction, for a build without the
fence keeper)."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import lab  # noqa: E402
import test_fence  # noqa: E402
from test_fence import journal, now_us  # noqa: E402

TRIALS = int(os.environ.get("SPARROW_STARVE_TRIALS", "6"))
PERCENT = float(os.environ.get("SPARROW_STARVE_PERCENT", "1"))
# Busy loops in the group: the more, the less of each period sparrowd gets.
LOOPS = int(os.environ.get("SPARROW_STARVE_LOOPS", "2"))
# test_2: the cut this long (s) before a period of the starving group
# begins: the old leader steps down in that period (check-quorum: 600 ms
# without a quorum); starved this long after the cut, before its lease
# (530 ms from the last answer, which came up to a heartbeat before the
# cut) ran out while it still ran.
CUT_BEFORE = float(os.environ.get("SPARROW_STARVE_CUT_BEFORE", "0.65"))
STARVE_AFTER = (0.18, 0.25)


class Starved(test_fence.Fence):
    # test_fence.py runs its own faults.
    test_1_node_crash = test_2_daemon_kill9 = test_3_daemon_sigstop = None
    test_4_partition = test_5_partition_then_sigstop = None

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.vip = cls.observe = False
        cluster = os.environ.get("SPARROW_STARVE_CLUSTER")
        cls.extra_config = "[cluster]\n%s\n" % cluster if cluster else ""
        print("starve: %d trial(s) at %g %% with %d busy loop(s); [cluster] %s"
              % (TRIALS, PERCENT, LOOPS, cluster or "defaults"), flush=True)

    def starved(self, old, pid, t0):
        """Waits for the new holder and the end of old's copy with old's
        sparrowd (pid) starved; says how old's copy ended."""
        try:
            new = self.wait_new_holder(old, timeout=30)
            self.wait_inactive(old, timeout=60)
        finally:
            old.unstarve()
        entries = journal(old, t0, "-u sparrow.service")
        watchdog = [int(e["__MONOTONIC_TIMESTAMP"]) for e in entries
                    if "Watchdog timeout" in e.get("MESSAGE", "")]
        print("  old %s: sparrowd %s, %s" % (
            old.name, "restarted" if old.service_pid() != pid else "kept its pid",
            "watchdog timeout at +%.0f ms" % ((watchdog[0] - t0) / 1000) if watchdog
            else "no watchdog timeout"), flush=True)
        return new

    def test_1_cpu_starved_leader(self):
        """The campaign of the issue: starved at a random phase."""
        def starve(old, t0):
            return None, self.starved(old, old.starve(PERCENT, LOOPS), t0)

        test_fence.TRIALS = TRIALS
        self.trials("cpu-starved-%g%%" % PERCENT, starve)

    def cut(self, old, verb="add"):
        for n in self.lab.members:
            if n is not old:
                lab.run("ip", "netns", "exec", old.netns, "ip", "route", verb, "blackhole",
                        n.ip + "/32")
                lab.run("ip", "netns", "exec", n.netns, "ip", "route", verb, "blackhole",
                        old.ip + "/32")

    def test_2_partitioned_then_starved(self):
        """The first hole, aimed at: cut off, the leader is starved before
        its lease runs out, and a period of its cgroup begins after its
        lease and leadership are gone, perhaps before the tight watchdog
        fired.  It then releases in the slices of CPU it gets each period
        (1 s): an old leader back on the loose watchdog is not killed and
        stops the target late."""
        def partition_then_starve(old, t0):
            pid = old.service_pid()
            old.starve_loops(PERCENT, LOOPS)
            begin = old.starve_period() + 1
            while begin - time.monotonic() < 0.9:
                begin += 1
            time.sleep(begin - CUT_BEFORE - time.monotonic())
            self.cut(old)
            cut = now_us()
            time.sleep(max(0, cut / 1e6 + self.rng.uniform(*STARVE_AFTER) - time.monotonic()))
            old.starve(PERCENT, LOOPS, pid=pid)
            print("  cut off at +%.0f ms, starved at +%.0f ms, its period begins at +%.0f ms"
                  % ((cut - t0) / 1000, (now_us() - t0) / 1000, (begin * 1e6 - t0) / 1000),
                  flush=True)
            try:
                return None, self.starved(old, pid, t0)
            finally:
                self.cut(old, "del")

        test_fence.TRIALS = TRIALS
        self.trials("cut+starved-%g%%" % PERCENT, partition_then_starve)


if __name__ == "__main__":
    lab.test_main()
