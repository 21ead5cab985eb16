"""Cluster test clients, stdlib only. Nodes are given as HOST:PORT (TLS, CA in PUSHERS_CA).

  cluster.py consistency N1 N2 N3    push through N1, read through N2 and N3 right after each 201:
                                     manifests, blobs, retagged tags, tags/list, _catalog, referrers
  cluster.py storm ROOT N1 N2 N3     3 nodes x 10 clients push 60 images sharing base layers at the
                                     same moment and retag the same tags; then verify everything
  cluster.py partition-push A B N LOG
                                     A and B push to the same N new repositories at the same moments
                                     (same base layer, same tag): only 201/202 or 503, acks to LOG
  cluster.py partition-verify LOG N...
                                     every acknowledged manifest and blob served right by every node,
                                     every tag on one of the manifests acknowledged for it
  cluster.py gfid-mismatches REL BRICK...
                                     paths under REL whose GFID differs between bricks
  cluster.py leftovers ROOT BRICK... temp files and upload directories under ROOT, with the bricks
                                     holding each; exit 1 when there are any
  cluster.py forward PORT HOST:PORT  a TCP forwarder from 127.0.0.1:PORT (a brick's stand-in for one
                                     FUSE client: killing it cuts that client from the brick)
"""
import hashlib, json, os, random, socket, sys, threading, time

sys.path.insert(0, os.path.dirname(__file__))
from pushers import req, sha  # noqa: E402  (HTTPS through PUSHERS_CA)

MT = "application/vnd.oci.image.manifest.v1+json"

def check(cond, *what):
    if not cond:
        raise AssertionError(" ".join(str(w) for w in what))

def push_blob(node, repo, data, chunk=None, send=req):
    """SEND (default `req`) makes the monolithic push, which is idempotent; a chunked one always
    goes through `req`."""
    if chunk is None:
        s, h, b = send(node, "POST", f"/v2/{repo}/blobs/uploads/?digest={sha(data)}", data,
                      {"Content-Type": "application/octet-stream"})
        check(s == 201, "monolithic push", repo, s, b[:200])
        return
    s, h, b = req(node, "POST", f"/v2/{repo}/blobs/uploads/")
    check(s == 202, "start upload", repo, s, b[:200])
    loc, off = h["location"], 0
    while off < len(data):
        part = data[off:off + chunk]
        s, h, b = req(node, "PATCH", loc, part, {"Content-Range": f"{off}-{off + len(part) - 1}",
                                                 "Content-Type": "application/octet-stream"})
        check(s == 202, "chunk", repo, off, s, b[:200])
        loc, off = h["location"], off + len(part)
    s, _, b = req(node, "PUT", f"{loc}{'&' if '?' in loc else '?'}digest={sha(data)}")
    check(s == 201, "finish upload", repo, s, b[:200])

