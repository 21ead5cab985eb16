#!/usr/bin/env python3
"""Builds OCI image layouts for the system tests, so no image comes from the internet.

Usage: mkimage.py OUT_DIR TAG [--arch amd64 [--arch arm64]] [--layer-bytes N] [--seed S]
With one --arch: a plain image manifest tagged TAG. With several: an OCI index over one image per
architecture. Layers are real gzip'ed tar files (Docker extracts them), configs carry diff_ids.
"""
import argparse, gzip, hashlib, io, json, os, tarfile, time

def put_blob(out, data):
    d = hashlib.sha256(data).hexdigest()
    p = os.path.join(out, "blobs", "sha256")
    os.makedirs(p, exist_ok=True)
    with open(os.path.join(p, d), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + d, "size": len(data)}

def layer(seed, nbytes):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        payload = (hashlib.sha256(seed.encode()).hexdigest() * (nbytes // 64 + 1))[:nbytes].encode()
        for name, data in [("hello.txt", f"hello from {seed}\n".encode()), ("data.bin", payload)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            t.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return raw, gzip.compress(raw, mtime=0)

def image(out, arch, seed, nbytes):
    raw, gz = layer(f"{seed}-{arch}", nbytes)
    ldesc = put_blob(out, gz)
    ldesc["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
    config = {
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]},
        "history": [{"created": "2026-01-01T00:00:00Z", "created_by": f"mkimage {seed}"}],
    }
    cdesc = put_blob(out, json.dumps(config, sort_keys=True).encode())
    cdesc["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": cdesc, "layers": [ldesc]}
    mdesc = put_blob(out, json.dumps(manifest, sort_keys=True).encode())
    mdesc["mediaType"] = manifest["mediaType"]
    mdesc["platform"] = {"architecture": arch, "os": "linux"}
    return mdesc

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("tag")
    ap.add_argument("--arch", action="append")
    ap.add_argument("--layer-bytes", type=int, default=4096)
    ap.add_argument("--seed", default=str(time.time_ns()))
    a = ap.parse_args()
    archs = a.arch or ["amd64"]
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    descs = [image(a.out, arch, a.seed, a.layer_bytes) for arch in archs]
    if len(descs) == 1:
        top = descs[0]
        del top["platform"]
    else:
        idx = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": descs}
        top = put_blob(a.out, json.dumps(idx, sort_keys=True).encode())
        top["mediaType"] = idx["mediaType"]
    top["annotations"] = {"org.opencontainers.image.ref.name": a.tag}
    with open(os.path.join(a.out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [top]}, f)
    print(top["digest"])

if __name__ == "__main__":
    main()
