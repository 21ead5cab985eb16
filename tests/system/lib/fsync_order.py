"""Checks an `strace -f -y -s 80` trace of one push: for every file registryd publishes by rename,
the order is fsync(file) -> rename -> fsync(directory), and all of it happens before the 2xx that
acknowledges it is written to the client.

usage: fsync_order.py TRACE
"""
import os, re, sys

lines = open(sys.argv[1]).read().splitlines()
# strace -f splits calls across threads: "<unfinished ...>" + "<... X resumed>"; join them.
pending, events = {}, []
for line in lines:
    m = re.match(r"^(\d+)\s+(.*)$", line)
    if not m:
        continue
    pid, rest = m.groups()
    if rest.endswith("<unfinished ...>"):
        pending[pid] = rest[: -len("<unfinished ...>")].rstrip()
        continue
    r = re.match(r"^<\.\.\. \w+ resumed>(.*)$", rest)
    if r:
        rest = pending.pop(pid, "") + r.group(1)
    events.append(rest)

synced = set()        # paths fsynced (files or dirs), reset per rename check
renames = []          # (index, src, dst)
fsyncs = []           # (index, path)
acks = []             # (index, status line)
for i, e in enumerate(events):
    m = re.match(r'^f(?:data)?sync\(\d+<([^>]*)>\)\s*=\s*0', e)
    if m:
        fsyncs.append((i, m.group(1)))
        continue
    m = re.match(r'^rename(?:at2?)?\((?:[^,]+, )?"([^"]+)", (?:[^,]+, )?"([^"]+)"(?:, \w+)?\)\s*=\s*0', e)
    if m:
        renames.append((i, m.group(1), m.group(2)))
        continue
    m = re.match(r'^(?:write|writev|sendto|sendmsg)\(\d+<(?:TCP|socket)[^>]*>, \[?\{?(?:iov_base=)?"HTTP/1\.1 (2\d\d)', e)
    if m:
        acks.append((i, m.group(1)))

assert renames, "trace shows no rename: was registryd traced?"
assert acks, "trace shows no 2xx written to a socket"
problems = []
for i, src, dst in renames:
    before = [p for j, p in fsyncs if j < i and p == src]
    if not before:
        problems.append(f"{dst}: no fsync of {src} before its rename")
    d = os.path.dirname(dst)
    after = [j for j, p in fsyncs if j > i and p == d]
    if not after:
        problems.append(f"{dst}: no fsync of directory {d} after the rename")
        continue
    # A heartbeat (registryd/nodes/) is written by a timer, not for a request: another request's
    # 2xx may be written by another thread between its rename and its directory fsync.
    if "/registryd/nodes/" in dst:
        continue
    # the first 2xx written after this rename must come after the directory fsync
    next_acks = [j for j, _ in acks if j > i]
    if next_acks and next_acks[0] < after[0]:
        problems.append(f"{dst}: a 2xx was written before the directory fsync")
# publication order within the manifest push: blob data, revision link, tag index, tag current
def pos(pattern):
    found = [i for i, _, dst in renames if re.search(pattern, dst)]
    return found[-1] if found else None
order = [pos(r"/_manifests/revisions/"), pos(r"/_manifests/tags/[^/]+/index/"), pos(r"/_manifests/tags/[^/]+/current/link$")]
if None in order or order != sorted(order):
    problems.append(f"manifest publication order wrong: revision, tag index, tag current at {order}")
if problems:
    print("\n".join(problems))
    sys.exit(1)
print(f"{len(renames)} renames, each fsync -> rename -> dir fsync before its 2xx ({len(acks)} acknowledgements)")
