#!/usr/bin/env python3
"""registryd's S3 driver vs Distribution 2.8.2's S3 driver, on one Garage cluster, in one run.

Run by bench/s3.sh, which brings up the three-node Garage cluster of the tests (replication factor
3, on 127.0.0.1) and passes it in GARAGE_* variables. Both registries serve TLS on 127.0.0.1 with the
same certificate and store in the same bucket under different prefixes, both through Garage node 1.
Every scenario runs against each in alternation for --rounds rounds; the table shows median and
min-max and registryd's advantage (> 1: registryd better). Results: bench/results/s3.json. A
benchmark: it asserts nothing.
"""
import argparse, hashlib, json, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402
from bench import MANIFEST_TYPE, cpu_seconds, curl, h2load, reset_peak, rss_kib, sh, upload  # noqa: E402

G = {k: os.environ[k] for k in ("GARAGE_ENDPOINT", "GARAGE_KEY_ID", "GARAGE_SECRET", "GARAGE_BUCKET")}

class S3Registry(bench.Registry):
    def command(self):
        env = dict(os.environ)
        env.pop("AWS_CA_BUNDLE", None)  # Distribution's AWS SDK panics on it with its own transport
        if self.name == "registryd":
            env.update(REGISTRYD_TLS_CERTIFICATE=self.cert, REGISTRYD_TLS_KEY=self.key,
                       REGISTRYD_NODE_HOSTS_FILE=os.path.join(self.work, "hosts"), REGISTRYD_LOG_LEVEL="warn",
                       REGISTRYD_STORAGE_DRIVER="s3", REGISTRYD_S3_ENDPOINT=G["GARAGE_ENDPOINT"],
                       REGISTRYD_S3_REGION="garage", REGISTRYD_S3_BUCKET=G["GARAGE_BUCKET"],
                       REGISTRYD_S3_PATH_STYLE="true", REGISTRYD_S3_PREFIX="bench-registryd",
                       REGISTRYD_S3_ACCESS_KEY_ID=G["GARAGE_KEY_ID"], REGISTRYD_S3_SECRET_ACCESS_KEY=G["GARAGE_SECRET"])
            open(os.path.join(self.work, "hosts"), "a").close()
            cmd = [os.path.join(bench.REPO, "target/release/registryd"), "serve", "--listen", f"127.0.0.1:{self.port}",
                   "--storage", os.path.join(self.work, "unused")]
        else:
            cfg = os.path.join(self.work, "distribution-s3.yml")
            open(cfg, "w").write(f"""version: 0.1
log: {{level: error, accesslog: {{disabled: true}}}}
storage:
  s3:
    accesskey: {G["GARAGE_KEY_ID"]}
    secretkey: {G["GARAGE_SECRET"]}
    region: garage
    regionendpoint: {G["GARAGE_ENDPOINT"]}
    bucket: {G["GARAGE_BUCKET"]}
    rootdirectory: /bench-distribution
    secure: false
    v4auth: true
  delete: {{enabled: true}}
  redirect: {{disable: true}}
http:
  addr: 127.0.0.1:{self.port}
  tls: {{certificate: {self.cert}, key: {self.key}}}
""")
            cmd = ["docker-registry", "serve", cfg]
        return cmd, env

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--blob-mib", type=int, default=256)
    ap.add_argument("--requests", type=int, default=5000)
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="registryd-bench-s3.")
    cert, key = (os.path.join(work, "tls", f) for f in ("tls.crt", "tls.key"))
    env = dict(os.environ, REGISTRYD_TLS_CERTIFICATE=cert, REGISTRYD_TLS_KEY=key)
    subprocess.run([os.path.join(bench.REPO, "target/release/registryd"), "cert", "init", "--ca-dir", os.path.join(work, "ca"),
                    "--hosts", "localhost"], env=env, check=True, capture_output=True)
    ca = os.path.join(work, "ca/ca.crt")
    certs = os.path.join(work, "certs.d"); os.makedirs(certs)
    shutil.copy(ca, os.path.join(certs, "ca.crt"))
    blob = os.path.join(work, "blob.bin")
    sh(f"head -c {a.blob_mib << 20} /dev/urandom > {blob}")
    digest = "sha256:" + sh(f"sha256sum {blob}").split()[0]
    image = os.path.join(work, "image"); bench.make_image(image)
    mib = a.blob_mib * 1.048576
    results = {}
    def rec(scn, reg, v):
        results.setdefault(scn, {}).setdefault(reg.name, []).append(v)
    regs = [S3Registry("registryd", work, cert, key), S3Registry("distribution", work, cert, key)]
    try:
        for r in regs:
            r.ca = ca
            r.start()
            time.sleep(1)
            rec("idle RSS MiB", r, rss_kib(r.proc.pid) / 1024)
        for rnd in range(a.rounds):
            for r in regs:
                repo = f"bench/r{rnd}"
                t = time.monotonic(); upload(r, repo + "m", blob, digest)
                rec(f"push {a.blob_mib} MiB monolithic MB/s", r, mib / (time.monotonic() - t))
                t = time.monotonic(); upload(r, repo + "c", blob, digest, chunk=16 << 20)
                rec(f"push {a.blob_mib} MiB chunked 16 MiB MB/s", r, mib / (time.monotonic() - t))
                burl = f"{r.url}/v2/{repo}m/blobs/{digest}"
                reset_peak(r.proc.pid)
                cpu0 = cpu_seconds(r.proc.pid)
                t = time.monotonic(); sh(curl(r, f"--http1.1 -o /dev/null {burl}"))
                rec(f"pull {a.blob_mib} MiB HTTP/1.1 MB/s", r, mib / (time.monotonic() - t))
                rec("pull CPU s/GB", r, (cpu_seconds(r.proc.pid) - cpu0) / (a.blob_mib / 1024))
                t = time.monotonic()
                ps = [subprocess.Popen(curl(r, f"--http1.1 -o /dev/null {burl}"), shell=True) for _ in range(4)]
                for p in ps: p.wait()
                rec("pull 4 clients aggregate MB/s", r, 4 * mib / (time.monotonic() - t))
                rec("peak RSS pulls MiB", r, rss_kib(r.proc.pid, "VmHWM") / 1024)
                cfg = os.path.join(work, "cfg.json"); open(cfg, "w").write("{}")
                cd = "sha256:" + hashlib.sha256(b"{}").hexdigest()
                upload(r, repo + "m", cfg, cd)
                man = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPE,
                                  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": 2},
                                  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest,
                                              "size": a.blob_mib << 20}]})
                mf = os.path.join(work, "m.json"); open(mf, "w").write(man)
                t = time.monotonic()
                sh(curl(r, f"-X PUT -H 'Content-Type: {MANIFEST_TYPE}' --data-binary @{mf} {r.url}/v2/{repo}m/manifests/v1 -o /dev/null"))
                rec("manifest PUT ms", r, (time.monotonic() - t) * 1000)
                for h1 in (True, False):
                    x = h2load(r, f"/v2/{repo}m/manifests/v1", 16, h1, a.requests)
                    tag = "HTTP/1.1" if h1 else "HTTP/2"
                    rec(f"manifest GET by tag {tag} c=16 req/s", r, x["rps"])
                    rec(f"manifest GET by tag {tag} c=16 p99 ms", r, x["p99_ms"])
                x = h2load(r, f"/v2/{repo}m/blobs/{cd}", 16, False, a.requests, head=True)
                rec("blob HEAD HTTP/2 c=16 req/s", r, x["rps"])
                t = time.monotonic()
                sh(f"skopeo --insecure-policy copy -q --dest-cert-dir {certs} oci:{image}:v1 docker://localhost:{r.port}/{repo}/app:v1")
                rec("skopeo push 60 MiB image s", r, time.monotonic() - t)
                out = os.path.join(work, "pulled"); shutil.rmtree(out, ignore_errors=True)
                t = time.monotonic()
                sh(f"skopeo --insecure-policy copy -q --src-cert-dir {certs} docker://localhost:{r.port}/{repo}/app:v1 dir:{out}")
                rec("skopeo pull 60 MiB image s", r, time.monotonic() - t)
                rec("tags list p50 ms", r, h2load(r, f"/v2/{repo}/app/tags/list", 1, False, 100)["p50_ms"])
                print(f"round {rnd + 1} {r.name} done", file=sys.stderr)
    finally:
        for r in regs:
            if getattr(r, "proc", None) and r.proc.poll() is None:
                r.stop()
        shutil.rmtree(work, ignore_errors=True)
    lower_better = lambda s: s.endswith(" ms") or s.endswith(" s") or "RSS" in s or "CPU" in s
    table = []
    for scn, per in results.items():
        ra, rb = per.get("registryd", []), per.get("distribution", [])
        if not ra or not rb:
            continue
        ma, mb = statistics.median(ra), statistics.median(rb)
        adv = (mb / ma if ma else float("inf")) if lower_better(scn) else (ma / mb if mb else float("inf"))
        table.append({"scenario": scn, "registryd": {"median": ma, "min": min(ra), "max": max(ra)},
                      "distribution": {"median": mb, "min": min(rb), "max": max(rb)}, "advantage": adv})
    os.makedirs(os.path.join(bench.HERE, "results"), exist_ok=True)
    json.dump({"store": "Garage 2.5.0, 3 nodes on 127.0.0.1, replication factor 3", "rounds": a.rounds,
               "date": time.strftime("%Y-%m-%d"), "results": table},
              open(os.path.join(bench.HERE, "results/s3.json"), "w"), indent=1)
    fmt = lambda x: f"{x:.1f}" if x < 1000 else f"{x:.0f}"
    print(f"\nS3 drivers on Garage (3 nodes, replication 3), {a.rounds} rounds")
    print(f"{'scenario':42} {'registryd median (min-max)':30} {'Distribution median (min-max)':32} advantage")
    for t in table:
        ra, rb = t["registryd"], t["distribution"]
        print(f"{t['scenario']:42} {fmt(ra['median']):>8} ({fmt(ra['min'])}-{fmt(ra['max'])}){'':8} "
              f"{fmt(rb['median']):>8} ({fmt(rb['min'])}-{fmt(rb['max'])}){'':10} {t['advantage']:.2f}x")

if __name__ == "__main__":
    main()
