#!/usr/bin/env python3
"""A hostile image archive: a .tar.gz of N entries, each `{` and 4 MiB of spaces (JSON-looking,
named like OCI blobs), about 6 MB for 1,500 of them. With --image DIR (an OCI layout), that
image follows the junk, its index.json last, as `docker save` orders a tar: an import must
still find its manifest after the junk used up what the first pass may hold.

Every entry is its own gzip member (one compressed 4 MiB block reused), so the archive is made in
a moment: gzip and flate2's MultiGzDecoder read concatenated members as one stream.

Usage: hostile_archive.py OUT N [--image DIR]
"""
import os
import sys
import tarfile
import zlib

out, n = sys.argv[1], int(sys.argv[2])
image = sys.argv[sys.argv.index("--image") + 1] if "--image" in sys.argv else None
SIZE = 4 << 20


def gz(data):
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def header(name, size):
    ti = tarfile.TarInfo(name)
    ti.size, ti.mode, ti.mtime = size, 0o644, 0
    return ti.tobuf(format=tarfile.USTAR_FORMAT)


def padded(data):
    return data + b"\0" * (-len(data) % 512)


junk = gz(b"{" + b" " * (SIZE - 1))
with open(out, "wb") as f:
    for i in range(n):
        f.write(gz(header(f"blobs/sha256/{i:064x}", SIZE)))
        f.write(junk)
    if image:
        files = []
        for root, _, names in os.walk(image):
            for name in names:
                full = os.path.join(root, name)
                files.append((os.path.relpath(full, image), full))
        # Blobs first, index.json last.
        files.sort(key=lambda p: (p[0] == "index.json", p[0]))
        for rel, full in files:
            with open(full, "rb") as src:
                data = src.read()
            f.write(gz(header(rel, len(data)) + padded(data)))
    f.write(gz(b"\0" * 1024))
