#!/usr/bin/env python3
"""What unauthenticated connections cost a sparrowd (printed, never
asserted).  A real 3-node cluster on 127.0.0.1 (the daemon's default
timings), in plaintext and with TLS; one follower is flooded with COUNT
connections of one kind at a time, on 127.0.0.1 only:

  silent     connect and send nothing;
  slow       send one byte a second (of a hello frame, or of a TLS record);
  oversized  announce 16 MiB and send it: plaintext, after a hello with an
             id no member has; TLS, as a 64 KiB record.  BYTE_CAP in all.

For each kind: the follower's RSS and PSS (/proc/PID/smaps_rollup) before,
at the peak during and 3 s after the flood, and how much its log grew;
then the time the follower,
killed while the leader took a second of writes, needs to catch up once
restarted (process start -> its CommitIndex reaches the leader's) during
the same flood, next to the undisturbed time (median of 3).  A connection
the node closes is opened again after 1 s, so the pressure holds; the
flood stops by itself after SECONDS.

Last, out of file descriptors: the follower's soft RLIMIT_NOFILE is
lowered to what it uses plus 16 and the silent flood repeated: its CPU use
during the flood (a failing accept must not spin) and whether it lives.

Usage: flood-bench.py [--count N] [--seconds S] [--byte-cap MIB] [--only plaintext|tls] [BUILD_DIR]
"""

import argparse
import os
import resource
import selectors
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
sys.path.insert(0, os.path.join(here, "..", "tests", "integration"))

from importlib import import_module  # noqa: E402

cluster_bench = import_module("cluster-bench")

MIB = 1024 * 1024
ZEROS = bytes(64 * 1024)


def memory(pid):
    """(RSS, PSS) in KiB."""
    with open("/proc/%d/status" % pid) as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    with open("/proc/%d/smaps_rollup" % pid) as f:
        pss = next(int(line.split()[1]) for line in f if line.startswith("Pss:"))
    return rss, pss


def hello(node_id, name):
    """The transport's hello, (qts) in GVariant normal form."""
    return struct.pack("<H6xQ", 2, node_id) + name.encode() + b"\0"


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


