#!/usr/bin/env python3
"""registryd vs CNCF Distribution 2.8.2, side by side on one machine, in one run.

Both registries run on 127.0.0.1 with the same TLS certificate and filesystem storage on the local disk.
Every scenario runs against each in alternation (A B A B ...) for --rounds rounds; the table shows the
median and min-max per registry and the ratio registryd / Distribution (or Distribution / registryd for
latencies and memory, so that > 1 always means registryd is better). Results go to bench/results/ as
JSON and a PNG chart. This is a benchmark: it asserts nothing.
"""
import argparse, hashlib, json, os, platform, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"

def sh(cmd, **kw):
    return subprocess.run(cmd, shell=True, check=True, text=True, capture_output=True, **kw).stdout

def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p

def cpu_seconds(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

def rss_kib(pid, key="VmRSS"):
    for l in open(f"/proc/{pid}/status"):
        if l.startswith(key + ":"):
            return int(l.split()[1])
    return 0

def pss_kib(pid):
    # Proportional set size: shared pages (the binary's code, libc) counted by their share, what
    # the daemon really costs the machine beside RSS's upper bound.
    try:
        for l in open(f"/proc/{pid}/smaps_rollup"):
            if l.startswith("Pss:"):
                return int(l.split()[1])
    except OSError:
        pass
    return 0

def reset_peak(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")

class Registry:
    def __init__(self, name, work, cert, key):
        self.name, self.port = name, free_port()
        self.root = os.path.join(work, name + "-data")
        self.log = open(os.path.join(work, name + ".log"), "w")
        self.work, self.cert, self.key = work, cert, key

    def start(self):
        cmd, env = self.command()
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, env=env)
        for _ in range(100):
            try:
                sh(f"curl -fs --cacert {self.ca} https://localhost:{self.port}/v2/ -o /dev/null")
                return
            except subprocess.CalledProcessError:
                time.sleep(0.1)
        raise SystemExit(f"{self.name} did not start, see {self.log.name}")

    def command(self):
        """The command line and environment that start this registry on local-disk storage."""
        env = dict(os.environ)
        if self.name == "registryd":
            env.update(REGISTRYD_TLS_CERTIFICATE=self.cert, REGISTRYD_TLS_KEY=self.key,
                       REGISTRYD_NODE_HOSTS_FILE=os.path.join(self.work, "hosts"), REGISTRYD_LOG_LEVEL="warn")
            open(os.path.join(self.work, "hosts"), "a").close()
            cmd = [os.path.join(REPO, "target/release/registryd"), "serve", "--listen", f"127.0.0.1:{self.port}", "--storage", self.root]
        else:
            cfg = os.path.join(self.work, "distribution.yml")
            open(cfg, "w").write(f"""version: 0.1
log: {{level: error, accesslog: {{disabled: true}}}}
storage:
  filesystem: {{rootdirectory: {self.root}}}
  delete: {{enabled: true}}
http:
  addr: 127.0.0.1:{self.port}
  tls: {{certificate: {self.cert}, key: {self.key}}}
""")
            cmd = ["docker-registry", "serve", cfg]
        return cmd, env

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)

    @property
    def url(self):
        return f"https://localhost:{self.port}"

def curl(reg, args):
    return f"curl -fsS --cacert {reg.ca} {args}"

