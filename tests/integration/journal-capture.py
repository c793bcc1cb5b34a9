"""Runs a command with stderr connected to a journal of its own, as
systemd connects a service's, and prints what it logged natively: one JSON
object of fields per journal entry, then {"stderr": ...} with what came
down the stream.  Must run in a private mount namespace (unshare -m): it
mounts a tmpfs on /run/systemd to put its sockets where GLib looks.

Usage: journal-capture.py SECONDS UNTIL_FIELD=VALUE COMMAND...
Stops the command (SIGTERM) once an entry has UNTIL_FIELD=VALUE, or after
SECONDS."""

import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time


def parse(datagram):
    """The journal's native protocol: KEY=VALUE lines, or KEY, a
    little-endian 64-bit length and the value, for values with newlines."""
    fields, i = {}, 0
    while i < len(datagram):
        end = datagram.index(b"\n", i)
        line = datagram[i:end]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = end + 1
        else:
            key = line
            (n,) = struct.unpack("<Q", datagram[end + 1:end + 9])
            value = datagram[end + 9:end + 9 + n]
            i = end + 9 + n + 1
        fields[key.decode()] = value.decode(errors="replace")
    return fields


def main():
    seconds, until = float(sys.argv[1]), sys.argv[2].split("=", 1)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/run/systemd"], check=True)
    os.makedirs("/run/systemd/journal")
    journal = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    journal.bind("/run/systemd/journal/socket")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind("/run/systemd/journal/stdout")
    listener.listen(1)
    stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stream.connect("/run/systemd/journal/stdout")
    peer, _ = listener.accept()
    proc = subprocess.Popen(sys.argv[3:], stdout=stream.fileno(), stderr=stream.fileno())
    stream.close()
    deadline = time.monotonic() + seconds
    text = b""
    stopping = False
    while True:
        ready, _, _ = select.select([journal, peer], [], [], 0.1)
        if journal in ready:
            entry = parse(journal.recv(1 << 20))
            print(json.dumps(entry), flush=True)
            if entry.get(until[0]) == until[1] and not stopping:
                proc.send_signal(signal.SIGTERM)
                stopping = True
        if peer in ready:
            data = peer.recv(65536)
            text += data
            if not data and proc.poll() is not None:
                break
        if not stopping and time.monotonic() > deadline:
            proc.send_signal(signal.SIGTERM)
            stopping = True
        if proc.poll() is not None and not ready:
            break
    print(json.dumps({"stderr": text.decode(errors="replace"), "status": proc.wait()}))


main()
