"""A small Docker token server (the Bearer flow of Docker Hub) for CNCF Distribution's token auth.

    token_server.py PORT KEY.pem SERVICE ISSUER USER:PASSWORD LOG

Answers GET /token?service=..&scope=repository:NAME:ACTIONS with a JWT signed (RS256) by KEY:
every requested action when the request carries USER:PASSWORD as basic auth, only "pull" when it
carries none, 401 for wrong credentials. Every request is appended to LOG (one line, no secrets), so
a test can tell whether registryd asked with its credentials. The `kid` is libtrust's key id, which
Distribution 2.8 matches against its rootcertbundle.
"""

import base64
import hashlib
import json
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

port, key_path, service, issuer, creds, log_path = sys.argv[1:7]
with open(key_path, "rb") as f:
    key = serialization.load_pem_private_key(f.read(), password=None)

der = key.public_key().public_bytes(
    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
)
b32 = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
KID = ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def token(access):
    now = int(time.time())
    header = {"typ": "JWT", "alg": "RS256", "kid": KID}
    claims = {
        "iss": issuer,
        "sub": "registryd-test",
        "aud": service,
        "exp": now + 300,
        "nbf": now - 10,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "access": access,
    }
    signing_input = (b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())).encode()
    sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return signing_input.decode() + "." + b64(sig)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        url = urlparse(self.path)
        q = parse_qs(url.query)
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            given = base64.b64decode(auth[6:]).decode(errors="replace")
            who = "user" if given == creds else "bad"
        else:
            who = "anonymous"
        with open(log_path, "a") as log:
            log.write(f"{who} {' '.join(q.get('scope', []))}\n")
        if url.path != "/token":
            self.send_error(404)
            return
        if who == "bad":
            self.send_response(401)
            self.end_headers()
            return
        access = []
        for scope in q.get("scope", []):
            parts = scope.split(":")
            if len(parts) != 3 or parts[0] != "repository":
                continue
            actions = parts[2].split(",")
            if who != "user":
                actions = [a for a in actions if a == "pull"]
            access.append({"type": "repository", "name": parts[1], "actions": actions})
        body = json.dumps({"token": token(access), "expires_in": 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(port)), Handler).serve_forever()