def upload(reg, repo, path, digest, chunk=None):
    loc = sh(curl(reg, f"-X POST -D - -o /dev/null {reg.url}/v2/{repo}/blobs/uploads/") )
    loc = re.search(r"(?im)^location: (\S+)", loc).group(1)
    if not loc.startswith("http"):
        loc = reg.url + loc
    sep = "&" if "?" in loc else "?"
    if chunk is None:
        # -T streams the file; --data-binary @file would read all of it into curl's memory first.
        sh(curl(reg, f"-X PUT -H 'Content-Type: application/octet-stream' -T {path} '{loc}{sep}digest={digest}' -o /dev/null"))
        return
    size, off = os.path.getsize(path), 0
    while off < size:
        n = min(chunk, size - off)
        out = sh(f"dd if={path} bs=1M skip={off >> 20} count={n >> 20} status=none | " +
                 curl(reg, f"-X PATCH -D - -o /dev/null -H 'Content-Type: application/octet-stream' "
                           f"-H 'Content-Range: {off}-{off + n - 1}' -H 'Content-Length: {n}' -T - '{loc}'"))
        loc = re.search(r"(?im)^location: (\S+)", out).group(1)
        if not loc.startswith("http"):
            loc = reg.url + loc
        off += n
    sep = "&" if "?" in loc else "?"
    sh(curl(reg, f"-X PUT '{loc}{sep}digest={digest}' -o /dev/null"))

def h2load(reg, path, clients, h1, n, head=False):
    log = os.path.join(reg.work, "h2load.log")
    proto = "--h1" if h1 else ""
    method = "-m 1"
    hdr = f"-H 'Accept: {MANIFEST_TYPE}'"
    if head:
        hdr += " -H ':method: HEAD'" if not h1 else ""
    if os.path.exists(log):
        os.remove(log)
    cpu0 = cpu_seconds(reg.proc.pid)
    out = sh(f"h2load {proto} -n {n} -c {clients} {method} {hdr} --log-file={log} {reg.url}{path}")
    cpu = cpu_seconds(reg.proc.pid) - cpu0
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    ok = int(re.search(r"(\d+) succeeded", out).group(1))
    lat = sorted(int(l.split()[2]) for l in open(log) if l.strip() and l.split()[1].startswith("2"))
    p = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1000.0 if lat else float("nan")
    return {"rps": rps, "p50_ms": p(0.5), "p99_ms": p(0.99), "ok": ok, "cpu_us_per_req": cpu / max(ok, 1) * 1e6}

def ab_head(reg, path, clients, n):
    """HTTP/1.1 HEAD load with keep-alive (h2load cannot send HEAD over HTTP/1.1)."""
    cpu0 = cpu_seconds(reg.proc.pid)
    out = sh(f"ab -q -i -k -n {n} -c {clients} -H 'Accept: {MANIFEST_TYPE}' {reg.url.replace('localhost', '127.0.0.1')}{path} 2>&1")
    cpu = cpu_seconds(reg.proc.pid) - cpu0
    ok = n - int(re.search(r"Failed requests:\s+(\d+)", out).group(1)) - int((re.search(r"Non-2xx responses:\s+(\d+)", out) or [0, "0"])[1])
    pct = lambda q: float(re.search(rf"^\s*{q}%\s+(\d+)", out, re.M).group(1))
    return {"rps": float(re.search(r"Requests per second:\s+([\d.]+)", out).group(1)),
            "p50_ms": pct(50), "p99_ms": pct(99), "ok": ok, "cpu_us_per_req": cpu / max(ok, 1) * 1e6}

def gen_repos(root, repos, tags_repo_tags, start=0, tagged="tagged"):
    """Repositories and tags generated directly on disk in Distribution's layout (both registries read it)."""
    v2 = os.path.join(root, "docker/registry/v2")
    m = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(), "size": 2}, "layers": []}).encode()
    d = hashlib.sha256(m).hexdigest()
    bd = os.path.join(v2, "blobs/sha256", d[:2], d)
    os.makedirs(bd, exist_ok=True)
    open(os.path.join(bd, "data"), "wb").write(m)
    for i in range(start, repos):
        r = os.path.join(v2, f"repositories/gen/r{i:06d}")
        os.makedirs(os.path.join(r, "_layers"), exist_ok=True)
        os.makedirs(os.path.join(r, f"_manifests/revisions/sha256/{d}"), exist_ok=True)
        open(os.path.join(r, f"_manifests/revisions/sha256/{d}/link"), "w").write("sha256:" + d)
    r = os.path.join(v2, f"repositories/gen/{tagged}")
    os.makedirs(os.path.join(r, f"_manifests/revisions/sha256/{d}"), exist_ok=True)
    open(os.path.join(r, f"_manifests/revisions/sha256/{d}/link"), "w").write("sha256:" + d)
    for t in range(tags_repo_tags):
        td = os.path.join(r, f"_manifests/tags/t{t:06d}/current")
        os.makedirs(td, exist_ok=True)
        open(os.path.join(td, "link"), "w").write("sha256:" + d)

