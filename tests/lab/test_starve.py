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
SPARROW_STARVE_CLUSTER="key = value" adds to [cluster] (e.g. keeper-ms =
1000: a fence as long as the watchdog's reaction, for a build without the
fence keeper)."""

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
import lab  # noqa: E402
import test_fence  # noqa: E402
from test_fence import journal, now_us  # noqa: E402

TRIALS = int(os.environ.get("SPARROW_STARVE_TRIALS", "6"))
PERCENT = 1


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
        print("starve: %d trial(s) at %d %%; [cluster] %s" % (TRIALS, PERCENT, cluster or
                                                             "defaults"), flush=True)

    def test_cpu_starved_leader(self):
        def starve(old, t0):
            pid = old.starve(PERCENT)
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
            return None, new

        test_fence.TRIALS = TRIALS
        self.trials("cpu-starved-%d%%" % PERCENT, starve)


if __name__ == "__main__":
    lab.test_main()
