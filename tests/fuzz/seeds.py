#!/usr/bin/env python3
"""Writes the seed corpora under tests/fuzz/corpus/<target>/seed-*, from the project's fixtures:
mkimage.py's images (the system tests' images), the YAML of import-config.sh and Debian's
Distribution config, registryd's default config, the paths, names, headers and bodies of the unit
tests. Seeds stay small (a few KiB each, the layer of a test image included), so the corpus is
committed. Run it again after a fixture changes; files fuzzing added beside the seeds stay.

Usage: tests/fuzz/seeds.py   (from anywhere; needs python3 and htpasswd from apache2-utils)
"""
import gzip, io, json, os, re, subprocess, sys, tarfile, tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CORPUS = os.path.join(HERE, "corpus")
RAW = b"\x00"  # the first byte of a target that has a raw mode and a built mode: even is raw


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "seed-" + name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


def read(*p):
    with open(os.path.join(ROOT, *p), "rb") as f:
        return f.read()


D = "sha256:" + "a" * 64

# route: the paths of src/http/route.rs's tests and the hostile-input table.
for i, p in enumerate([
    "/v2/", "/v2", "/v2/_catalog", "/healthz", "/readyz", "/auth/token", "/metrics", "/ui/",
    "/v2/library/alpine/manifests/latest", f"/v2/a/b/c/manifests/{D}", f"/v2/a/blobs/{D}",
    "/v2/a/blobs/uploads/", "/v2/a/blobs/uploads", "/v2/a/b/blobs/uploads",
    "/v2/a/blobs/uploads/6ba7b810-9dad-11d1-80b4-00c04fd430c8", "/v2/a/tags/list",
    f"/v2/a/referrers/{D}", "/v2/manifests/manifests/manifests", "/v2/a/manifests/sha256%3Aab",
    "/v2/A/manifests/x", "/v2/a//b/tags/list", "/v2/a/manifests/%2e%2e",
]):
    put("route", f"{i:02}", p)

# reference: names, tags, digests (src/registry tests).
for i, s in enumerate([
    "library/alpine", "a", "a.b_c__d---e/f", "x" * 255, "latest", "v1.2.3-rc_1", "_x", D,
    "sha512:" + "0" * 128, "sha256:ABC", "md5:abc", "a/", "-a", "a..b",
]):
    put("reference", f"{i:02}", RAW + s.encode())

# manifest, archive: the system tests' images (mkimage.py), single- and multi-arch.
with tempfile.TemporaryDirectory() as tmp:
    mk = os.path.join(ROOT, "tests/system/lib/mkimage.py")
    for name, extra in [("single", []), ("multi", ["--arch", "amd64", "--arch", "arm64"])]:
        out = os.path.join(tmp, name)
        subprocess.run([sys.executable, mk, out, "v1", "--seed", "fuzz", "--layer-bytes", "64"] + extra,
                       check=True, stdout=subprocess.DEVNULL)
        blobs = os.path.join(out, "blobs", "sha256")
        for b in sorted(os.listdir(blobs)):
            data = open(os.path.join(blobs, b), "rb").read()
            doc = json.loads(data) if data[:1] == b"{" else None
            if doc and "mediaType" in doc:
                put("manifest", f"{name}-{b[:8]}", doc["mediaType"].encode() + b"\n" + data)
                put("manifest", f"{name}-{b[:8]}-noheader", data)
        # The layout tarred as `docker save` (Docker 25+) writes it, plain and gzip'ed.
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
            for f in ["oci-layout"] + [f"blobs/sha256/{b}" for b in sorted(os.listdir(blobs))] + ["index.json"]:
                t.add(os.path.join(out, f), arcname=f)
        put("archive", f"oci-{name}.tar", RAW + buf.getvalue())
        put("archive", f"oci-{name}.tar.gz", RAW + gzip.compress(buf.getvalue(), mtime=0))
    # Docker's legacy `docker save`: manifest.json, the config and layer.tar files.
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as t:
        def add(name, data):
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        add("abc/layer.tar", b"hello\n")
        add("c0ffee.json", b'{"architecture":"amd64","os":"linux"}')
        add("manifest.json", json.dumps([{"Config": "c0ffee.json", "RepoTags": ["team/app:v1"],
                                          "Layers": ["abc/layer.tar"]}]).encode())
    put("archive", "docker-legacy.tar", RAW + buf.getvalue())