class Flood:
    """count connections of one kind to port, for seconds, on a thread."""

    def __init__(self, port, kind, tls, count, seconds, byte_cap):
        self.port = port
        self.kind = kind
        self.count = count
        self.seconds = seconds
        self.bytes_left = byte_cap
        self.opened = 0
        self.closed_by_node = 0
        self.bytes_sent = 0
        if kind == "slow":
            self.prefix = b"\x16\x03\x01\x02\x00" if tls else struct.pack(">I", 1000)
        elif kind == "oversized" and tls:
            self.prefix = b"\x16\x03\x01\xff\xff"
        elif kind == "oversized":
            self.prefix = None  # per connection: see prefix_of
        else:
            self.prefix = b""
        self.thread = threading.Thread(target=self.run, daemon=True)

    def start(self):
        self.thread.start()

    def join(self):
        self.thread.join()

    def prefix_of(self, state):
        if self.prefix is not None:
            return self.prefix
        # a hello with an id no member has (one each), then an Append of 16 MiB
        return frame(hello(0x5ee00000 + state["n"], "stranger%d" % state["n"])) + struct.pack(
            ">I", 16 * MIB) + struct.pack("<QQ", 2, 4)

    def open(self, sel, now):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", self.port))
        self.opened += 1
        state = {"sock": s, "sent": 0, "connected": False, "n": self.opened}
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, state)

    def close(self, sel, state, now, reopen):
        sel.unregister(state["sock"])
        state["sock"].close()
        if state["connected"]:
            self.closed_by_node += 1
        # refused: the node is not listening (yet)
        reopen.append(now + (1.0 if state["connected"] else 0.2))

    def writable(self, sel, state, now, reopen):
        s = state["sock"]
        if not state["connected"]:
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self.close(sel, state, now, reopen)
                return
            state["connected"] = True
        want = b""
        if self.kind == "oversized":
            prefix = self.prefix_of(state)
            want = prefix[state["sent"]:] if state["sent"] < len(prefix) else ZEROS
            want = want[:max(0, self.bytes_left)]
        elif self.kind == "slow" and state["sent"] == 0:
            want = self.prefix[:1]
        if want:
            try:
                n = s.send(want)
            except OSError:
                self.close(sel, state, now, reopen)
                return
            state["sent"] += n
            self.bytes_sent += n
            if self.kind == "oversized":
                self.bytes_left -= n
        if self.kind != "oversized" or self.bytes_left <= 0:
            sel.modify(s, selectors.EVENT_READ, state)

    def run(self):
        sel = selectors.DefaultSelector()
        start = time.monotonic()
        end = start + self.seconds
        reopen = []
        for _ in range(self.count):
            self.open(sel, start)
        last_tick = start
        while True:
            now = time.monotonic()
            if now >= end:
                break
            for key, events in sel.select(timeout=0.1):
                state = key.data
                if events & selectors.EVENT_READ:
                    try:
                        data = state["sock"].recv(4096)
                    except OSError:
                        data = b""
                    if not data:
                        self.close(sel, state, now, reopen)
                        continue
                if events & selectors.EVENT_WRITE:
                    self.writable(sel, state, now, reopen)
            now = time.monotonic()
            due = [t for t in reopen if t <= now]
            reopen = [t for t in reopen if t > now]
            for _ in due:
                self.open(sel, now)
            if self.kind == "slow" and now - last_tick >= 1.0:
                last_tick = now
                for key in list(sel.get_map().values()):
                    state = key.data
                    if not state["connected"]:
                        continue
                    payload = self.prefix + bytes(2000)
                    byte = payload[state["sent"] % len(payload):][:1]
                    try:
                        state["sock"].send(byte)
                        state["sent"] += 1
                        self.bytes_sent += 1
                    except OSError:
                        self.close(sel, state, now, reopen)
        for key in list(sel.get_map().values()):
            key.data["sock"].close()
        sel.close()


def write_for(args, leader, seconds=1.0):
    subprocess.run([os.path.join(args.build, "bench", "write-bench"), "--clients", "4",
                    "--seconds", str(seconds)], env=leader.env, check=True, capture_output=True)


def catch_up(args, c, leader, follower, flood=None):
    """Seconds from the follower's start to its CommitIndex reaching the
    leader's, the follower having missed a second of writes."""
    follower.kill(signal.SIGKILL)
    write_for(args, leader)
    target = cluster_bench.manager_property(leader, "CommitIndex")
    if flood:
        flood.start()
    t0 = time.monotonic()
    follower.start()
    while time.monotonic() - t0 < 60:
        index = cluster_bench.manager_property(follower, "CommitIndex")
        if index is not None and index >= target:
            elapsed = time.monotonic() - t0
            break
        time.sleep(0.005)
    else:
        elapsed = float("inf")
    if flood:
        flood.join()
    return elapsed


