"""Listens on a NOTIFY_SOCKET (unix datagram) and writes each message as one line:
<monotonic seconds> <message with newlines as |>."""
import os, socket, sys, time

path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
open(path + ".bound", "w").close()
with open(out, "a", buffering=1) as f:
    while True:
        msg = s.recv(4096).decode(errors="replace")
        f.write(f"{time.monotonic():.3f} {msg.strip().replace(chr(10), '|')}\n")