put("manifest", "index-docker", 'application/vnd.docker.distribution.manifest.list.v2+json\n'
    '{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}')
put("manifest", "artifact", '\n{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",'
    f'"artifactType":"x/y","config":{{"mediaType":"x","digest":"{D}","size":2}},"layers":[],'
    f'"subject":{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{D}","size":9}}}}')

# hosts: a Debian hosts file, with our block, and damaged ones (src/node/hosts tests).
BEGIN = "# BEGIN registryd managed block (do not edit; see node.hostnames)"
END = "# END registryd managed block"
base = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
block = f"{BEGIN}\n169.254.254.254\tregistry.home\n{END}\n"
for i, t in enumerate([
    base, base + block, block + base, base + block.replace("\n", "\r\n"), base + BEGIN + "\n",
    END + "\n" + base, "# " + BEGIN + "\n" + base, base.rstrip("\n"), base + block + block, "",
]):
    put("hosts", f"{i:02}", RAW + t.encode())

# htpasswd: as htpasswd -B writes it (apache2-utils, like tests/system/auth.sh), and refused kinds.
ht = subprocess.run(["htpasswd", "-Bbn", "-C", "5", "ci", "ci-pass"], check=True,
                    capture_output=True).stdout.decode().strip()
put("htpasswd", "bcrypt", RAW + f"# users\n{ht}\nbob:{ht.split(':', 1)[1]}\n".encode())
put("htpasswd", "md5", RAW + b"alice:$apr1$x$y\n")
put("htpasswd", "crlf", RAW + f"{ht}\r\n\r\n".encode())

# config: the shipped defaults (etc/registryd/config.toml) and a small one, with an environment.
put("config", "defaults", read("etc/registryd/config.toml"))
put("config", "small", '[server]\nlisten = ["127.0.0.1:5000"]\n[storage]\nroot = "/var/lib/registry"\n'
    '[[retention]]\nrepositories = "team/*"\nkeep_last = 3\n\0SERVER_PLAIN_HTTP=true\nLOG_LEVEL=debug\n')

# import_config: the YAML of import-config.sh and Debian's own /etc/docker/registry/config.yml.
sh = read("tests/system/import-config.sh").decode()
for i, y in enumerate(re.findall(r"<<YML\n(.*?)\nYML\n", sh, re.S)):
    put("import_config", f"import-config-sh-{i}", y.replace("$WORK", "/tmp/w").replace("$P", "5000")
        .replace("$UI", "http://ui.example:8080"))
if os.path.exists("/etc/docker/registry/config.yml"):
    put("import_config", "debian", open("/etc/docker/registry/config.yml", "rb").read())

# s3_xml: answers as S3 and Garage send them (shapes from rusty-s3's tests and AWS's docs).
put("s3_xml", "list", f"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>test</Name><Prefix>docker/</Prefix>
<KeyCount>2</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>true</IsTruncated>
<Contents><Key>docker/registry/v2/blobs/sha256/aa/{"a" * 64}/data</Key><LastModified>2026-11-23T02:10:00.500Z</LastModified>
<ETag>&quot;abc&quot;</ETag><Size>434234</Size><StorageClass>STANDARD</StorageClass></Contents>
<CommonPrefixes><Prefix>docker/registry/v2/repositories/</Prefix></CommonPrefixes>
<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken></ListBucketResult>""")
put("s3_xml", "create", '<?xml version="1.0" encoding="UTF-8"?>\n<InitiateMultipartUploadResult '
    'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>b</Bucket><Key>k</Key>'
    '<UploadId>VXBsb2FkIElE</UploadId></InitiateMultipartUploadResult>')
put("s3_xml", "copy", '<CopyPartResult><LastModified>2026-01-01T00:00:00Z</LastModified>'
    '<ETag>&quot;9b2cf535f27731c974343645a3985328&quot;</ETag></CopyPartResult>')
put("s3_xml", "error", '<?xml version="1.0"?><Error><Code>SlowDown</Code><Message>Please reduce '
    'your request rate.</Message></Error>')

# challenge: upstream WWW-Authenticate headers (src/proxy/upstream.rs tests, Docker Hub's).
for i, h in enumerate([
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"',
    'Basic realm="Registry Realm"', 'Bearer realm=https://x/t, service="a\\"b"', "Bearer garbage",
]):
    put("challenge", f"{i:02}", RAW + h.encode())