def manifest(config, layers, subject=None, artifact_type=None):
    m = {"schemaVersion": 2, "mediaType": MT,
         "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
         "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(l), "size": len(l)} for l in layers]}
    if subject:
        m["subject"] = subject
    if artifact_type:
        m["artifactType"] = artifact_type
    return json.dumps(m).encode()

def put_manifest(node, repo, ref, m, send=req):
    s, h, b = send(node, "PUT", f"/v2/{repo}/manifests/{ref}", m, {"Content-Type": MT})
    check(s == 201, "manifest put", repo, ref, s, b[:300])
    check(h.get("docker-content-digest") == sha(m), "digest header", repo, ref)

def consistency(n1, n2, n3):
    readers = (n2, n3)
    for k in range(12):
        repo = f"consist/r{k}"
        layer, config = os.urandom(200_000 + k), json.dumps({"k": k, "os": "linux"}).encode()
        push_blob(n1, repo, layer, chunk=64 * 1024)
        push_blob(n1, repo, config)
        m = manifest(config, [layer])
        put_manifest(n1, repo, "v1", m)
        for r in readers:  # right after the 201, no retry
            s, h, b = req(r, "GET", f"/v2/{repo}/manifests/v1", headers={"Accept": MT})
            check(s == 200 and b == m, "manifest read on", r, "after push on", n1, repo, s)
            s, _, b = req(r, "GET", f"/v2/{repo}/blobs/{sha(layer)}")
            check(s == 200 and b == layer, "layer read on", r, repo, s)
            s, _, b = req(r, "GET", f"/v2/{repo}/tags/list")
            check(s == 200 and json.loads(b)["tags"] == ["v1"], "tags/list on", r, repo, b[:200])
            s, _, b = req(r, "GET", f"/v2/_catalog?n=1000")
            check(s == 200 and repo in json.loads(b)["repositories"], "catalog on", r, "lacks", repo)
        # Retag: the tag moves on every node at once.
        config2 = json.dumps({"k": k, "v": 2}).encode()
        push_blob(n1, repo, config2)
        m2 = manifest(config2, [layer])
        put_manifest(n1, repo, "v1", m2)
        for r in readers:
            s, h, b = req(r, "GET", f"/v2/{repo}/manifests/v1", headers={"Accept": MT})
            check(s == 200 and b == m2, "retagged manifest stale on", r, repo, s)
        # A referrer pushed on n1 is listed on the others.
        sig = b'{"sig": %d}' % k
        push_blob(n1, repo, sig)
        empty = b"{}"
        push_blob(n1, repo, empty)
        ref = manifest(empty, [sig], subject={"mediaType": MT, "digest": sha(m2), "size": len(m2)},
                       artifact_type="application/vnd.example.sig")
        put_manifest(n1, repo, sha(ref), ref)
        for r in readers:
            s, _, b = req(r, "GET", f"/v2/{repo}/referrers/{sha(m2)}")
            got = [d["digest"] for d in json.loads(b).get("manifests", [])]
            check(s == 200 and got == [sha(ref)], "referrers on", r, repo, s, got)
        # Deletes show at once too.
        s, _, _ = req(n1, "DELETE", f"/v2/{repo}/manifests/{sha(ref)}")
        check(s == 202, "delete referrer", s)
        for r in readers:
            s, _, b = req(r, "GET", f"/v2/{repo}/manifests/{sha(ref)}")
            check(s == 404, "deleted manifest still served on", r, repo, s)
    print("12 pushes through node 1: manifests, blobs, retags, tags/list, _catalog, referrers and "
          "deletes read back at once on nodes 2 and 3")

def retrying_503(counter, lock):
    """`req` that repeats a request answered 503 (the registry's "storage is unavailable, retry
    later": its operation timeout, met when 30 clients saturate two cores and three bricks), as
    clients do, counting each repeat in COUNTER. Only for idempotent requests (a manifest PUT, a
    monolithic blob push)."""
    def send(node, method, path, body=None, headers=None):
        for attempt in range(4):
            s, h, b = req(node, method, path, body, headers)
            if s != 503 or attempt == 3:
                return s, h, b
            with lock:
                counter.append(method)
            time.sleep(1 + attempt)
    return send

def storm(root, *nodes):
    rnd = random.Random(7)
    retried, retried_lock = [], threading.Lock()
    send = retrying_503(retried, retried_lock)
    base = [rnd.randbytes(2 << 20), rnd.randbytes(512 << 10)]   # shared by every image
    results, errors, lock = [], [], threading.Lock()
    barrier = threading.Barrier(30)
    def client(c):
        node = nodes[c % 3]
        try:
            barrier.wait()
            for j in range(2):
                k = c * 2 + j
                repo = f"storm/app{k % 4}"
                # Same base blobs uploaded at the same moment through every node (chunked, then
                # monolithic), plus one layer of the image's own.
                push_blob(node, repo, base[0], chunk=1 << 20)
                push_blob(node, repo, base[1], send=send)
                own = f"own layer {k} ".encode() * 4000
                push_blob(node, repo, own, send=send)
                config = json.dumps({"image": k, "os": "linux"}).encode()
                push_blob(node, repo, config, send=send)
                m = manifest(config, [base[0], base[1], own])
                for tag in (f"img{k}", "shared", f"wave{k % 3}"):
                    put_manifest(node, repo, tag, m, send=send)
                with lock:
                    results.append((repo, k, sha(m), m))
        except Exception as e:  # noqa: BLE001 - reported below with the client number
            with lock:
                errors.append(f"client {c} on {node}: {e!r}")
    t0 = time.monotonic()
    ts = [threading.Thread(target=client, args=(c,)) for c in range(30)]
    for t in ts: t.start()
    for t in ts: t.join()
    took = time.monotonic() - t0
    check(not errors, "pushes failed:\n" + "\n".join(errors))
    check(len(results) == 60, "expected 60 pushes, got", len(results))
    pushed = {}
    for repo, k, d, m in results:
        pushed.setdefault(repo, {})[d] = m
        for node in nodes:
            s, _, b = req(node, "GET", f"/v2/{repo}/manifests/img{k}", headers={"Accept": MT})
            check(s == 200 and sha(b) == d, "img tag", repo, k, "on", node, s)
    for repo, mans in pushed.items():
        for tag in ("shared", "wave0", "wave1", "wave2"):
            s, h, b = req(nodes[0], "GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": MT})
            if s == 404:
                continue
            check(s == 200 and sha(b) in mans, "tag", repo, tag, "points at a manifest never pushed to it")
    # Every referenced blob on storage verifies (what is left behind is `leftovers`).
    v2 = os.path.join(root, "docker/registry/v2")
    blobs = set()
    for mans in pushed.values():
        for d, m in mans.items():
            man = json.loads(m)
            blobs |= {d, man["config"]["digest"]} | {l["digest"] for l in man["layers"]}
    for d in blobs:
        hexd = d.split(":")[1]
        data = open(os.path.join(v2, "blobs/sha256", hexd[:2], hexd, "data"), "rb").read()
        check(hashlib.sha256(data).hexdigest() == hexd, "blob", d, "does not match its digest")
    again = "".join(f", {retried.count(m)} {m} repeated after a 503" for m in sorted(set(retried)))
    print(f"60 pushes by 30 clients on 3 nodes in {took:.1f}s: all 201{again}, tags consistent, "
          f"{len(blobs)} blobs verify")

