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
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=self.log, env=env)
        for _ in range(100):
            try:
                sh(f"curl -fs --cacert {self.ca} https://localhost:{self.port}/v2/ -o /dev/null")
                return
            except subprocess.CalledProcessError:
                time.sleep(0.1)
        raise SystemExit(f"{self.name} did not start, see {self.log.name}")

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

def gen_repos(root, repos, tags_repo_tags):
    """Repositories and tags generated directly on disk in Distribution's layout (both registries read it)."""
    v2 = os.path.join(root, "docker/registry/v2")
    m = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                               "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(), "size": 2}, "layers": []}).encode()
    d = hashlib.sha256(m).hexdigest()
    bd = os.path.join(v2, "blobs/sha256", d[:2], d)
    os.makedirs(bd, exist_ok=True)
    open(os.path.join(bd, "data"), "wb").write(m)
    for i in range(repos):
        r = os.path.join(v2, f"repositories/gen/r{i:06d}")
        os.makedirs(os.path.join(r, "_layers"), exist_ok=True)
        os.makedirs(os.path.join(r, f"_manifests/revisions/sha256/{d}"), exist_ok=True)
        open(os.path.join(r, f"_manifests/revisions/sha256/{d}/link"), "w").write("sha256:" + d)
    r = os.path.join(v2, "repositories/gen/tagged")
    os.makedirs(os.path.join(r, f"_manifests/revisions/sha256/{d}"), exist_ok=True)
    open(os.path.join(r, f"_manifests/revisions/sha256/{d}/link"), "w").write("sha256:" + d)
    for t in range(tags_repo_tags):
        td = os.path.join(r, f"_manifests/tags/t{t:06d}/current")
        os.makedirs(td, exist_ok=True)
        open(os.path.join(td, "link"), "w").write("sha256:" + d)

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
    cert, key, ca = (os.path.join(work, "tls", f) for f in ("tls.crt", "tls.key", "../ca/ca.crt"))
    env = dict(os.environ, REGISTRYD_TLS_CERTIFICATE=cert, REGISTRYD_TLS_KEY=key)
    subprocess.run([os.path.join(REPO, "target/release/registryd"), "cert", "init", "--ca-dir", os.path.join(work, "ca"),
                    "--hosts", "localhost"], env=env, check=True, capture_output=True)
    ca = os.path.join(work, "ca/ca.crt")
    regs = [Registry("registryd", work, cert, key), Registry("distribution", work, cert, key)]
    blob = os.path.join(work, "blob.bin")
    if not os.path.exists(blob) or os.path.getsize(blob) != a.blob_mib << 20:
        sh(f"head -c {a.blob_mib << 20} /dev/urandom > {blob}")
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
    for r in regs:
        r.ca = ca
        r.start()
        gen_repos(r.root, 1000, 5000)
        time.sleep(1)
        rec("idle RSS MiB", r, rss_kib(r.proc.pid) / 1024)
    for rnd in range(a.rounds):
        for r in regs:
            repo = f"bench/r{rnd}"
            t = time.monotonic(); upload(r, repo + "m", blob, digest); dt = time.monotonic() - t
            rec("push 1 GiB monolithic MB/s", r, a.blob_mib * 1.048576 / dt)
            t = time.monotonic(); upload(r, repo + "c", blob, digest, chunk=16 << 20); dt = time.monotonic() - t
            rec("push 1 GiB chunked 16 MiB MB/s", r, a.blob_mib * 1.048576 / dt)
            burl = f"{r.url}/v2/{repo}m/blobs/{digest}"
            reset_peak(r.proc.pid)
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
            rec("peak RSS manifest load MiB", r, rss_kib(r.proc.pid, "VmHWM") / 1024)
            # One persistent HTTP/2 connection, so the server's work is measured, not curl's start-up.
            rec("catalog 1000 repos p50 ms", r, h2load(r, "/v2/_catalog?n=1000", 1, False, 200)["p50_ms"])
            rec("tags list 5000 tags p50 ms", r, h2load(r, "/v2/gen/tagged/tags/list", 1, False, 200)["p50_ms"])
            print(f"round {rnd + 1} {r.name} done", file=sys.stderr)
    for r in regs:
        r.stop()
    lower_better = lambda s: s.endswith(" ms") or "RSS" in s or "CPU" in s
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
    out = {"machine": machine, "ceilings": ceilings, "results": table}
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    json.dump(out, open(os.path.join(HERE, "results/latest.json"), "w"), indent=1)
    fmt = lambda x: f"{x:.1f}" if x < 1000 else f"{x:.0f}"
    print(f"\nmachine: {machine}\nceilings: " + ", ".join(f"{k} {fmt(v)}" for k, v in ceilings.items()))
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
