"""Cluster test clients, stdlib only. Nodes are given as HOST:PORT (TLS, CA in PUSHERS_CA).

  cluster.py consistency N1 N2 N3    push through N1, read through N2 and N3 right after each 201:
                                     manifests, blobs, retagged tags, tags/list, _catalog, referrers
  cluster.py storm ROOT N1 N2 N3     3 nodes x 10 clients push 60 images sharing base layers at the
                                     same moment and retag the same tags; then verify everything
"""
import hashlib, json, os, random, sys, threading, time

sys.path.insert(0, os.path.dirname(__file__))
from pushers import req, sha  # noqa: E402  (HTTPS through PUSHERS_CA)

MT = "application/vnd.oci.image.manifest.v1+json"

def check(cond, *what):
    if not cond:
        raise AssertionError(" ".join(str(w) for w in what))

def push_blob(node, repo, data, chunk=None):
    if chunk is None:
        s, h, b = req(node, "POST", f"/v2/{repo}/blobs/uploads/?digest={sha(data)}", data,
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

def put_manifest(node, repo, ref, m):
    s, h, b = req(node, "PUT", f"/v2/{repo}/manifests/{ref}", m, {"Content-Type": MT})
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

def storm(root, *nodes):
    rnd = random.Random(7)
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
                push_blob(node, repo, base[1])
                own = f"own layer {k} ".encode() * 4000
                push_blob(node, repo, own)
                config = json.dumps({"image": k, "os": "linux"}).encode()
                push_blob(node, repo, config)
                m = manifest(config, [base[0], base[1], own])
                for tag in (f"img{k}", "shared", f"wave{k % 3}"):
                    put_manifest(node, repo, tag, m)
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
    # Every referenced blob on storage verifies, and nothing temporary is left.
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
    leftovers = []
    for dirpath, dirs, files in os.walk(v2):
        leftovers += [os.path.join(dirpath, f) for f in files + dirs if ".tmp-" in f]
        if os.path.basename(dirpath) == "_uploads":
            leftovers += [os.path.join(dirpath, d) for d in dirs]
    check(not leftovers, "left behind:", leftovers[:10])
    print(f"60 pushes by 30 clients on 3 nodes in {took:.1f}s: all 201, tags consistent, "
          f"{len(blobs)} blobs verify, no temp files or upload directories left")

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

if __name__ == "__main__":
    {"consistency": consistency, "storm": storm, "served-or-503": served_or_503}[sys.argv[1]](*sys.argv[2:])
