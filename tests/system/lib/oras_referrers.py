"""oras (the PyPI SDK) pushes an image-like artifact, then two artifacts whose subject is that image
(one with oras's chunked upload), and the referrers endpoint lists them, filtered by artifactType."""
import hashlib, json, os, sys

import oras.client
import oras.oci
import requests

host, work = sys.argv[1], sys.argv[2]
os.chdir(work)
client = oras.client.OrasClient(hostname=host, insecure=True)

def write(name, text):
    with open(name, "w") as f:
        f.write(text)
    return name

def manifest_digest(repo, tag):
    r = requests.get(f"http://{host}/v2/{repo}/manifests/{tag}",
                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
    r.raise_for_status()
    assert r.headers["Docker-Content-Digest"] == "sha256:" + hashlib.sha256(r.content).hexdigest()
    return r.headers["Docker-Content-Digest"], len(r.content)

write("app.txt", "the application\n")
client.push(target=f"{host}/oras/app:v1", files=["app.txt"], quiet=True)
digest, size = manifest_digest("oras/app", "v1")
subject = oras.oci.Subject(mediaType="application/vnd.oci.image.manifest.v1+json", digest=digest, size=size)

write("sig.json", json.dumps({"signed": digest}))
write("sig-config.json", "{}")
r = client.push(target=f"{host}/oras/app:sig", files=["sig.json"], subject=subject, quiet=True,
                manifest_config="sig-config.json:application/vnd.example.signature")
assert r.status_code == 201, r.text
assert r.headers.get("OCI-Subject") == digest, r.headers

write("sbom.json", json.dumps({"packages": ["a", "b"] * 1000}))
write("sbom-config.json", "{}")
client.push(target=f"{host}/oras/app:sbom", files=["sbom.json"], subject=subject, quiet=True,
            manifest_config="sbom-config.json:application/vnd.example.sbom", do_chunked=True, chunk_size=1024)

r = requests.get(f"http://{host}/v2/oras/app/referrers/{digest}")
assert r.status_code == 200, r.text
assert r.headers["Content-Type"] == "application/vnd.oci.image.index.v1+json"
found = sorted(m["artifactType"] for m in r.json()["manifests"])
assert found == ["application/vnd.example.sbom", "application/vnd.example.signature"], found
r = requests.get(f"http://{host}/v2/oras/app/referrers/{digest}",
                 params={"artifactType": "application/vnd.example.sbom"})
assert r.headers.get("OCI-Filters-Applied") == "artifactType", r.headers
only = r.json()["manifests"]
assert len(only) == 1 and only[0]["artifactType"] == "application/vnd.example.sbom", only

# Pull the SBOM back with oras and compare.
os.makedirs("out", exist_ok=True)
files = client.pull(target=f"{host}/oras/app:sbom", outdir="out")
assert open(files[0]).read() == open("sbom.json").read()
print(f"referrers of {digest}: {found}")
