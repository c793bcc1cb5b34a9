#!/usr/bin/env python3
"""The fence keeper (sparrow-fence, daemon/fence-keeper.c) with a real
client over its socket, in a network namespace of the test's own (its
loopback carries the addresses to fence): arm, extend, expire; the kill of
a client that did not see its deadline pass; the fence when the client goes;
refused peers and messages.

Runs itself under unshare(1) (-n as root, -rn otherwise); skipped when the
namespace cannot be made."""

import mmap
import os
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

KEEPER = os.environ.get("SPARROW_FENCE", "sparrow-fence")
MSG = struct.Struct("<IIII16s16s64s")  # SpKeeperMsg
MAGIC = 0x53504B31
PAGE, ADDRESS, ARM, ARMED, REFUSED = 1, 2, 3, 4, 5
FENCED = 2**64 - 1
ADDR = "10.77.5.1"


def boottime_ns():
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME)


def msg(type_, family=0, prefix=0, addr=b"", ifname=b""):
    return MSG.pack(MAGIC, type_, family, prefix, addr, ifname, b"")


def client_main():
    """A client driven line by line on stdin: what sparrowd does, by hand."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    page = None
    for line in sys.stdin:
        cmd, *args = line.split()
        if cmd == "connect":
            sock.connect(args[0])
            data, fds, _, _ = socket.recv_fds(sock, MSG.size, 1)
            assert MSG.unpack(data)[1] == PAGE and len(fds) == 1, "no page"
            page = mmap.mmap(fds[0], 4096)
            os.close(fds[0])
            print("page", flush=True)
        elif cmd == "addr":
            family = socket.AF_INET6 if ":" in args[0] else socket.AF_INET
            sock.send(msg(ADDRESS, family, int(args[1]), socket.inet_pton(family, args[0]),
                          args[2].encode()))
            print("sent", flush=True)
        elif cmd == "raw":
            sock.send(bytes.fromhex(args[0]))
            print("sent", flush=True)
        elif cmd == "arm":
            page[0:8] = struct.pack("<Q", int(args[0]))
            sock.send(msg(ARM))
            print("sent", flush=True)
        elif cmd == "recv":
            fields = MSG.unpack(sock.recv(MSG.size))
            print("msg", fields[1], fields[6].rstrip(b"\0").decode(), flush=True)
        elif cmd == "extend":
            page[0:8] = struct.pack("<Q", int(args[0]))
            print("ok", flush=True)
        elif cmd == "ack":
            page[8:16] = page[0:8]
            print("ok", flush=True)
        elif cmd == "read":
            print("page", *struct.unpack("<QQ", page[0:16]), flush=True)
        elif cmd == "exit":
            return


def address_present():
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", "lo"],
                         capture_output=True, text=True, check=True).stdout
    return f" {ADDR}/" in out


def wait_for(what, predicate, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Client:
    def __init__(self, test, user=None):
        argv = [sys.executable, __file__, "--client"]
        if user:
            argv = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"] + argv
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        test.addCleanup(self.close)

    def ask(self, line, timeout=5.0):
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise AssertionError(f"client: no answer to {line!r} within {timeout} s")
        answer = self.proc.stdout.readline().split()
        if not answer:
            raise AssertionError(f"client: ended on {line!r} (status {self.proc.wait()})")
        return answer

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()


class Keeper(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="sparrow-keeper-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.dir])
        os.chmod(self.dir, 0o755)
        self.sock = os.path.join(self.dir, "keeper.sock")
        self.log_path = os.path.join(self.dir, "keeper.log")
        self.log = open(self.log_path, "w")
        self.addCleanup(self.log.close)
        self.keeper = subprocess.Popen([KEEPER, "--socket", self.sock, "--grace-ms", "20"],
                                       stderr=self.log)
        self.addCleanup(self.keeper.wait)
        self.addCleanup(self.keeper.kill)
        wait_for("the keeper's socket", lambda: os.path.exists(self.sock))
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "addr", "replace", ADDR + "/24", "dev", "lo"], check=True)
        self.addCleanup(subprocess.run, ["ip", "addr", "del", ADDR + "/24", "dev", "lo"],
                        capture_output=True)

    def logged(self, text):
        with open(self.log_path) as f:
            return text in f.read()

    def wait_logged(self, text, timeout=5.0):
        wait_for(f"{text!r} in the keeper's log", lambda: self.logged(text), timeout)

    def armed_client(self, deadline_ns):
        c = Client(self)
        self.assertEqual(c.ask("connect " + self.sock), ["page"])
        c.ask(f"addr {ADDR} 24 lo")
        c.ask(f"arm {deadline_ns}")
        self.assertEqual(c.ask("recv"), ["msg", str(ARMED)])
        return c

    def report_reaction(self):
        with open(self.log_path) as f:
            for line in f:
                if line.startswith("fence (lease ended)"):
                    print("keeper reaction:", line.strip(), file=sys.stderr)

    def test_expiry_removes_and_kills_unacked(self):
        deadline = boottime_ns() + 300_000_000
        c = self.armed_client(deadline)
        self.assertTrue(address_present())
        wait_for("the address to go", lambda: not address_present())
        gone = boottime_ns()
        self.assertGreaterEqual(gone, deadline)
        wait_for("the client's kill", lambda: c.proc.poll() is not None)
        self.assertEqual(c.proc.returncode, -9)
        self.wait_logged("killed sparrowd")
        self.report_reaction()

    def test_extended_then_acked_is_fenced_late_and_not_killed(self):
        start = boottime_ns()
        c = self.armed_client(start + 200_000_000)
        later = start + 600_000_000
        c.ask(f"extend {later}")
        c.ask("ack")
        wait_for("the address to go", lambda: not address_present())
        self.assertGreaterEqual(boottime_ns(), later, "fenced before the extended deadline")
        self.wait_logged("saw its lease end: not killed")
        self.assertIsNone(c.proc.poll())
        self.assertEqual(c.ask("read"), ["page", str(FENCED), str(later)])
        self.report_reaction()

    def test_client_gone_fences_at_once(self):
        c = self.armed_client(boottime_ns() + 60_000_000_000)
        c.proc.kill()
        wait_for("the address to go", lambda: not address_present(), timeout=2.0)
        self.wait_logged("fence (sparrowd gone while holding)")

    def test_arm_refused_without_a_deadline_ahead(self):
        c = Client(self)
        c.ask("connect " + self.sock)
        c.ask(f"arm {boottime_ns() - 1}")
        self.assertEqual(c.ask("recv")[:2], ["msg", str(REFUSED)])
        self.wait_logged("refused to arm")

    def test_malformed_messages_dropped(self):
        c = Client(self)
        c.ask("connect " + self.sock)
        c.ask("raw 0102")
        self.wait_logged("dropped a malformed message (2 bytes)")
        c.ask("raw " + msg(ADDRESS).hex().replace("314b5053", "00000000", 1))
        self.wait_logged("dropped a malformed message (112 bytes)")
        c.ask(f"addr {ADDR} 33 lo")
        self.assertEqual(c.ask("recv")[:2], ["msg", str(REFUSED)])
        self.wait_logged("refused an address of family 2, prefix 33")
        c.ask("raw " + msg(ADDRESS, socket.AF_INET, 24, bytes(4), b"x" * 16).hex())
        self.assertEqual(c.ask("recv")[:2], ["msg", str(REFUSED)])
        self.wait_logged("refused an address without an interface name")
        c.ask("raw " + msg(99).hex())
        self.wait_logged("dropped a message of unknown type 99")
        # The same connection still arms, and fences only what was valid.
        c.ask(f"addr {ADDR} 24 lo")
        c.ask(f"arm {boottime_ns() + 100_000_000}")
        self.assertEqual(c.ask("recv"), ["msg", str(ARMED)])
        wait_for("the address to go", lambda: not address_present())
        self.wait_logged("1 of 1 addresses removed")

    def test_other_uid_refused(self):
        if os.getuid() != 0 or subprocess.run(["setpriv", "--reuid=65534", "true"]).returncode:
            self.skipTest("needs root outside a user namespace to connect as another uid")
        # The socket's mode keeps others out; the keeper's own check is the
        # second line: open the mode and see it hold.
        os.chmod(self.sock, 0o666)
        c = Client(self, user="65534")
        c.proc.stdin.write("connect " + self.sock + "\n")
        c.proc.stdin.flush()
        self.wait_logged("refused a client of uid 65534")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        client_main()
        sys.exit(0)
    if not shutil.which("ip"):
        print("skipped: ip (iproute2) is not installed")
        sys.exit(77)
    if os.environ.get("SPARROW_KEEPER_NETNS") != "1":
        os.environ["SPARROW_KEEPER_NETNS"] = "1"
        ns = ["unshare", "-n"] if os.getuid() == 0 else ["unshare", "-rn"]
        probe = subprocess.run(ns + ["true"], capture_output=True)
        if probe.returncode != 0:
            print("skipped: cannot make a network namespace:", probe.stderr.decode().strip())
            sys.exit(77)
        os.execvp(ns[0], ns + [sys.executable] + sys.argv)
    unittest.main()