def sample_during(pid, flood):
    """Peak (RSS, PSS) while flood runs."""
    peak = (0, 0)
    flood.start()
    while flood.thread.is_alive():
        rss, pss = memory(pid)
        peak = (max(peak[0], rss), max(peak[1], pss))
        time.sleep(0.1)
    flood.join()
    return peak


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def bench_mode(Cluster, args, tls):
    what = "TLS" if tls else "plaintext"
    c = Cluster(3, heartbeat_ms=None, election_ms=None, tls=tls, leak_checks=False)
    try:
        c.start()
        leader = c.node(c.wait_leader())
        follower = next(n for n in c.nodes if n is not leader)
        write_for(args, leader)
        quiet = sorted(catch_up(args, c, leader, follower) for _ in range(3))
        print("%-9s undisturbed catch-up: median %.3f s (%s)" % (
            what, statistics.median(quiet), ", ".join("%.3f" % q for q in quiet)), flush=True)
        for kind in ("silent", "slow", "oversized"):
            c.wait_leader()
            time.sleep(2)
            pid = follower.proc.pid
            before = memory(pid)
            log_before = os.path.getsize(follower.log_path)
            flood = Flood(follower.port, kind, tls, args.count, args.seconds, args.byte_cap)
            during = sample_during(pid, flood)
            time.sleep(3)
            after = memory(pid)
            print("%-9s %-9s x%d: RSS %6.1f -> peak %6.1f -> after %6.1f MiB; "
                  "PSS %6.1f -> %6.1f -> %6.1f MiB; %d connects, %d closed by the node, "
                  "%.1f MiB sent; log +%.1f KiB" % (
                      what, kind, args.count, before[0] / 1024, during[0] / 1024,
                      after[0] / 1024, before[1] / 1024, during[1] / 1024, after[1] / 1024,
                      flood.opened, flood.closed_by_node, flood.bytes_sent / MIB,
                      (os.path.getsize(follower.log_path) - log_before) / 1024), flush=True)
            flood = Flood(follower.port, kind, tls, args.count, args.seconds, args.byte_cap)
            t = catch_up(args, c, leader, follower, flood)
            print("%-9s %-9s x%d: catch-up %.3f s (undisturbed %.3f s, x%.1f)" % (
                what, kind, args.count, t, statistics.median(quiet),
                t / statistics.median(quiet)), flush=True)
        # Out of file descriptors.
        c.wait_leader()
        time.sleep(2)
        pid = follower.proc.pid
        limit = fds(pid) + 16
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, resource.getrlimit(
            resource.RLIMIT_NOFILE)[1]))
        flood = Flood(follower.port, "silent", tls, args.count, args.seconds, args.byte_cap)
        flood.start()
        used = cluster_bench.cpu_percent([pid], args.seconds - 1)
        flood.join()
        alive = follower.running()
        time.sleep(1)
        log = follower.read_log()
        print("%-9s silent x%d with RLIMIT_NOFILE %d: CPU %.1f %% of a core during the flood, "
              "%s, %d log lines about accept" % (
                  what, args.count, limit, used[pid], "alive" if alive else "DEAD",
                  sum(1 for line in log.splitlines() if "accept" in line)), flush=True)
    finally:
        c.teardown()


def main():
    try:
        import gi  # noqa: F401
    except ImportError:
        sys.exit("flood-bench needs python3-gi; run it with /usr/bin/python3")
    p = argparse.ArgumentParser()
    p.add_argument("build", nargs="?", default=os.path.join(here, "..", "build"))
    p.add_argument("--count", type=int, default=1000)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--byte-cap", type=int, default=512, help="MiB, all oversized connections")
    p.add_argument("--only", choices=["plaintext", "tls"])
    args = p.parse_args()
    args.byte_cap *= MIB
    build = args.build = os.path.abspath(args.build)
    os.environ.setdefault("SPARROWD", os.path.join(build, "daemon", "sparrowd"))
    os.environ.setdefault("SPARROWCTL", os.path.join(build, "daemon", "sparrowctl"))
    os.environ.setdefault("SPARROW_CERTS", os.path.join(here, "..", "tools", "sparrow-certs"))
    # Every node has its fence keeper, with the unit's grace.
    os.environ.setdefault("SPARROW_FENCE", os.path.join(build, "daemon", "sparrow-fence"))
    os.environ.setdefault("SPARROW_KEEPER_GRACE_MS", "20")
    # The flood's sockets, and the daemons (they inherit it).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * args.count + 256
    if soft < want:
        if hard < want:
            sys.exit("RLIMIT_NOFILE hard limit %d < %d" % (hard, want))
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    from cluster import Cluster

    print("3 nodes on 127.0.0.1 (the daemon's default timings); the flooded node is a follower",
          flush=True)
    for tls in (False, True):
        if args.only in (None, "tls" if tls else "plaintext"):
            bench_mode(Cluster, args, tls)


if __name__ == "__main__":
    main()