def leftovers(root, *bricks):
    """Temporary files and upload directories under the storage ROOT (a mount of the volume); for
    each (10 at most), which of the BRICKS (root directories of the volume's bricks) hold it."""
    v2 = os.path.join(root, "docker/registry/v2")
    left = []
    for dirpath, dirs, files in os.walk(v2):
        left += [os.path.join(dirpath, f) for f in files + dirs if ".tmp-" in f]
        if os.path.basename(dirpath) == "_uploads":
            left += [os.path.join(dirpath, d) for d in dirs]
    for path in left[:10]:
        rel = os.path.relpath(path, os.path.dirname(root))
        held = [str(i + 1) for i, b in enumerate(bricks) if os.path.lexists(os.path.join(b, rel))]
        print(f"{rel} (on bricks {','.join(held) or 'none'})")
    check(not left, len(left), "left behind")

def served_or_503(node, log):
    """Every acknowledged push (pushers.py log) is served digest-correct or answered 503: never
    wrong bytes, never another status. Prints how many were still 503."""
    ok = unavailable = 0
    first_503 = b""
    for line in open(log):
        if not line.strip():
            continue
        repo, tag, digest = line.split()
        s, h, m = req(node, "GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": MT})
        if s == 503:
            if not unavailable:
                first_503 = m[:300]
            unavailable += 1
            continue
        check(s == 200 and sha(m) == digest, "wrong answer for", repo, tag, s, m[:200])
        for d in [json.loads(m)["config"]] + json.loads(m)["layers"]:
            s, _, b = req(node, "GET", f"/v2/{repo}/blobs/{d['digest']}")
            check(s in (200, 503), "blob", d["digest"], "answered", s)
            check(s == 503 or sha(b) == d["digest"], "blob", d["digest"], "served wrong bytes")
        ok += 1
    print(f"{ok} served digest-correct, {unavailable} answered 503")
    if unavailable:
        print(f"   first 503: {first_503!r}")

class Refused(Exception):
    """A 503: this side of the partition may not write there."""

