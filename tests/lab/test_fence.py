"""The fence in the lab: never two holders.  For each fault of the leader
(its node crashes, sparrowd is killed with -9, sparrowd alone is stopped
with SIGSTOP, the leader is cut off from the other members while the
observer still reaches it, and cut off then stopped before its lease
ends), at a random phase after the cluster settled, the old holder's
leader-only unit is inactive before the new holder starts its copy, with
default timings.  Opt-in: SPARROW_LAB=1.

Times are on CLOCK_MONOTONIC, which every node shares: systemd-nspawn
gives the nodes no time namespace, and journald stamps
__MONOTONIC_TIMESTAMP from CLOCK_MONOTONIC, so one node's journal and
another's, and this process's time.monotonic(), are one clock (setUp checks
it: a message logged in each node is stamped between two readings taken
here).  The old copy ends at systemd's "Stopped" entry for the unit (a
node crash: when its process was seen dead); the new copy begins at the
new holder's first "Reached target sparrow-leader.target" or entry of the
unit, whichever comes first.

SPARROW_FENCE_TRIALS=N runs N trials per fault (default 3),
SPARROW_FENCE_SEED=S replays the phases of a run (printed at its start)."""

import json
import os
import random
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import lab  # noqa: E402
from sparrowlab import EXAMPLE, TARGET, SparrowLabCase  # noqa: E402

TRIALS = int(os.environ.get("SPARROW_FENCE_TRIALS", "3"))
SEED = int(os.environ.get("SPARROW_FENCE_SEED", str(random.randrange(1 << 32))))
# systemd's catalogue (sd-messages.h): a job of a unit ended, and how.
UNIT_STARTING = "7d4958e842da4a758f6c1cdc7b36dcc5"
UNIT_STARTED = "39f53479d3a045ac8e11786248231fbf"
UNIT_STOPPED = "9d1aaa27d60140bd96365438aad20286"


def now_us():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def host_pid(node, comm, argv=None):
    """The host pid of node's process named comm (with that command line)."""
    for p in node.processes():
        try:
            with open("/proc/%d/comm" % p) as f:
                if f.read().strip() != comm:
                    continue
            with open("/proc/%d/cmdline" % p) as f:
                if argv is None or f.read().split("\0")[:-1] == argv:
                    return p
        except OSError:
            pass
    return None


