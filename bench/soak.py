#!/usr/bin/env python3
"""The soak's bookkeeping (bench/soak.sh writes the records, this reads them).

  soak.py expect DIR             what the final check must find, from the clients' ledgers: one line per
                                 acknowledged manifest (`digest REPO - DIGEST`), live tag (`tag REPO TAG
                                 DIGEST`) and deleted reference (`gone REPO REF -`)
  soak.py report DIR WARMUP WORK errors by kind, chores, RSS and fds per minute, the verdicts; exit 1
                                 when a target is missed

A client's failed operation is "expected" only when its own node was restarting during it: the
restarts file has each restart's node and window, and the operation's node and times are logged.
"""
import collections, glob, os, re, statistics, sys

RESTART_TAIL = 2.0  # seconds after /readyz answered during which a client may still see the old state


def ledgers(d):
    tags, manifests, gone, unknown = {}, {}, set(), 0
    for path in sorted(glob.glob(os.path.join(d, "c*", "ledger"))):
        for line in open(path):
            f = line.split()
            if not f:
                continue
            if f[0] in ("push", "tag"):
                _, repo, tag, dg = f
                tags[(repo, tag)] = dg
                manifests.setdefault((repo, dg), "live")
                gone.discard((repo, tag))
            elif f[0] == "lost":
                tags.pop((f[1], f[2]), None)
                unknown += 1
            elif f[0] in ("delete", "lostdel"):
                repo, dg = f[1], f[2]
                manifests[(repo, dg)] = "deleted" if f[0] == "delete" else "unknown"
                for key in [k for k, v in tags.items() if k[0] == repo and v == dg]:
                    del tags[key]
                    if f[0] == "delete":
                        gone.add(key)
                unknown += f[0] == "lostdel"
    return tags, manifests, gone, unknown


def expect(d):
    tags, manifests, gone, _ = ledgers(d)
    for (repo, dg), state in sorted(manifests.items()):
        if state == "live":
            print(f"digest {repo} - {dg}")
        elif state == "deleted":
            print(f"gone {repo} {dg} -")
    for (repo, tag), dg in sorted(tags.items()):
        print(f"tag {repo} {tag} {dg}")
    for repo, tag in sorted(gone):
        print(f"gone {repo} {tag} -")


def mib(kib):
    return int(kib) / 1024