def partition_push(a, b, n, log):
    out, lock, errors = open(log, "a"), threading.Lock(), []
    tally = {a: [0, 0], b: [0, 0]}  # acknowledged, refused

    def expect(s, ok, what, body):
        if s == 503:
            raise Refused(what)
        check(s in ok, what, "answered", s, body[:200])

    def push(node, k, side, base, barrier):
        repo = f"part/r{k}"
        layer = f"{side}-{k}-".encode() * 10_000
        config = json.dumps({"side": side, "k": k, "os": "linux"}).encode()
        try:
            barrier.wait()
            for blob in (base, layer, config):
                s, _, body = req(node, "POST", f"/v2/{repo}/blobs/uploads/?digest={sha(blob)}", blob,
                                 {"Content-Type": "application/octet-stream"})
                expect(s, (201,), "blob push", body)
            m = manifest(config, [base, layer])
            s, _, body = req(node, "PUT", f"/v2/{repo}/manifests/v1", m, {"Content-Type": MT})
            expect(s, (201,), "manifest push", body)
            with lock:
                out.write(f"{repo} v1 {sha(m)}\n")
                out.flush()
                tally[node][0] += 1
        except Refused:
            with lock:
                tally[node][1] += 1
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(f"{node} {repo}: {e}")

    t0 = time.time()
    for first in range(0, int(n), 5):
        threads = []
        for k in range(first, min(first + 5, int(n))):
            base, barrier = os.urandom(100_000 + k), threading.Barrier(2)
            threads += [threading.Thread(target=push, args=(node, k, side, base, barrier))
                        for side, node in (("a", a), ("b", b))]
        for t in threads: t.start()
        for t in threads: t.join()
    check(not errors, "unexpected answers:", errors[:5])
    print(f"{n} repositories pushed through both sides at once: side A {tally[a][0]} acknowledged, "
          f"{tally[a][1]} refused with 503; side B {tally[b][0]} acknowledged, {tally[b][1]} refused with 503, in {time.time() - t0:.0f} s")

def partition_verify(log, *nodes):
    acked = [l.split() for l in open(log) if l.strip()]
    check(acked, "nothing was acknowledged")
    for node in nodes:
        for repo, tag, digest in acked:
            s, h, m = req(node, "GET", f"/v2/{repo}/manifests/{digest}", headers={"Accept": MT})
            check(s == 200 and sha(m) == digest, node, repo, digest, "answered", s, m[:200])
            for d in [json.loads(m)["config"]] + json.loads(m)["layers"]:
                s, _, b = req(node, "GET", f"/v2/{repo}/blobs/{d['digest']}")
                check(s == 200 and sha(b) == d["digest"], node, repo, "blob", d["digest"], "answered", s)
            s, h, m = req(node, "GET", f"/v2/{repo}/manifests/{tag}", headers={"Accept": MT})
            check(s == 200, node, repo, tag, "answered", s, m[:200])
            check(sha(m) in {d for r, t, d in acked if (r, t) == (repo, tag)}, node, repo, tag,
                  "points at a manifest nobody pushed")
    print(f"{len(acked)} acknowledged pushes served right by {len(nodes)} nodes, every tag on one of them")

def forward(port, target):
    host, tport = target.rsplit(":", 1)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", int(port)))
    srv.listen(64)

    def pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    while True:
        c, _ = srv.accept()
        try:
            u = socket.create_connection((host, int(tport)))
        except OSError:
            c.close()
            continue
        for a, b in ((c, u), (u, c)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()

def gfid_mismatches(rel, *bricks):
    seen = {}
    for brick in bricks:
        top = os.path.join(brick, rel)
        for dirpath, dirs, files in os.walk(top):
            for name in dirs + files:
                path = os.path.join(dirpath, name)
                try:
                    gfid = os.getxattr(path, "trusted.gfid", follow_symlinks=False).hex()
                except OSError:
                    continue
                seen.setdefault(os.path.relpath(path, top), set()).add(gfid)
    split = sorted(p for p, g in seen.items() if len(g) > 1)
    print(len(split), " ".join(split[:3]))

if __name__ == "__main__":
    {"consistency": consistency, "storm": storm, "served-or-503": served_or_503,
     "partition-push": partition_push, "partition-verify": partition_verify,
     "gfid-mismatches": gfid_mismatches, "leftovers": leftovers, "forward": forward}[sys.argv[1]](*sys.argv[2:])