def dead(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def journal(node, since, *matches):
    """node's journal entries that match (journalctl's syntax), stamped at
    or after since (µs), oldest first."""
    out = node.sh("journalctl --no-pager -o json " + " ".join(matches)).stdout
    entries = [json.loads(line) for line in out.splitlines()]
    return [e for e in entries if int(e["__MONOTONIC_TIMESTAMP"]) >= since]


def pid1_entries(node, since):
    """systemd's entries about the leader target and the leader-only unit."""
    return [e for e in journal(node, since, "_PID=1") if e.get("UNIT") in (TARGET, EXAMPLE)]


class Fence(SparrowLabCase):
    results = {}

    @classmethod
    def setUpClass(cls):
        print("fence: %d trial(s) per fault, SPARROW_FENCE_SEED=%d" % (TRIALS, SEED), flush=True)
        cls.rng = random.Random(SEED)
        super().setUpClass()

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        print("\nmargin (new copy starts - old copy ended), ms:")
        for fault, margins in cls.results.items():
            print("  %-16s n=%-2d min %6.0f  median %6.0f  max %6.0f" % (
                fault, len(margins), min(margins), statistics.median(margins), max(margins)))

    def setUp(self):
        super().setUp()
        for n in self.lab.members:
            self.check_shared_clock(n)

    def check_shared_clock(self, node):
        """The premise of every figure here: node's journal stamps on this
        process's CLOCK_MONOTONIC."""
        self.assertEqual(os.readlink("/proc/%d/ns/time" % node.pid1),
                         os.readlink("/proc/self/ns/time"))
        before = now_us()
        token = "clock-%d" % before
        node.sh("logger -t sparrow-fence %s" % token)
        deadline = time.monotonic() + 10
        while True:
            stamps = [int(e["__MONOTONIC_TIMESTAMP"]) for e in journal(node, 0, "-t sparrow-fence")
                      if e.get("MESSAGE") == token]
            after = now_us()
            if stamps:
                break
            self.assertLess(time.monotonic(), deadline, "%s: %s not in the journal"
                            % (node.name, token))
            time.sleep(0.05)
        self.assertTrue(before <= stamps[0] <= after,
                        "%s: journal stamp %d not within [%d, %d]: not one monotonic clock"
                        % (node.name, stamps[0], before, after))

    # -- the cluster's state ----------------------------------------------

    def state(self, node):
        out = node.sh("systemctl is-active sparrow.service %s %s; sparrowctl --json status"
                      % (TARGET, EXAMPLE), check=False).stdout
        lines = out.split("\n", 3)
        try:
            status = json.loads(lines[3])
        except (IndexError, ValueError):
            status = {}
        return {"daemon": lines[0], "target": lines[1] if len(lines) > 1 else "",
                "unit": lines[2] if len(lines) > 2 else "", "role": status.get("role"),
                "leader": status.get("leader"), "holder": status.get("holder")}

    def settle(self, timeout=30):
        """Until every member runs sparrowd and follows one leader, which
        alone runs the leader-only unit; returns it."""
        deadline = time.monotonic() + timeout
        while True:
            states = {n: self.state(n) for n in self.lab.members}
            leaders = [n for n, s in states.items() if s["role"] == "leader"]
            if len(leaders) == 1:
                leader = leaders[0]
                if all(s["daemon"] == "active" and s["leader"] == leader.name
                       and (s["unit"] == "active") == (n is leader)
                       and (s["target"] == "active") == (n is leader)
                       for n, s in states.items()) and states[leader]["holder"]:
                    return leader
            if time.monotonic() > deadline:
                self.fail("the cluster did not settle: %s"
                          % {n.name: s for n, s in states.items()})
            time.sleep(0.1)

    def wait_new_holder(self, old, timeout=15):
        rest = [n for n in self.lab.members if n is not old]
        deadline = time.monotonic() + timeout
        while True:
            running = [n for n in rest if self.active(n, EXAMPLE)]
            if running:
                return running[0]
            if time.monotonic() > deadline:
                self.fail("no new holder of %s after %s's fault" % (EXAMPLE, old.name))
            time.sleep(0.05)

    # -- the measure --------------------------------------------------------

    def old_end(self, old, since):
        """When old's copy of the unit stopped (µs)."""
        stops = [int(e["__MONOTONIC_TIMESTAMP"]) for e in pid1_entries(old, since)
                 if e.get("UNIT") == EXAMPLE and e.get("MESSAGE_ID") == UNIT_STOPPED]
        self.assertTrue(stops, "%s: no Stopped %s after the fault" % (old.name, EXAMPLE))
        return stops[0]

    def new_begin(self, new, since):
        """The earliest sign of new's copy (µs): the target reached or the
        unit starting, whichever is first."""
        starts = [int(e["__MONOTONIC_TIMESTAMP"]) for e in pid1_entries(new, since)
                  if e.get("MESSAGE_ID") in (UNIT_STARTING, UNIT_STARTED)]
        self.assertTrue(starts, "%s: no start of %s after the fault" % (new.name, EXAMPLE))
        return starts[0]

    def no_restart_on(self, old, since):
        """old started nothing of leadership again since the fault."""
        again = [e["MESSAGE"] for e in pid1_entries(old, since)
                 if e.get("MESSAGE_ID") in (UNIT_STARTING, UNIT_STARTED)]
        self.assertEqual(again, [], "%s started leader-only units again" % old.name)

    def trials(self, fault, inflict):
        """Runs the trials of fault: inflict(old, t0) faults the holder old,
        waits for the new holder, undoes what needs undoing, and returns
        when old's copy ended (µs), or None for the journal's word."""
        margins, overlaps = [], []
        for i in range(TRIALS):
            old = self.settle()
            phase = self.rng.uniform(0, 1)
            time.sleep(phase)
            t0 = now_us()
            end, new = inflict(old, t0)
            if end is None:
                end = self.old_end(old, t0)
            begin = self.new_begin(new, t0)
            self.assertIs(self.settle(), new)
            self.no_restart_on(old, t0)
            margin = (begin - end) / 1000
            print("%s %d/%d: phase %4.0f ms; old %s stopped at +%5.0f ms, new %s started at "
                  "+%5.0f ms: margin %+6.0f ms" % (fault, i + 1, TRIALS, phase * 1000, old.name,
                                                  (end - t0) / 1000, new.name,
                                                  (begin - t0) / 1000, margin), flush=True)
            margins.append(margin)
            if margin <= 0:
                overlaps.append(i + 1)
        type(self).results[fault] = margins
        self.assertEqual(overlaps, [], "%s: the old and the new copy overlapped in trial(s) %s"
                         % (fault, overlaps))

    # -- the faults ---------------------------------------------------------

    def test_1_node_crash(self):
        def crash(old, t0):
            copy = host_pid(old, "sleep", ["/bin/sleep", "infinity"])
            self.assertIsNotNone(copy, "%s: the unit's process is not found" % old.name)
            os.kill(old.pid1, signal.SIGKILL)
            while not dead(copy):
                time.sleep(0.001)
            end = now_us()
            old.proc.wait(timeout=30)
            new = self.wait_new_holder(old)
            # The same node boots again: a new boot, the same disk.
            old.boot()
            deadline = time.monotonic() + 60
            old.find_pid1(deadline)
            old.wait_booted(deadline)
            return end, new

        self.trials("node-crash", crash)

    def test_2_daemon_kill9(self):
        def kill9(old, t0):
            os.kill(host_pid(old, "sparrowd"), signal.SIGKILL)
            return None, self.wait_new_holder(old)

        self.trials("sparrowd-kill9", kill9)

    def cut_off(self, old, verb="add"):
        """Partitions old from the other members ("del": heals): blackhole
        routes both ways, which leave the observer's path alone."""
        for n in self.lab.members:
            if n is not old:
                lab.run("ip", "netns", "exec", old.netns, "ip", "route", verb, "blackhole",
                        n.ip + "/32")
                lab.run("ip", "netns", "exec", n.netns, "ip", "route", verb, "blackhole",
                        old.ip + "/32")
        if verb == "add":
            self.assertEqual(self.lab.observer.sh("ping -c 1 -W 2 " + old.ip,
                                                  check=False).returncode, 0)

    @staticmethod
    def cont(pid):
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass  # the watchdog killed it

    def test_3_daemon_sigstop(self):
        def sigstop(old, t0):
            daemon = host_pid(old, "sparrowd")
            os.kill(daemon, signal.SIGSTOP)
            new = self.wait_new_holder(old)
            self.cont(daemon)
            self.assertTrue([e for e in journal(old, t0, "-u sparrow.service")
                             if "Watchdog timeout" in e.get("MESSAGE", "")],
                            "%s: sparrowd was not killed by the watchdog" % old.name)
            return None, new

        self.trials("sparrowd-sigstop", sigstop)

    def test_4_partition(self):
        def partition(old, t0):
            self.cut_off(old)
            new = self.wait_new_holder(old)
            self.cut_off(old, "del")
            return None, new

        self.trials("partition", partition)

    def test_5_partition_then_sigstop(self):
        """The worst case the fence is computed for: cut off, the leader
        goes on feeding the watchdog until its lease is nearly over, then
        stalls (at a random time within the lease)."""
        def partition_then_sigstop(old, t0):
            daemon = host_pid(old, "sparrowd")
            self.cut_off(old)
            time.sleep(max(0, t0 / 1e6 + self.rng.uniform(0, 0.55) - time.monotonic()))
            os.kill(daemon, signal.SIGSTOP)
            print("  sparrowd stopped %.0f ms after the cut" % ((now_us() - t0) / 1000))
            new = self.wait_new_holder(old)
            self.cut_off(old, "del")
            self.cont(daemon)
            return None, new

        self.trials("partition+stop", partition_then_sigstop)

if __name__ == "__main__":
    lab.test_main()