def report(d, warmup, work):
    warmup = float(warmup)
    restarts = [(int(n), float(a), float(b)) for n, a, b in
                (l.split() for l in open(os.path.join(d, "restarts")) if l.strip())]
    ops = collections.Counter()
    errors = collections.defaultdict(list)
    expected = collections.defaultdict(list)
    t_first = None
    for path in sorted(glob.glob(os.path.join(d, "c*", "events"))):
        client = os.path.basename(os.path.dirname(path))
        for line in open(path):
            f = line.rstrip("\n").split(" ", 6)
            if len(f) < 6 or f[0] != "op":
                continue
            kind, status, t0, t1, node = f[1], f[2], float(f[3]), float(f[4]), int(f[5])
            detail = f[6] if len(f) > 6 else ""
            t_first = t0 if t_first is None else min(t_first, t0)
            ops[(kind.split("-wrong")[0].replace("-digest-changed", ""), status)] += 1
            if status == "ok":
                continue
            own = any(n == node and t0 <= b + RESTART_TAIL and t1 >= a for n, a, b in restarts)
            (expected if own else errors)[kind].append(f"{client} node {node}: {detail}")
    print("\n== Client operations (ok / failed)")
    for kind in sorted({k for k, _ in ops}):
        print(f"  {kind:12} {ops[(kind, 'ok')]:6} ok {ops[(kind, 'fail')]:5} failed")
    print(f"  {'total':12} {sum(v for (k, s), v in ops.items() if s == 'ok'):6} ok "
          f"{sum(v for (k, s), v in ops.items() if s == 'fail'):5} failed")

    chores = collections.defaultdict(list)
    for line in open(os.path.join(d, "chores")) if os.path.exists(os.path.join(d, "chores")) else []:
        kind, status, t, *rest = line.rstrip("\n").split(" ", 3)
        chores[(kind, status)].append((int(t), rest[0] if rest else ""))
    print("\n== Chores")
    for (kind, status), items in sorted(chores.items()):
        print(f"  {kind:12} {status:4} {len(items):4}   last: t={items[-1][0]}s {items[-1][1][:150]}")
    for kind, status in chores:
        if status == "fail":
            for t, detail in chores[(kind, status)]:
                errors[f"chore {kind}"].append(f"t={t}s {detail}")
    for n, a, b in restarts:
        print(f"  restart of node {n}: {b - a:.1f} s from SIGTERM to ready")

    verify = collections.Counter()
    for line in open(os.path.join(d, "verify")):
        f = line.split(" ", 1)
        if f[0] == "verify-ok":
            verify[line.split()[1]] += 1
        else:
            errors[f[0]].append(f[1].strip() if len(f) > 1 else "")
    tags, manifests, gone, unknown = ledgers(d)
    print(f"\n== Final check with skopeo: {verify['digest']} acknowledged manifests pulled digest-exact, "
          f"{verify['tag']} tags resolved digest-exact, {verify['gone']} deleted references gone "
          f"({unknown} outcomes unknown after a failed write were not checked)")

    print("\n== Errors by kind (target: none)")
    if not errors:
        print("  none")
    for kind, items in sorted(errors.items()):
        print(f"  {kind}: {len(items)}")
        for x in items[:4]:
            print(f"      {x[:400]}")
    if expected:
        print("  Expected, apart: a client's error while its own node was restarting (it talked to that node):")
        for kind, items in sorted(expected.items()):
            print(f"    {kind}: {len(items)}")
            for x in items[:2]:
                print(f"        {x[:300]}")

    # RSS and fds: every sample, then per incarnation (node, pid) the growth after warm-up.
    samples = [l.split() for l in open(os.path.join(d, "samples")) if l.strip()]
    print("\n== RSS MiB / open fds per node (t = seconds since start; * = a new process after a restart)")
    print("   t(s)  " + "  ".join(f"{'node ' + str(i):>16}" for i in (1, 2, 3)))
    rows = collections.OrderedDict()
    for t, n, pid, rss, fds in samples:
        rows.setdefault(t, {})[n] = (pid, rss, fds)
    last_pid = {}
    for t, row in rows.items():
        cells = []
        for n in "123":
            pid, rss, fds = row.get(n, ("-", "0", "0"))
            star = "*" if n in last_pid and last_pid[n] != pid else " "
            last_pid[n] = pid
            cells.append(f"{mib(rss):8.1f} / {fds:>4}{star}")
        print(f"  {t:>5}  " + "  ".join(f"{c:>16}" for c in cells))
    inc = collections.OrderedDict()
    for t, n, pid, rss, fds in samples:
        inc.setdefault((n, pid), []).append((int(t), int(rss), int(fds)))
    print(f"\n== Flat after warm-up ({warmup:.0f} s of each process's life)? RSS grows if the median of the "
          "last 3 samples is 20% and 4 MiB over the first sample after warm-up; fds if 10 over it")
    for (n, pid), pts in inc.items():
        start = pts[0][0]
        after = [p for p in pts if p[0] - start >= warmup]
        if len(after) < 3:
            print(f"  node {n} pid {pid}: {len(pts)} samples, too short after warm-up to judge")
            continue
        base, tail = after[0], after[-3:]
        rss_end = statistics.median(p[1] for p in tail)
        fds_end = statistics.median(p[2] for p in tail)
        rss_grew = rss_end > base[1] * 1.2 and rss_end - base[1] > 4096
        fds_grew = fds_end - base[2] > 10
        verdict = "flat" if not (rss_grew or fds_grew) else "GROWS"
        print(f"  node {n} pid {pid}: t={base[0]}s..{pts[-1][0]}s  RSS {mib(base[1]):.1f} -> {mib(rss_end):.1f} MiB"
              f" (max {mib(max(p[1] for p in pts)):.1f}), fds {base[2]} -> {fds_end:.0f}: {verdict}")
        if verdict != "flat":
            errors["growth"].append(f"node {n} pid {pid}")

    # What the nodes logged above INFO, by message (numbers and hex folded), for the report.
    print("\n== Node log lines above INFO, by message")
    logged = collections.Counter()
    for path in sorted(glob.glob(os.path.join(work, "node*.log"))):
        for line in open(path, errors="replace"):
            if " INFO " in line or " DEBUG " in line or not line.strip():
                continue
            msg = re.sub(r"^\S+\s+", "", line.strip())
            msg = re.sub(r"[0-9a-f]{12,}", "H", msg)
            msg = re.sub(r"\d+(\.\d+)?", "N", msg)
            logged[(os.path.basename(path)[:-4], msg[:220])] += 1
    if not logged:
        print("  none")
    for (node, msg), count in sorted(logged.items(), key=lambda x: -x[1])[:25]:
        print(f"  {node} x{count}: {msg}")

    missed = sorted(errors)
    print("\n== Verdict: " + ("every target met" if not missed else "targets missed: " + ", ".join(missed)))
    return 1 if missed else 0


if __name__ == "__main__":
    if sys.argv[1] == "expect":
        expect(sys.argv[2])
    elif sys.argv[1] == "report":
        sys.exit(report(sys.argv[2], sys.argv[3], sys.argv[4]))
    else:
        sys.exit(__doc__)
