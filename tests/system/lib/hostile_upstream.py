#!/usr/bin/env python3
"""A hostile upstream registry for tests/system/hostile-upstream.sh.

Speaks enough of the registry API (/v2/, manifests, blobs, HEAD and GET) to be configured as an
[[upstream]] of registryd, and misbehaves per repository:

  good/app        an honest image (its layer is 160 bytes), Content-Length everywhere
  chunked/app     an honest image whose layer is sent chunked (no Content-Length)
  endless/app     any blob: chunked and endless, as fast as it goes
  slowendless/app any blob: chunked and endless at about 8 MiB/s (above any minimum rate)
  drip/app        any blob: Content-Length 1000, then one byte a second
  halfway/app     a 32 MiB blob (right digest) at about 8 MiB/s
  endlessman/app  any manifest: chunked and endless
  bigman/app      any manifest: Content-Length 100 MB, and the bytes
  bad/app         an image whose layer's bytes do not match its digest
  auth/app        the honest image behind a Bearer challenge whose realm is on 127.0.0.2

Usage: hostile_upstream.py PORT TOKEN_PORT EVENTS_FILE INFO_FILE
EVENTS_FILE gets one line per blob or manifest body sent: what, bytes sent, how it ended, when.
TOKEN requests are logged there too, with the Authorization header they carried (or "none").
INFO_FILE gets the digests of the images (JSON).
"""
import hashlib
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT, TOKEN_PORT, EVENTS, INFO = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
lock = threading.Lock()


def event(*words):
    with lock, open(EVENTS, "a") as f:
        f.write(" ".join(str(w) for w in words) + f" t={time.time():.2f}\n")


def sha(b):
    return "sha256:" + hashlib.sha256(b).hexdigest()


OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def image(config, layer, layer_digest=None):
    m = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "size": len(config), "digest": sha(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "size": len(layer), "digest": layer_digest or sha(layer)}],
    }
    return json.dumps(m).encode()


CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
LAYER = bytes(range(160))
GOOD = image(CONFIG, LAYER)
CHUNKED_LAYER = hashlib.sha256(b"chunked").digest() * 8192  # 256 KiB
CHUNKED = image(CONFIG, CHUNKED_LAYER)
BAD_LAYER = b"these are not the bytes you are looking for" * 4
BAD_DIGEST = sha(b"the bytes the manifest promises" * 4)
BAD = image(CONFIG, BAD_LAYER, BAD_DIGEST)
HALFWAY = hashlib.sha256(b"halfway").digest() * (1 << 20)  # 32 MiB
BLOBS = {sha(CONFIG): CONFIG, sha(LAYER): LAYER, sha(CHUNKED_LAYER): CHUNKED_LAYER,
         BAD_DIGEST: BAD_LAYER, sha(HALFWAY): HALFWAY}
MANIFESTS = {"good/app": GOOD, "auth/app": GOOD, "chunked/app": CHUNKED, "bad/app": BAD}
with open(INFO, "w") as f:
    json.dump({"good": sha(GOOD), "config": sha(CONFIG), "layer": sha(LAYER),
               "chunked_layer": sha(CHUNKED_LAYER), "bad_layer": BAD_DIGEST,
               "halfway": sha(HALFWAY)}, f)


class Upstream(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, code, body=b"", ctype="application/json", length=None, extra=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def endless(self, what, chunk, pause=0.0):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        sent, frame = 0, b"%x\r\n" % len(chunk) + chunk + b"\r\n"
        try:
            while True:
                self.wfile.write(frame)
                sent += len(chunk)
                if pause:
                    time.sleep(pause)
        except OSError:
            event(what, "sent", sent, "closed")
            self.close_connection = True

    def paced(self, what, body, per_second, step):
        """Body with a Content-Length, sent at about per_second bytes a second."""
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        sent = 0
        try:
            while sent < len(body):
                self.wfile.write(body[sent:sent + step])
                self.wfile.flush()
                sent += len(body[sent:sent + step])
                time.sleep(step / per_second)
            event(what, "sent", sent, "complete")
        except OSError:
            event(what, "sent", sent, "closed")
            self.close_connection = True

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/v2/":
            return self.send(200, b"{}")
        parts = path[len("/v2/"):].split("/")
        if len(parts) < 4 or parts[-2] not in ("manifests", "blobs"):
            return self.send(404, b'{"errors":[{"code":"NAME_UNKNOWN"}]}')
        repo, kind, ref = "/".join(parts[:-2]), parts[-2], parts[-1]
        if repo.startswith("auth/") and self.headers.get("Authorization") != "Bearer good-token":
            realm = f'Bearer realm="http://127.0.0.2:{TOKEN_PORT}/token",service="hostile"'
            return self.send(401, b'{"errors":[{"code":"UNAUTHORIZED"}]}',
                             extra=[("WWW-Authenticate", realm)])
        if kind == "manifests":
            if repo == "endlessman/app":
                return self.endless("endless-manifest", b" " * 65536)
            if repo == "bigman/app":
                body = b" " * (100 * 1000 * 1000)
                event("big-manifest", "start")
                try:
                    return self.send(200, body, ctype=OCI_MANIFEST)
                except OSError:
                    event("big-manifest", "closed")
                    self.close_connection = True
                    return None
            m = MANIFESTS.get(repo)
            if m is None or ref not in ("v1", sha(m)):
                return self.send(404, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
            return self.send(200, m, ctype=OCI_MANIFEST, extra=[("Docker-Content-Digest", sha(m))])
        # Blobs.
        if self.command == "GET":
            if repo == "endless/app":
                return self.endless("endless-blob", b"\0" * 65536)
            if repo == "slowendless/app":
                return self.endless("slow-endless-blob", b"\0" * 65536, pause=65536 / (8 << 20))
            if repo == "drip/app":
                return self.paced("drip-blob", b"x" * 1000, 1, 1)
            if repo == "halfway/app":
                return self.paced("halfway-blob", HALFWAY, 8 << 20, 1 << 16)
        blob = BLOBS.get(ref)
        if blob is None and repo in ("endless/app", "slowendless/app", "drip/app"):
            return self.send(200, b"", ctype="application/octet-stream", length=1000)
        if blob is None:
            return self.send(404, b'{"errors":[{"code":"BLOB_UNKNOWN"}]}')
        if repo == "chunked/app" and self.command == "GET":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(0, len(blob), 65536):
                c = blob[i:i + 65536]
                self.wfile.write(b"%x\r\n" % len(c) + c + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
            return None
        return self.send(200, blob, ctype="application/octet-stream",
                         extra=[("Docker-Content-Digest", ref)])


class Token(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def do_GET(self):
        event("token", "authorization=" + (self.headers.get("Authorization") or "none").replace(" ", "_"))
        body = json.dumps({"token": "good-token", "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


ThreadingHTTPServer.daemon_threads = True
token = ThreadingHTTPServer(("127.0.0.2", TOKEN_PORT), Token)
threading.Thread(target=token.serve_forever, daemon=True).start()
ThreadingHTTPServer(("127.0.0.1", PORT), Upstream).serve_forever()
