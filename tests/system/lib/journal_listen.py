"""A stand-in for journald's native socket: receives datagrams on PATH and writes each entry as one
JSON object per line. Handles the native protocol's plain KEY=VALUE lines and its binary-safe form
(KEY\\n<64-bit little-endian length><bytes>\\n)."""
import json, os, socket, struct, sys

path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
open(path + ".bound", "w").close()

def parse(b):
    fields, i = {}, 0
    while i < len(b):
        nl = b.find(b"\n", i)
        if nl < 0:
            break
        line = b[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            fields[k.decode()] = v.decode(errors="replace")
            i = nl + 1
        else:
            (n,) = struct.unpack("<Q", b[nl + 1:nl + 9])
            fields[line.decode()] = b[nl + 9:nl + 9 + n].decode(errors="replace")
            i = nl + 9 + n + 1
    return fields

with open(out, "a", buffering=1) as f:
    while True:
        data, anc, _, _ = s.recvmsg(1 << 20, socket.CMSG_SPACE(4 * 4))
        if not data:  # large entries come as a memfd
            for level, typ, d in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    fd = struct.unpack("i", d[:4])[0]
                    os.lseek(fd, 0, 0)
                    data = os.read(fd, 1 << 20)
                    os.close(fd)
        f.write(json.dumps(parse(data)) + "\n")