def make_image(out, seed=1):
    """An OCI image layout like a small application image: one 50 MiB layer and ten 1 MiB layers
    (uncompressed tars of random bytes, so no compressor's speed is measured)."""
    import io, tarfile
    rnd = __import__("random").Random(seed)
    blobs = os.path.join(out, "blobs/sha256"); os.makedirs(blobs, exist_ok=True)
    def put(data):
        d = hashlib.sha256(data).hexdigest()
        open(os.path.join(blobs, d), "wb").write(data)
        return {"digest": "sha256:" + d, "size": len(data)}
    layers = []
    for i, size in enumerate([50 << 20] + [1 << 20] * 10):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            info = tarfile.TarInfo(f"layer{i}.bin"); info.size = size
            t.addfile(info, io.BytesIO(rnd.randbytes(size)))
        layers.append(dict(put(buf.getvalue()), mediaType="application/vnd.oci.image.layer.v1.tar"))
    cfg = put(json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                          "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode())
    man = put(json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                          "config": dict(cfg, mediaType="application/vnd.oci.image.config.v1+json"), "layers": layers}).encode())
    json.dump({"schemaVersion": 2, "manifests": [dict(man, mediaType=MANIFEST_TYPE, annotations={"org.opencontainers.image.ref.name": "v1"})]},
              open(os.path.join(out, "index.json"), "w"))
    open(os.path.join(out, "oci-layout"), "w").write('{"imageLayoutVersion": "1.0.0"}')

def nginx_rounds(a, ng, ca, ng_rate, ng_cpu):
    """The 1 GiB download from nginx, `a.rounds` times: MB/s, and CPU seconds of master + workers."""
    workers = lambda: sum(cpu_seconds(int(c)) for c in sh(f"pgrep -P {ng.proc.pid} || true").split())
    for _ in range(a.rounds):
        c0 = cpu_seconds(ng.proc.pid) + workers()
        t = time.monotonic(); sh(f"curl -fsS --cacert {ca} --http1.1 -o /dev/null https://localhost:{ng.port}/blob.bin")
        ng_rate.append(a.blob_mib * 1.048576 / (time.monotonic() - t))
        ng_cpu.append(cpu_seconds(ng.proc.pid) + workers() - c0)

class Nginx:
    """nginx serving the blob file over TLS from loopback: the ceiling for a TLS download here."""
    def __init__(self, work, cert, key):
        self.port, self.work = free_port(), work
        conf = os.path.join(work, "nginx.conf")
        open(conf, "w").write(f"""daemon off; worker_processes 1; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{}}
http {{ access_log off; sendfile on;
  server {{ listen 127.0.0.1:{self.port} ssl; ssl_certificate {cert}; ssl_certificate_key {key}; root {work}; }} }}
""")
        self.proc = subprocess.Popen(["nginx", "-c", conf, "-e", f"{work}/nginx.err"])
        for _ in range(50):
            if subprocess.run(f"curl -fsk https://127.0.0.1:{self.port}/ -o /dev/null -w '%{{http_code}}'", shell=True,
                              capture_output=True, text=True).stdout not in ("", "000"):
                return
            time.sleep(0.1)
    def stop(self):
        self.proc.send_signal(signal.SIGQUIT); self.proc.wait(timeout=30)

