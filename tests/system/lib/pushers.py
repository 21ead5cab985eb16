"""Crash-test client and checker, stdlib only.

  pushers.py push HOST:PORT LOG SECONDS   20 threads push images in a loop (chunked layers, monolithic
                                          config, manifest) and append every acknowledged push to LOG
  pushers.py verify HOST:PORT LOG ROOT    every acknowledged push is pullable and digest-correct, and
                                          no link file under ROOT points at missing data
  pushers.py resume HOST:PORT PIDFILE     helper for the kill -9 mid-chunk test (see crash.sh)
"""
import hashlib, http.client, json, os, socket, sys, threading, time

# HTTPS when PUSHERS_CA names a CA file (the cluster test talks to nodes by address, so the CA is
# verified but not the name); plain HTTP otherwise.
CA = os.environ.get("PUSHERS_CA")

def tls():
    import ssl
    ctx = ssl.create_default_context(cafile=CA)
    ctx.check_hostname = False
    return ctx

def conn(host):
    h, p = host.split(":")
    if CA:
        return http.client.HTTPSConnection(h, int(p), timeout=30, context=tls())
    return http.client.HTTPConnection(h, int(p), timeout=30)

def req(host, method, path, body=None, headers=None):
    c = conn(host)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, dict((k.lower(), v) for k, v in r.getheaders()), data

def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()

def push_blob_chunked(host, repo, data, chunk):
    s, h, _ = req(host, "POST", f"/v2/{repo}/blobs/uploads/")
    assert s == 202, s
    loc = h["location"]
    off = 0
    while off < len(data):
        part = data[off:off + chunk]
        s, h, _ = req(host, "PATCH", loc, part, {"Content-Range": f"{off}-{off + len(part) - 1}",
                                                  "Content-Type": "application/octet-stream"})
        assert s == 202, s
        off += len(part)
    s, _, _ = req(host, "PUT", f"{loc}?digest={sha(data)}")
    assert s == 201, s

def push_image(host, repo, tag, seed):
    layers = []
    for i in range(2):
        data = (f"{seed}-{i}-".encode() * 40000)[: 300_000 + i]
        push_blob_chunked(host, repo, data, 100_000)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(data), "size": len(data)})
    config = json.dumps({"seed": seed, "os": "linux", "architecture": "amd64"}).encode()
    s, _, _ = req(host, "POST", f"/v2/{repo}/blobs/uploads/?digest={sha(config)}", config)
    assert s == 201, s
    m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(config), "size": len(config)},
                    "layers": layers}).encode()
    s, h, _ = req(host, "PUT", f"/v2/{repo}/manifests/{tag}", m, {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    assert s == 201, s
    return sha(m)

def cmd_push(host, log, seconds):
    deadline = time.time() + float(seconds)
    lock = threading.Lock()
    out = open(log, "a")
    def worker(n):
        i = 0
        while time.time() < deadline:
            try:
                d = push_image(host, f"crash/w{n}", f"t{i}", f"{n}.{i}")
            except Exception:
                return  # the daemon died under us
            with lock:
                out.write(f"crash/w{n} t{i} {d}\n")
                out.flush()
                os.fsync(out.fileno())
            i += 1
    ts = [threading.Thread(target=worker, args=(n,)) for n in range(20)]
    for t in ts: t.start()
    for t in ts: t.join()

def cmd_verify(host, log, root):
    acked = [l.split() for l in open(log) if l.strip()]
    assert acked, "no push was acknowledged before the kill"
    for repo, tag, digest in acked:
        s, h, m = req(host, "GET", f"/v2/{repo}/manifests/{tag}")
        assert s == 200, (repo, tag, s, m[:300])
        assert sha(m) == digest == h["docker-content-digest"], (repo, tag)
        man = json.loads(m)
        for d in [man["config"]] + man["layers"]:
            s, _, b = req(host, "GET", f"/v2/{repo}/blobs/{d['digest']}")
            assert s == 200 and sha(b) == d["digest"] and len(b) == d["size"], (repo, d["digest"], s)
    v2 = os.path.join(root, "docker/registry/v2")
    links = 0
    for dirpath, _, files in os.walk(os.path.join(v2, "repositories")):
        if "link" not in files or "/_uploads/" in dirpath:
            continue
        target = open(os.path.join(dirpath, "link")).read().strip()
        alg, hexd = target.split(":")
        data = os.path.join(v2, "blobs", alg, hexd[:2], hexd, "data")
        assert os.path.exists(data), f"{dirpath}/link points at missing {target}"
        if "/_manifests/tags/" in dirpath and dirpath.endswith("/current"):
            repo_dir = dirpath.split("/_manifests/")[0]
            rev = os.path.join(repo_dir, "_manifests/revisions", alg, hexd, "link")
            assert os.path.exists(rev), f"tag {dirpath} names a missing revision"
        links += 1
    print(f"{len(acked)} acknowledged pushes verified, {links} links all point at data")

def cmd_resume(host, pidfile):
    """Chunk 1 acknowledged; chunk 2 half-sent when the daemon is killed (by the caller, who waits
    for the marker file); after restart the upload resumes at the end of chunk 1."""
    a = os.urandom(1_000_000)
    b = os.urandom(1_000_000)
    s, h, _ = req(host, "POST", "/v2/resume/blobs/uploads/")
    loc = h["location"]
    s, h, _ = req(host, "PATCH", loc, a, {"Content-Range": f"0-{len(a) - 1}"})
    assert s == 202 and h["range"] == f"0-{len(a) - 1}", (s, h)
    hp = host.split(":")
    sock = socket.create_connection((hp[0], int(hp[1])))
    if CA:
        sock = tls().wrap_socket(sock)
    sock.sendall((f"PATCH {loc} HTTP/1.1\r\nHost: {host}\r\nContent-Range: {len(a)}-{len(a) + len(b) - 1}\r\n"
                  f"Content-Length: {len(b)}\r\n\r\n").encode() + b[:500_000])
    time.sleep(0.5)
    open(pidfile + ".half-sent", "w").close()
    # wait until the caller killed and restarted the daemon
    while not os.path.exists(pidfile + ".restarted"):
        time.sleep(0.05)
    sock.close()
    s, h, _ = req(host, "GET", loc)
    assert s == 204 and h["range"] == f"0-{len(a) - 1}", ("status after restart", s, h)
    s, h, _ = req(host, "PATCH", loc, b, {"Content-Range": f"{len(a)}-{len(a) + len(b) - 1}"})
    assert s == 202, s
    s, _, _ = req(host, "PUT", f"{loc}?digest={sha(a + b)}")
    assert s == 201, s
    s, _, got = req(host, "GET", f"/v2/resume/blobs/{sha(a + b)}")
    assert s == 200 and got == a + b
    print("upload resumed at the acknowledged offset after kill -9 and completed digest-correct")

if __name__ == "__main__":
    {"push": cmd_push, "verify": cmd_verify, "resume": cmd_resume}[sys.argv[1]](*sys.argv[2:])
