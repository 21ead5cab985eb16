#!/usr/bin/env python3
"""An OCI image layout whose config has every field the UI's manifest page summarises: entrypoint,
command, labels, exposed ports, environment (the page shows its keys only: a value may be a
secret), three history steps (one that made no layer), and two layers of different sizes, so each
layer's size on the page can be told from the other's.

Usage: image.py OUT_DIR TAG SEED. Prints the manifest's digest. Layers are real gzip'ed tars like
mkimage.py's, but of bytes that do not compress, so their sizes are six-digit numbers no digest or
date on a page can be mistaken for.
"""
import gzip, hashlib, io, json, os, sys, tarfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from mkimage import put_blob  # noqa: E402


def layer(seed, nbytes):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        data = hashlib.shake_256(seed.encode()).digest(nbytes)
        info = tarfile.TarInfo(f"{seed}.bin")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    return raw, gzip.compress(raw, mtime=0)


def main():
    out, tag, seed = sys.argv[1], sys.argv[2], sys.argv[3]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    layers, diff_ids = [], []
    for i, nbytes in enumerate([150000, 260000]):
        raw, gz = layer(f"{seed}-{i}", nbytes)
        d = put_blob(out, gz)
        d["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
        layers.append(d)
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
    config = {
        "architecture": "amd64", "os": "linux", "created": "2026-01-02T03:04:05Z",
        "config": {
            "Entrypoint": ["/bin/ui-test-server"],
            "Cmd": ["--port", "8080"],
            "Labels": {"org.opencontainers.image.source": "https://example.invalid/ui-test",
                       "ui.test.label": f"label-{seed}"},
            "ExposedPorts": {"8080/tcp": {}, "9090/udp": {}},
            "Env": ["PATH=/usr/bin:/bin", "UI_TEST_SECRET=never-shown"],
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": "2026-01-02T03:04:00Z", "created_by": f"ADD base-{seed}.tar /"},
            {"created": "2026-01-02T03:04:03Z", "created_by": "EXPOSE 8080/tcp 9090/udp",
             "empty_layer": True},
            {"created": "2026-01-02T03:04:05Z", "created_by": f"COPY app-{seed} /bin/"},
        ],
    }
    cdesc = put_blob(out, json.dumps(config, sort_keys=True).encode())
    cdesc["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": cdesc, "layers": layers,
                "annotations": {"org.opencontainers.image.description": f"ui test image {seed}"}}
    mdesc = put_blob(out, json.dumps(manifest, sort_keys=True).encode())
    mdesc["mediaType"] = manifest["mediaType"]
    mdesc["annotations"] = {"org.opencontainers.image.ref.name": tag}
    with open(os.path.join(out, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [mdesc]}, f)
    print(mdesc["digest"])


if __name__ == "__main__":
    main()