def timed(cmd, reps=5):
    ts = []
    for _ in range(reps):
        t = time.monotonic(); sh(cmd); ts.append(time.monotonic() - t)
    return statistics.median(ts)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--blob-mib", type=int, default=1024)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--work", default=None)
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="registryd-bench.")
    os.makedirs(work, exist_ok=True)
    os.chmod(work, 0o755)  # nginx's workers (user nobody) read the blob from here
    cert, key, ca = (os.path.join(work, "tls", f) for f in ("tls.crt", "tls.key", "../ca/ca.crt"))
    env = dict(os.environ, REGISTRYD_TLS_CERTIFICATE=cert, REGISTRYD_TLS_KEY=key)
    subprocess.run([os.path.join(REPO, "target/release/registryd"), "cert", "init", "--ca-dir", os.path.join(work, "ca"),
                    "--hosts", "localhost"], env=env, check=True, capture_output=True)
    ca = os.path.join(work, "ca/ca.crt")
    regs = [Registry("registryd", work, cert, key), Registry("distribution", work, cert, key)]
    blob = os.path.join(work, "blob.bin")
    if not os.path.exists(blob) or os.path.getsize(blob) != a.blob_mib << 20:
        sh(f"head -c {a.blob_mib << 20} /dev/urandom > {blob}")
    os.chmod(blob, 0o644)
    sh(f"cat {blob} > /dev/null")
    digest = "sha256:" + sh(f"sha256sum {blob}").split()[0]
    results = {}   # scenario -> registry -> [values]
    def rec(scn, reg, v):
        results.setdefault(scn, {}).setdefault(reg.name, []).append(v)

    ceilings = {}
    t = time.monotonic(); sh(f"sha256sum {blob}"); ceilings["sha256sum MB/s"] = a.blob_mib * 1.048576 / (time.monotonic() - t)
    t = time.monotonic(); sh(f"dd if={blob} of={work}/ddtest bs=4M conv=fdatasync status=none"); ceilings["write+fdatasync MB/s"] = a.blob_mib * 1.048576 / (time.monotonic() - t)
    os.remove(f"{work}/ddtest")
    o = sh("openssl speed -evp aes-128-gcm -bytes 16384 -seconds 2 2>/dev/null | tail -1")
    ceilings["aes-128-gcm 16KiB MB/s"] = float(o.split()[-1].rstrip("k")) / 1000
    if shutil.which("nginx"):
        ng = Nginx(work, cert, key)
        ng_cpu, ng_rate = [], []
        try:
            nginx_rounds(a, ng, ca, ng_rate, ng_cpu)
        finally:
            ng.stop()
        ceilings["nginx TLS pull HTTP/1.1 MB/s"] = statistics.median(ng_rate)
        ceilings["nginx TLS pull CPU s/GB"] = statistics.median(ng_cpu) / (a.blob_mib / 1024)
    certs = os.path.join(work, "certs.d")  # only the CA: skopeo reads a *.key there as a client key
    os.makedirs(certs, exist_ok=True)
    shutil.copy(ca, os.path.join(certs, "ca.crt"))
    image = os.path.join(work, "image")
    if not os.path.exists(os.path.join(image, "index.json")):
        make_image(image)
    try:
        run_scenarios(a, work, regs, ca, certs, image, blob, digest, rec)
    finally:
        for r in regs:
            if getattr(r, "proc", None) and r.proc.poll() is None:
                r.stop()
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    report(a, results, ceilings)

