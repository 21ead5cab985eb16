#!/usr/bin/env bash
# A request body registryd refuses before reading it (a manifest over limits.max_manifest_bytes, a
# blob over limits.max_blob_bytes, a push without login) must still reach the client as an answer:
# clients that write their whole body before they read (Python's http.client, CI tools built on
# it) got EPIPE or a reset instead of the 413 or 401, because the connection was closed with
# their body unread. Checked with http.client itself, against a registry with logins on.
source "$(dirname "$0")/lib/common.sh"

command -v htpasswd >/dev/null || fail "htpasswd missing (apache2-utils)"
htpasswd -Bbc "$WORK/htpasswd" ci ci-pass 2>/dev/null
PORT=$(free_port)
cat >"$WORK/config.toml" <<TOML
[server]
listen = ["127.0.0.1:$PORT"]
[tls]
enabled = false
[storage]
root = "$WORK/data"
[limits]
max_blob_bytes = 1048576
[auth]
htpasswd = "$WORK/htpasswd"
allow_plain_http = true
TOML
"$TEST_REGISTRYD_BIN" serve --config "$WORK/config.toml" >"$WORK/reg.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$PORT/healthz" || { cat "$WORK/reg.log"; fail "registryd did not start"; }

python3 - "$PORT" <<'PY' || fail "a refused body did not reach the client as an answer"
import base64, http.client, json, sys

port = int(sys.argv[1])
login = {"Authorization": "Basic " + base64.b64encode(b"ci:ci-pass").decode()}
MiB = 1024 * 1024
failed = []

def call(method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        conn.close()

def check(what, method, path, body, headers, status, code):
    try:
        got, _, text = call(method, path, body, headers)
    except OSError as e:
        failed.append(f"{what}: {type(e).__name__}: {e}")
        return
    errs = json.loads(text or b"{}").get("errors") or [{}]
    if got != status or errs[0].get("code") != code:
        failed.append(f"{what}: {got} {text[:200]!r}, want {status} {code}")
    else:
        print(f"ok: {what}: {got} {code}")

# An upload session to PATCH and PUT into.
status, headers, _ = call("POST", "/v2/t/app/blobs/uploads/", headers=login)
assert status == 202, status
loc = dict((k.lower(), v) for k, v in headers)["location"]
sep = "&" if "?" in loc else "?"
digest = "sha256:" + "0" * 64
manifest = {**login, "Content-Type": "application/vnd.oci.image.manifest.v1+json"}
octets = {"Content-Type": "application/octet-stream"}

check("manifest of 4 MiB + 10 bytes", "PUT", "/v2/t/app/manifests/big", b" " * (4 * MiB + 10), manifest, 413, "SIZE_INVALID")
check("monolithic blob over max_blob_bytes", "POST", f"/v2/t/app/blobs/uploads/?digest={digest}", b"x" * (6 * MiB), {**login, **octets}, 413, "SIZE_INVALID")
check("chunk over max_blob_bytes", "PATCH", loc, b"x" * (6 * MiB), {**login, **octets}, 413, "SIZE_INVALID")
check("manifest push without login", "PUT", "/v2/t/app/manifests/v1", b" " * (6 * MiB), {"Content-Type": manifest["Content-Type"]}, 401, "UNAUTHORIZED")
check("chunk without login", "PATCH", loc, b"x" * (6 * MiB), octets, 401, "UNAUTHORIZED")
check("final PUT without login", "PUT", f"{loc}{sep}digest={digest}", b"x" * (6 * MiB), octets, 401, "UNAUTHORIZED")
check("monolithic blob without login", "POST", f"/v2/t/app/blobs/uploads/?digest={digest}", b"x" * (6 * MiB), octets, 401, "UNAUTHORIZED")
# The registry still serves on new connections afterwards.
assert call("GET", "/v2/", headers=login)[0] == 200
for f in failed:
    print("FAIL:", f, file=sys.stderr)
sys.exit(1 if failed else 0)
PY
pass "refused bodies: every 413 and 401 reached http.client whole"
