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
node crash: when its process was seen stopped); the new copy begins at the
new holder's first "Reached target sparrow-leader.target" or entry of the
unit, whichever comes first.

With the vip plugin built, the members hold the service address
10.77.0.100 too, and the old holder's copy of it must be gone before the
new holder adds its own: both read from the kernel's address events
(rtnetlink) in each node's network namespace, stamped as they arrive, and
as the observer sees it (bench/arp-watch, $SPARROW_ARP_WATCH, asking every
10 ms): the old holder's MAC answers last before the new one's first.

SPARROW_FENCE_TRIALS=N runs N trials per fault (default 3),
SPARROW_FENCE_SEED=S replays the phases of a run (printed at its start)."""

import contextlib
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
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
MAIN_EXITED = "98e322203f7a4ed290d09fe03c09fe15"
# The service address, when the vip plugin is built.
VIP = "10.77.0.100"
# Run in a node's network namespace: a line per address the kernel adds
# or removes, "usec add|del ADDRESS", stamped on CLOCK_MONOTONIC as soon
# as it arrives.
ADDRESS_MONITOR = r"""
import socket, struct, time
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
s.bind((0, 0x10 | 0x100))  # RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR
print("ready", flush=True)
while True:
    data = s.recv(1 << 16)
    t = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    off = 0
    while off + 16 <= len(data):
        length, kind = struct.unpack_from("=IH", data, off)
        if kind in (20, 21):  # RTM_NEWADDR, RTM_DELADDR
            family, a = data[off + 16], off + 24  # after struct ifaddrmsg
            while a + 4 <= off + length:
                alen, atype = struct.unpack_from("=HH", data, a)
                if atype == 1:  # IFA_ADDRESS
                    print(t, "add" if kind == 20 else "del",
                          socket.inet_ntop(family, data[a + 4:a + alen]), flush=True)
                a += (alen + 3) & ~3
        off += (length + 3) & ~3
"""


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


def halted(pid):
    """Whether pid runs no more: stopped or dead."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("T", "Z", "X")
    except OSError:
        return True


