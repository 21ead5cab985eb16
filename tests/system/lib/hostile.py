#!/usr/bin/env python3
"""Hostile and broken clients for tests/system/limits.sh. Each subcommand prints one JSON line.

  slowloris HOST PORT N SECONDS  N connections that send a request head one byte every 0.3 s;
                                 reports how long each stayed open (capped at SECONDS).
  silent HOST PORT N SECONDS     N connections that send nothing; same report.
  stall HOST PORT PATH FILE SENT TOTAL SECONDS
                                 PATCH with Content-Length TOTAL, sends the first SENT bytes of
                                 FILE ("-": filler), then stalls;
                                 reports when the server answered or closed, and the status.
"""
import json
import socket
import sys
import threading
import time


def hold(host, port, n, seconds, feed):
    opened = []
    for _ in range(n):
        s = socket.create_connection((host, port))
        s.settimeout(0.3)
        opened.append(s)
    start = time.monotonic()
    lifetimes = [None] * n

    def run(i, s):
        head = b"GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"a" * 10_000
        pos = 0
        while time.monotonic() - start < seconds:
            if feed and pos < len(head):
                try:
                    s.send(head[pos:pos + 1])
                    pos += 1
                except OSError:
                    lifetimes[i] = time.monotonic() - start
                    return
            try:
                data = s.recv(65536)
                if data == b"":
                    lifetimes[i] = time.monotonic() - start
                    return
            except socket.timeout:
                pass
            except OSError:
                lifetimes[i] = time.monotonic() - start
                return
        lifetimes[i] = None

    threads = [threading.Thread(target=run, args=(i, s)) for i, s in enumerate(opened)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for s in opened:
        s.close()
    closed = [round(x, 2) for x in lifetimes if x is not None]
    print(json.dumps({"closed": len(closed), "open": n - len(closed),
                      "max_lifetime": max(closed) if closed else None}))


def stall(host, port, path, source, sent, total, seconds):
    s = socket.create_connection((host, port))
    s.sendall((f"PATCH {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
               f"Content-Length: {total}\r\n\r\n").encode())
    if source == "-":
        s.sendall(b"\x5a" * sent)
    else:
        with open(source, "rb") as f:
            s.sendall(f.read(sent))
    start = time.monotonic()
    s.settimeout(seconds)
    data = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                break
    except socket.timeout:
        pass
    elapsed = round(time.monotonic() - start, 2)
    status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else None
    print(json.dumps({"status": status, "after": elapsed}))


def main():
    cmd = sys.argv[1]
    if cmd in ("slowloris", "silent"):
        host, port, n, seconds = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
        hold(host, port, n, seconds, feed=(cmd == "slowloris"))
    elif cmd == "stall":
        host, port, path = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        stall(host, port, path, sys.argv[5], int(sys.argv[6]), int(sys.argv[7]), float(sys.argv[8]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