def run_scenarios(a, work, regs, ca, certs, image, blob, digest, rec):
    for r in regs:
        r.ca = ca
        r.start()
        gen_repos(r.root, 1000, 5000)
        time.sleep(1)
        rec("idle RSS MiB", r, rss_kib(r.proc.pid) / 1024)
        rec("idle PSS MiB", r, pss_kib(r.proc.pid) / 1024)
    for rnd in range(a.rounds):
        for r in regs:
            repo = f"bench/r{rnd}"
            t = time.monotonic(); upload(r, repo + "m", blob, digest); dt = time.monotonic() - t
            rec("push 1 GiB monolithic MB/s", r, a.blob_mib * 1.048576 / dt)
            t = time.monotonic(); upload(r, repo + "c", blob, digest, chunk=16 << 20); dt = time.monotonic() - t
            rec("push 1 GiB chunked 16 MiB MB/s", r, a.blob_mib * 1.048576 / dt)
            burl = f"{r.url}/v2/{repo}m/blobs/{digest}"
            reset_peak(r.proc.pid)
            # registryd checks a blob against its digest the first time it serves it (one sha256
            # pass): that first pull is reported apart, the steady-state pulls after it.
            cpu0 = cpu_seconds(r.proc.pid)
            t = time.monotonic(); sh(curl(r, f"--http1.1 -o /dev/null {burl}")); dt = time.monotonic() - t
            if rnd == 0:
                rec("first pull 1 GiB HTTP/1.1 MB/s", r, a.blob_mib * 1.048576 / dt)
                rec("first pull CPU s/GB", r, (cpu_seconds(r.proc.pid) - cpu0) / (a.blob_mib / 1024))
            for proto in ("1.1", "2"):
                cpu0 = cpu_seconds(r.proc.pid)
                t = time.monotonic(); sh(curl(r, f"--http{proto} -o /dev/null {burl}")); dt = time.monotonic() - t
                rec(f"pull 1 GiB HTTP/{proto} MB/s", r, a.blob_mib * 1.048576 / dt)
                rec(f"pull HTTP/{proto} CPU s/GB", r, (cpu_seconds(r.proc.pid) - cpu0) / (a.blob_mib / 1024))
            t = time.monotonic()
            ps = [subprocess.Popen(curl(r, f"--http1.1 -o /dev/null {burl}"), shell=True) for _ in range(8)]
            for p in ps: p.wait()
            rec("pull 8 clients aggregate MB/s", r, 8 * a.blob_mib * 1.048576 / (time.monotonic() - t))
            rec("peak RSS 8 pulls MiB", r, rss_kib(r.proc.pid, "VmHWM") / 1024)
            # a manifest to GET
            cfg = os.path.join(work, "cfg.json"); open(cfg, "w").write("{}")
            cd = "sha256:" + hashlib.sha256(b"{}").hexdigest()
            upload(r, repo + "m", cfg, cd)  # POST + PUT: Distribution 2.8 has no single-POST upload
            man = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                              "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": 2},
                              "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": a.blob_mib << 20}]})
            mf = os.path.join(work, "m.json"); open(mf, "w").write(man)
            sh(curl(r, f"-X PUT -H 'Content-Type: {MANIFEST_TYPE}' --data-binary @{mf} {r.url}/v2/{repo}m/manifests/v1 -o /dev/null"))
            reset_peak(r.proc.pid)
            for h1 in (True, False):
                for c in (16, 64):
                    x = h2load(r, f"/v2/{repo}m/manifests/v1", c, h1, a.requests)
                    tag = f"{'HTTP/1.1' if h1 else 'HTTP/2'} c={c}"
                    rec(f"manifest GET {tag} req/s", r, x["rps"])
                    rec(f"manifest GET {tag} p99 ms", r, x["p99_ms"])
                    rec(f"manifest GET {tag} CPU us/req", r, x["cpu_us_per_req"])
            for c in (16, 64):
                x = h2load(r, f"/v2/{repo}m/blobs/{cd}", c, False, a.requests, head=True)
                rec(f"blob HEAD HTTP/2 c={c} req/s", r, x["rps"])
                rec(f"blob HEAD HTTP/2 c={c} p99 ms", r, x["p99_ms"])
                rec(f"blob HEAD HTTP/2 c={c} CPU us/req", r, x["cpu_us_per_req"])
                x = ab_head(r, f"/v2/{repo}m/blobs/{cd}", c, a.requests)
                rec(f"blob HEAD HTTP/1.1 c={c} req/s", r, x["rps"])
                rec(f"blob HEAD HTTP/1.1 c={c} CPU us/req", r, x["cpu_us_per_req"])
            rec("peak RSS manifest load MiB", r, rss_kib(r.proc.pid, "VmHWM") / 1024)
            # A realistic image with a real client: skopeo push (OCI layout -> registry) and pull back.
            t = time.monotonic()
            sh(f"skopeo --insecure-policy copy -q --dest-cert-dir {certs} oci:{image}:v1 docker://localhost:{r.port}/{repo}/app:v1")
            rec("skopeo push 60 MiB image s", r, time.monotonic() - t)
            out = os.path.join(work, "pulled"); shutil.rmtree(out, ignore_errors=True)
            t = time.monotonic()
            sh(f"skopeo --insecure-policy copy -q --src-cert-dir {certs} docker://localhost:{r.port}/{repo}/app:v1 dir:{out}")
            rec("skopeo pull 60 MiB image s", r, time.monotonic() - t)
            # One persistent HTTP/2 connection, so the server's work is measured, not curl's start-up.
            rec("catalog first page (n=1000) of 1000 repos p50 ms", r, h2load(r, "/v2/_catalog?n=1000", 1, False, 200)["p50_ms"])
            rec("tags list 5000 tags p50 ms", r, h2load(r, "/v2/gen/tagged/tags/list", 1, False, 200)["p50_ms"])
            print(f"round {rnd + 1} {r.name} done", file=sys.stderr)
    # Growth: the same listings and lookups with ten and a hundred times the repositories and tags,
    # generated on disk in Distribution's layout (both registries read it).
    def listing(r, path, label, n):
        x = h2load(r, path, 1, False, n)
        if x["ok"] != n:
            raise SystemExit(f"{r.name}: {path} failed")
        rec(label, r, x["p50_ms"])
    def count(r, path, key):
        return len(json.loads(sh(curl(r, f"'{r.url}{path}'")))[key])
    def walk_catalog(r):
        """Every page of the catalog, n=1000 (Distribution's maximum), on one keep-alive connection."""
        import http.client, ssl
        conn = http.client.HTTPSConnection("localhost", r.port, context=ssl.create_default_context(cafile=ca))
        path, n = "/v2/_catalog?n=1000", 0
        t = time.monotonic()
        while path:
            conn.request("GET", path); resp = conn.getresponse(); body = resp.read()
            if resp.status != 200:
                raise SystemExit(f"{r.name}: {path} answered {resp.status}")
            n += len(json.loads(body)["repositories"])
            link = resp.getheader("Link")
            path = re.match(r"<([^>]+)>", link).group(1) if link else None
        conn.close()
        return n, (time.monotonic() - t) * 1000
    for r in regs:
        gen_repos(r.root, 10000, 50000, start=1000, tagged="tagged50k")
    time.sleep(3.5)  # listings of directories changed in the last 3 s are not kept (see storage/listing.rs)
    for rnd in range(a.rounds):
        for r in regs:
            listing(r, "/v2/_catalog?n=1000", "catalog first page (n=1000) of 10000 repos p50 ms", 50)
            listing(r, "/v2/gen/tagged50k/tags/list", "tags list 50000 tags p50 ms", 50)
            n, ms = walk_catalog(r)
            if n < 10000:
                raise SystemExit(f"{r.name}: catalog walk found {n} repositories, not 10000+")
            rec("catalog all pages of 10000 repos ms", r, ms)
    for r in regs:
        if count(r, "/v2/gen/tagged50k/tags/list", "tags") != 50000:
            print(f"warning: {r.name} did not list 50000 tags", file=sys.stderr)
        gen_repos(r.root, 100000, 0, start=10000, tagged="empty")
    time.sleep(3.5)
    for rnd in range(a.rounds):
        for r in regs:
            listing(r, "/v2/_catalog?n=1000", "catalog first page (n=1000) of 100000 repos p50 ms", 5)
            listing(r, "/v2/_catalog?n=1000&last=gen/r050000", "catalog middle page (n=1000) of 100000 repos p50 ms", 5)
            x = h2load(r, "/v2/bench/r0m/manifests/v1", 64, True, a.requests)
            rec("manifest GET HTTP/1.1 c=64, 100000 repos req/s", r, x["rps"])
            rec("manifest GET HTTP/1.1 c=64, 100000 repos p99 ms", r, x["p99_ms"])

