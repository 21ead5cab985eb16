#!/usr/bin/env python3
"""Pushes the UI test's artifact with the oras SDK (PyPI): oras/app:v1, a non-image artifact of one
file with a title and a manifest annotation, and oras/app:sig, a signature-like artifact whose
subject is v1 (so v1 has one referrer, of artifact type application/vnd.example.signature).

Usage: artifact.py HOST CA_FILE USER PASSWORD WORK_DIR. Prints JSON: the digests and the file.
"""
import hashlib, json, os, sys

import oras.client
import oras.oci
import requests

host, ca, user, password, work = sys.argv[1:6]
os.chdir(work)
client = oras.client.OrasClient(hostname=host, tls_verify=ca)
# Not client.login: that writes the credentials to ~/.docker/config.json.
client.auth.set_basic_auth(user, password)

NOTES = "release notes of the ui test artifact\n" * 40
SIG_TYPE = "application/vnd.example.signature"


def write(name, text):
    with open(name, "w") as f:
        f.write(text)
    return name


def manifest(tag):
    r = requests.get(f"https://{host}/v2/oras/app/manifests/{tag}", verify=ca,
                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    r.raise_for_status()
    digest = "sha256:" + hashlib.sha256(r.content).hexdigest()
    assert r.headers["Docker-Content-Digest"] == digest, r.headers
    return digest, len(r.content), r.json()


r = client.push(target=f"{host}/oras/app:v1", files=[write("notes.txt", NOTES)], quiet=True,
                manifest_annotations={"org.example.ui-test": "artifact annotation"})
assert r.status_code == 201, r.text
digest, size, m = manifest("v1")
subject = oras.oci.Subject(mediaType="application/vnd.oci.image.manifest.v1+json", digest=digest, size=size)
r = client.push(target=f"{host}/oras/app:sig", files=[write("sig.json", json.dumps({"signed": digest}))],
                subject=subject, quiet=True, manifest_config=f"{write('sig-config.json', '{}')}:{SIG_TYPE}")
assert r.status_code == 201, r.text
sig_digest, _, _ = manifest("sig")
layer = m["layers"][0]
print(json.dumps({
    "digest": digest, "sig_digest": sig_digest, "sig_type": SIG_TYPE,
    "file": {"name": layer["annotations"]["org.opencontainers.image.title"], "digest": layer["digest"],
             "size": layer["size"], "sha256": hashlib.sha256(NOTES.encode()).hexdigest()},
}))