class AddressWatch:
    """The addresses the kernel adds and removes in node's network
    namespace, as they come (the namespace outlives the node's boots)."""

    def __init__(self, node):
        self.events = []
        self.proc = subprocess.Popen(["ip", "netns", "exec", node.netns, sys.executable, "-u",
                                      "-c", ADDRESS_MONITOR], stdout=subprocess.PIPE, text=True)
        if self.proc.stdout.readline().strip() != "ready":
            raise lab.LabError("%s: the address monitor did not start" % node.name)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            usec, kind, address = line.split()
            self.events.append((int(usec), kind, address))

    def first(self, kind, address, since):
        """When address was first added ("add") or removed ("del") at or
        after since (µs), or None."""
        return next((t for t, k, a in list(self.events) if k == kind and a == address
                     and t >= since), None)

    def close(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.reader.join(timeout=10)
        self.proc.stdout.close()


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
    # fault: [margins in ms], of the unit and of the address
    results = {"unit": {}, "address": {}, "observed address": {}}
    cleanups = []  # ms from sparrowd's end to its address gone

    @classmethod
    def setUpClass(cls):
        print("fence: %d trial(s) per fault, SPARROW_FENCE_SEED=%d" % (TRIALS, SEED), flush=True)
        cls.rng = random.Random(SEED)
        super().setUpClass()
        cls.vip = "sparrow-plugin-vip" in cls.debs
        if cls.vip:
            cls.extra_config = "[vip]\naddresses = %s/24@eth0\n" % VIP
        else:
            print("fence: the vip plugin is not built: the leader-only unit only, no address")
        cls.observe = cls.vip and bool(os.environ.get("SPARROW_ARP_WATCH"))
        if cls.vip and not cls.observe:
            print("fence: no observer (SPARROW_ARP_WATCH unset: meson sets it)")

    @classmethod
    def tearDownClass(cls):
        super().tearDownClass()
        for what, faults in cls.results.items():
            if faults:
                print("\nmargin of the %s (new copy starts - old copy ended), ms:" % what)
            for fault, margins in faults.items():
                print("  %-16s n=%-2d min %6.0f  median %6.0f  max %6.0f" % (
                    fault, len(margins), min(margins), statistics.median(margins),
                    max(margins)))
        if cls.cleanups:
            print("\nclean-up (sparrowd ended to its address gone), ms: n=%d min %.0f  median "
                  "%.0f  max %.0f" % (len(cls.cleanups), min(cls.cleanups),
                                      statistics.median(cls.cleanups), max(cls.cleanups)))

    def setUp(self):
        super().setUp()
        for n in self.lab.members:
            self.check_shared_clock(n)
        self.watches = {}
        for n in self.lab.members if self.vip else ():
            self.watches[n] = AddressWatch(n)
            self.addCleanup(self.watches[n].close)

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
        out = node.sh("systemctl is-active sparrow.service %s %s; ip -o addr show dev eth0 | "
                      "grep -c ' %s/'; sparrowctl --json status" % (TARGET, EXAMPLE, VIP),
                      check=False).stdout
        lines = out.split("\n", 4) + [""] * 4
        try:
            status = json.loads(lines[4])
        except ValueError:
            status = {}
        return {"daemon": lines[0], "target": lines[1], "unit": lines[2],
                "vip": lines[3] != "0", "role": status.get("role"),
                "leader": status.get("leader"), "holder": status.get("holder")}

    def settle(self, timeout=30):
        """Until every member runs sparrowd and follows one leader, which
        alone runs the leader-only unit (and has the address); returns it."""
        deadline = time.monotonic() + timeout
        while True:
            states = {n: self.state(n) for n in self.lab.members}
            leaders = [n for n, s in states.items() if s["role"] == "leader"]
            if len(leaders) == 1:
                leader = leaders[0]
                if all(s["daemon"] == "active" and s["leader"] == leader.name
                       and (s["unit"] == "active") == (n is leader)
                       and (s["target"] == "active") == (n is leader)
                       and s["vip"] == (self.vip and n is leader)
                       for n, s in states.items()) and states[leader]["holder"]:
                    return leader
            if time.monotonic() > deadline:
                self.fail("the cluster did not settle: %s"
                          % {n.name: s for n, s in states.items()})
            time.sleep(0.1)

    def wait_new_holder(self, old, timeout=15):
        """Until another member runs the unit; returns it."""
        rest = [n for n in self.lab.members if n is not old]
        deadline = time.monotonic() + timeout
        while True:
            running = [n for n in rest if self.active(n, EXAMPLE)]
            if running:
                return running[0]
            if time.monotonic() > deadline:
                self.fail("no new holder of %s after %s's fault" % (EXAMPLE, old.name))
            time.sleep(0.05)

    def handover(self, old):
        """Until another member runs the unit and old's copy ended (which,
        were the fence broken, could be later); returns the new holder."""
        new = self.wait_new_holder(old)
        self.wait_inactive(old, timeout=10)
        return new

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

    def address_margin(self, old, new, t0, end):
        """new adding the address less old removing it (ms); end: when old
        crashed, else None."""
        gone = end or self.watches[old].first("del", VIP, t0)
        added = self.watches[new].first("add", VIP, t0)
        self.assertIsNotNone(gone, "%s: %s not removed after the fault" % (old.name, VIP))
        self.assertIsNotNone(added, "%s: %s not added after the fault" % (new.name, VIP))
        self.assertIsNone(self.watches[old].first("add", VIP, t0),
                          "%s added %s again" % (old.name, VIP))
        print("  address: old %s removed it at +%5.0f ms, new %s added it at +%5.0f ms: "
              "margin %+6.0f ms" % (old.name, (gone - t0) / 1000, new.name, (added - t0) / 1000,
                                    (added - gone) / 1000), flush=True)
        # What the fence assumes of the clean-up ([cluster] cleanup-ms):
        # from sparrowd's end to its address gone.
        exited = [int(e["__MONOTONIC_TIMESTAMP"]) for e in journal(old, t0, "_PID=1",
                                                                  "UNIT=sparrow.service")
                  if e.get("MESSAGE_ID") == MAIN_EXITED]
        if exited and not end and gone >= exited[0]:
            print("  clean-up: the address left %.0f ms after sparrowd ended" %
                  ((gone - exited[0]) / 1000))
            self.cleanups.append((gone - exited[0]) / 1000)
        return (added - gone) / 1000

    def observed_margin(self, watch, old, new, t0):
        """The observer's view (bench/arp-watch asking every 10 ms): the
        new holder's first answer for the address less the old holder's
        last one after the fault (ms; from the fault if it gave none)."""
        samples = [x for x in list(watch.samples) if x.address == VIP and x.t * 1e6 >= t0]
        last_old = max((x.t * 1e6 for x in samples if x.mac == old.mac), default=t0)
        first_new = min((x.t * 1e6 for x in samples if x.mac == new.mac), default=None)
        self.assertIsNotNone(first_new, "the observer never saw %s answer" % new.name)
        print("  observer: %s answered last at +%5.0f ms, %s first at +%5.0f ms: margin %+6.0f ms"
              % (old.name, (last_old - t0) / 1000, new.name, (first_new - t0) / 1000,
                 (first_new - last_old) / 1000), flush=True)
        return (first_new - last_old) / 1000

    def trials(self, fault, inflict):
        """Runs the trials of fault: inflict(old, t0) faults the holder old,
        waits for the new holder, undoes what needs undoing, and returns
        when old's copy ended (µs; None: the journal says) and the new
        holder."""
        overlaps = []
        for i in range(TRIALS):
            old = self.settle()
            # Closed whatever happens: a failed trial must not leave
            # arp-watch running, the observer's namespace with it.
            with self.lab.watch([VIP]) if self.observe else contextlib.nullcontext() as watch:
                phase = self.rng.uniform(0, 1)
                time.sleep(phase)
                t0 = now_us()
                crashed, new = inflict(old, t0)
                end = crashed or self.old_end(old, t0)
                begin = self.new_begin(new, t0)
                self.assertIs(self.settle(), new)
            self.no_restart_on(old, t0)
            margins = {"unit": (begin - end) / 1000}
            print("%s %d/%d: phase %4.0f ms; old %s stopped at +%5.0f ms, new %s started at "
                  "+%5.0f ms: margin %+6.0f ms" % (fault, i + 1, TRIALS, phase * 1000, old.name,
                                                  (end - t0) / 1000, new.name,
                                                  (begin - t0) / 1000, margins["unit"]),
                  flush=True)
            if self.vip:
                margins["address"] = self.address_margin(old, new, t0, crashed)
            if watch:
                margins["observed address"] = self.observed_margin(watch, old, new, t0)
            for what, margin in margins.items():
                self.results[what].setdefault(fault, []).append(margin)
                if margin <= 0:
                    overlaps.append("%s in trial %d" % (what, i + 1))
        self.assertEqual(overlaps, [], "%s: the old and the new copy overlapped" % fault)

    # -- the faults ---------------------------------------------------------

    def test_1_node_crash(self):
        def crash(old, t0):
            copy = host_pid(old, "sleep", ["/bin/sleep", "infinity"])
            self.assertIsNotNone(copy, "%s: the unit's process is not found" % old.name)
            # A crashed host stops at once.  Tearing the container down
            # after SIGKILL to its PID 1 (Node.kill, which cuts its link
            # first) took up to 2.4 s on a loaded machine, its processes
            # running meanwhile: they are all stopped first, the crash's
            # instant.
            old.cut()
            old.pause()
            deadline = time.monotonic() + 10
            while not halted(copy):
                self.assertLess(time.monotonic(), deadline, "the crash left the unit running")
                time.sleep(0.001)
            end = now_us()
            old.kill()
            new = self.wait_new_holder(old)
            old.reboot()  # a new boot, the same disk
            return end, new

        self.trials("node-crash", crash)

    def test_2_daemon_kill9(self):
        def kill9(old, t0):
            os.kill(host_pid(old, "sparrowd"), signal.SIGKILL)
            return None, self.handover(old)

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

    def keeper_fenced(self, old, t0):
        """old's fence keeper (sparrow-fence.service) fenced the stopped
        holder, removing its address (with the vip plugin): at its lease end
        (then it killed it too), or when systemd's watchdog, which may fire
        first, killed it; prints which and the keeper's reaction."""
        lines = [e.get("MESSAGE", "") for e in journal(old, t0, "-u sparrow-fence.service")]
        fenced = [m for m in lines if m.startswith(("fence (lease ended)",
                                                    "fence (sparrowd gone while holding)"))]
        self.assertTrue(fenced, "%s: the keeper did not fence: %s" % (old.name, lines))
        print("  keeper: " + fenced[0], flush=True)
        if self.vip:
            self.assertIn("fence: removed %s/24@eth0" % VIP, lines)
        if fenced[0].startswith("fence (lease ended)"):
            # The watchdog, the backstop, may fire within the keeper's grace.
            self.assertTrue([m for m in lines if m.startswith("killed sparrowd")]
                            or [e for e in journal(old, t0, "-u sparrow.service")
                                if "Watchdog timeout" in e.get("MESSAGE", "")],
                            "%s: neither the keeper nor the watchdog killed the stopped "
                            "sparrowd: %s" % (old.name, lines))
        else:
            self.assertTrue([e for e in journal(old, t0, "-u sparrow.service")
                             if "Watchdog timeout" in e.get("MESSAGE", "")],
                            "%s: sparrowd went neither by its keeper nor by the watchdog"
                            % old.name)

    def test_3_daemon_sigstop(self):
        def sigstop(old, t0):
            daemon = host_pid(old, "sparrowd")
            os.kill(daemon, signal.SIGSTOP)
            new = self.handover(old)
            self.cont(daemon)
            self.keeper_fenced(old, t0)
            return None, new

        self.trials("sparrowd-sigstop", sigstop)

    def test_4_partition(self):
        def partition(old, t0):
            self.cut_off(old)
            new = self.handover(old)
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
            new = self.handover(old)
            self.cut_off(old, "del")
            self.cont(daemon)
            return None, new

        self.trials("partition+stop", partition_then_sigstop)

if __name__ == "__main__":
    lab.test_main()