def report(a, results, ceilings):
    lower_better = lambda s: s.endswith(" ms") or s.endswith(" s") or "RSS" in s or "PSS" in s or "CPU" in s
    table = []
    for scn, per in results.items():
        a_, b_ = per.get("registryd", []), per.get("distribution", [])
        if not a_ or not b_:
            continue
        ma, mb = statistics.median(a_), statistics.median(b_)
        ratio = (mb / ma if ma else float("inf")) if lower_better(scn) else (ma / mb if mb else float("inf"))
        table.append({"scenario": scn, "registryd": {"median": ma, "min": min(a_), "max": max(a_)},
                      "distribution": {"median": mb, "min": min(b_), "max": max(b_)}, "advantage": ratio})
    machine = {"cpu": sh("nproc").strip() + " cores, " + (re.search(r"model name\s*: (.*)", open("/proc/cpuinfo").read()) or [None, "?"])[1],
               "mem": sh("free -g | awk '/Mem/{print $2}'").strip() + " GiB", "kernel": platform.release(),
               "date": time.strftime("%Y-%m-%d"), "rounds": a.rounds}
    med = lambda scn: statistics.median(results[scn]["registryd"])
    fractions = {"push 1 GiB monolithic / min(sha256, write+fdatasync)":
                 med("push 1 GiB monolithic MB/s") / min(ceilings["sha256sum MB/s"], ceilings["write+fdatasync MB/s"])}
    if "nginx TLS pull HTTP/1.1 MB/s" in ceilings:
        fractions["pull 1 GiB HTTP/1.1 / nginx TLS"] = med("pull 1 GiB HTTP/1.1 MB/s") / ceilings["nginx TLS pull HTTP/1.1 MB/s"]
        fractions["nginx CPU per GB / registryd CPU per GB (HTTP/1.1)"] = ceilings["nginx TLS pull CPU s/GB"] / med("pull HTTP/1.1 CPU s/GB")
    out = {"machine": machine, "ceilings": ceilings, "fractions": fractions, "results": table}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    json.dump(out, open(os.path.join(HERE, "results/latest.json"), "w"), indent=1)
    fmt = lambda x: f"{x:.1f}" if x < 1000 else f"{x:.0f}"
    print(f"\nmachine: {machine}\nceilings: " + ", ".join(f"{k} {fmt(v)}" for k, v in ceilings.items()))
    print("registryd as a fraction of its ceiling: " + ", ".join(f"{k} {v:.0%}" for k, v in fractions.items()))
    print(f"{'scenario':45} {'registryd median (min-max)':30} {'Distribution median (min-max)':32} advantage")
    for t in table:
        ra, rb = t["registryd"], t["distribution"]
        print(f"{t['scenario']:45} {fmt(ra['median']):>8} ({fmt(ra['min'])}-{fmt(ra['max'])}){'':8} "
              f"{fmt(rb['median']):>8} ({fmt(rb['min'])}-{fmt(rb['max'])}){'':10} {t['advantage']:.2f}x")
    try:
        import matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(10, 0.35 * len(table) + 1))
        ax.barh([t["scenario"] for t in table], [t["advantage"] for t in table])
        ax.axvline(1.0, color="k", lw=0.8); ax.set_xscale("log"); ax.set_xlabel("registryd advantage over Distribution 2.8.2 (x, log)")
        fig.tight_layout(); fig.savefig(os.path.join(HERE, "results/latest.png"), dpi=100)
    except ImportError:
        print("(matplotlib missing: no chart)", file=sys.stderr)

if __name__ == "__main__":
    main()
