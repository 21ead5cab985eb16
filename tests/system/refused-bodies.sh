#!/usr/bin/env bash
# A request body registryd refuses before reading it (a manifest over limits.max_manifest_bytes, a
# blob over limits.max_blob_bytes, a push without login) must still reach the client as an answer:
# clients that write their whole body before they read (Python's http.client, CI tools built on
# it) got EPIPE or a reset instead of the 413 or 401, because the connection was closed with
# their body unread. Checked with http.client itself, over plain HTTP and TLS, against a registry
# with logins on; the client's send buffer is kept small so no body fits in the sockets' buffers
# and passes unread. A client that keeps sending past the lingering bounds is cut.
source "$(dirname "$0")/lib/common.sh"

command -v htpasswd >/dev/null || fail "htpasswd missing (apache2-utils)"
htpasswd -Bbc "$WORK/htpasswd" ci ci-pass 2>/dev/null
loopback_cert
PLAIN=$(free_port)
TLS=$(free_port)
FRAGMENT=$(cat <<TOML
[limits]
max_blob_bytes = 1048576
[auth]
htpasswd = "$WORK/htpasswd"
allow_plain_http = true
TOML
)
start_registryd reg "$PLAIN" "$WORK/data" "$FRAGMENT"
start_registryd --tls reg-tls "$TLS" "$WORK/data-tls" "$FRAGMENT"

python3 - "$PLAIN" "$TLS" "$WORK/ca.crt" <<'PY' || fail "a refused body did not reach the client as an answer"
import base64, http.client, json, socket, ssl, sys, time

plain, tls, ca = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
login = {"Authorization": "Basic " + base64.b64encode(b"ci:ci-pass").decode()}
MiB = 1024 * 1024
failed = []

def connect(port, secure):
    if secure:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30,
                                           context=ssl.create_default_context(cafile=ca))
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.connect()
    # A small send buffer: the body cannot sit in the sockets' buffers unread, the server must
    # read (or drain) it for sendall to finish.
    conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    return conn

def call(port, secure, method, path, body=None, headers=None):
    conn = connect(port, secure)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        conn.close()

for port, secure in ((plain, False), (tls, True)):
    scheme = "https" if secure else "http"
    def check(what, method, path, body, headers, status, code):
        try:
            got, _, text = call(port, secure, method, path, body, headers)
        except OSError as e:
            failed.append(f"{scheme}: {what}: {type(e).__name__}: {e}")
            return
        errs = json.loads(text or b"{}").get("errors") or [{}]
        if got != status or errs[0].get("code") != code:
            failed.append(f"{scheme}: {what}: {got} {text[:200]!r}, want {status} {code}")
        else:
            print(f"ok: {scheme}: {what}: {got} {code}")

    # An upload session to PATCH and PUT into.
    status, headers, _ = call(port, secure, "POST", "/v2/t/app/blobs/uploads/", headers=login)
    assert status == 202, status
    loc = dict((k.lower(), v) for k, v in headers)["location"]
    sep = "&" if "?" in loc else "?"
    digest = "sha256:" + "0" * 64
    manifest = {**login, "Content-Type": "application/vnd.oci.image.manifest.v1+json"}
    octets = {"Content-Type": "application/octet-stream"}
    big = b"x" * (8 * MiB)

    check("manifest of 4 MiB + 10 bytes", "PUT", "/v2/t/app/manifests/big", b" " * (4 * MiB + 10), manifest, 413, "SIZE_INVALID")
    check("monolithic blob over max_blob_bytes", "POST", f"/v2/t/app/blobs/uploads/?digest={digest}", big, {**login, **octets}, 413, "SIZE_INVALID")
    check("chunk over max_blob_bytes", "PATCH", loc, big, {**login, **octets}, 413, "SIZE_INVALID")
    check("manifest push without login", "PUT", "/v2/t/app/manifests/v1", big, {"Content-Type": manifest["Content-Type"]}, 401, "UNAUTHORIZED")
    check("chunk without login", "PATCH", loc, big, octets, 401, "UNAUTHORIZED")
    check("final PUT without login", "PUT", f"{loc}{sep}digest={digest}", big, octets, 401, "UNAUTHORIZED")
    check("monolithic blob without login", "POST", f"/v2/t/app/blobs/uploads/?digest={digest}", big, octets, 401, "UNAUTHORIZED")
    # The registry still serves on new connections afterwards.
    assert call(port, secure, "GET", "/v2/", headers=login)[0] == 200

# Lingering is bounded: a client that sends a refused body of 1 GiB is cut, within seconds, long
# before it has sent it all.
conn = connect(plain, False)
conn.putrequest("PATCH", loc, skip_accept_encoding=True)
conn.putheader("Content-Type", "application/octet-stream")
conn.putheader("Content-Length", str(1024 * MiB))
conn.endheaders()
t0, sent, chunk = time.monotonic(), 0, b"x" * 65536
try:
    while sent < 1024 * MiB and time.monotonic() - t0 < 60:
        conn.sock.sendall(chunk)
        sent += len(chunk)
    failed.append(f"a refused 1 GiB body was read for {time.monotonic() - t0:.1f} s ({sent // MiB} MiB) and not cut")
except OSError:
    took = time.monotonic() - t0
    if took > 15 or sent > 256 * MiB:
        failed.append(f"a refused body was drained too long: {took:.1f} s, {sent // MiB} MiB")
    else:
        print(f"ok: a refused 1 GiB body is cut after {took:.1f} s, {sent // MiB} MiB sent")
conn.close()
for f in failed:
    print("FAIL:", f, file=sys.stderr)
sys.exit(1 if failed else 0)
PY
pass "refused bodies: every 413 and 401 reached http.client whole, over HTTP and TLS; lingering is bounded"
