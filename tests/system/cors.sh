#!/usr/bin/env bash
# A registry web UI in a real browser: headless Chromium loads a page from another origin, which
# lists the catalog and the tags and deletes a manifest through CORS (with a login sent in the
# Authorization header, so every call is preflighted). The same page from an origin that is not
# allowed gets nothing and deletes nothing. Everything runs in a network namespace of its own, so
# the browser cannot reach anything but this test's loopback.
if [ -z "${CORS_IN_NETNS:-}" ]; then
  exec env CORS_IN_NETNS=1 unshare --net bash "$0" "$@"
fi
ip link set lo up
source "$(dirname "$0")/lib/common.sh"

CHROME=$(command -v chromium || true)
[ -n "$CHROME" ] || fail "chromium missing: apt-get install chromium"

loopback_cert
htpasswd -Bbc "$WORK/htpasswd" ui ui-pass 2>/dev/null
P=$(free_port) UI=$(free_port) BAD=$(free_port)
R=127.0.0.1:$P
start_registryd --tls reg "$P" "$WORK/data" - <<EOF
[server]
headers = ["X-Content-Type-Options: nosniff", "X-Frame-Options: DENY"]
[auth]
htpasswd = "$WORK/htpasswd"
[cors]
allowed_origins = ["http://127.0.0.1:$UI"]
EOF

python3 "$SYS_DIR/lib/mkimage.py" "$WORK/img" v1 >/dev/null
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/img2" v2 --layer-bytes 5000 >/dev/null
SK="skopeo --insecure-policy"
$SK copy -q --dest-tls-verify=false --dest-creds ui:ui-pass "oci:$WORK/img:v1" "docker://$R/ui/img:v1"
$SK copy -q --dest-tls-verify=false --dest-creds ui:ui-pass "oci:$WORK/img2:v2" "docker://$R/ui/img:v2"

# Headers on every answer, errors included.
h=$(curl -sk -D- -o /dev/null "https://$R/v2/nothing/here/manifests/x" | tr -d '\r')
grep -qi '^x-content-type-options: nosniff' <<<"$h" || fail "configured header missing: $h"
grep -qi '^x-frame-options: DENY' <<<"$h" || fail "second configured header missing"
pass "server.headers on every response (a 401 too)"

# The UI page, served from two origins: the allowed one and another.
mkdir -p "$WORK/ui"
cat >"$WORK/ui/index.html" <<EOF
<!doctype html><html><body><pre id="out">pending</pre><script>
const R = "https://$R";
const auth = {"Authorization": "Basic " + btoa("ui:ui-pass")};
(async () => {
  const out = {};
  try {
    out.catalog = (await (await fetch(R + "/v2/_catalog", {headers: auth})).json()).repositories;
    out.tags = (await (await fetch(R + "/v2/ui/img/tags/list", {headers: auth})).json()).tags;
    const h = await fetch(R + "/v2/ui/img/manifests/v2", {method: "HEAD",
      headers: {...auth, "Accept": "application/vnd.oci.image.manifest.v1+json"}});
    out.digest = h.headers.get("Docker-Content-Digest");
    out.deleted = (await fetch(R + "/v2/ui/img/manifests/" + out.digest, {method: "DELETE", headers: auth})).status;
  } catch (e) { out.error = String(e); }
  document.getElementById("out").textContent = JSON.stringify(out);
})();
</script></body></html>
EOF
for port in $UI $BAD; do
  python3 -m http.server "$port" --bind 127.0.0.1 --directory "$WORK/ui" >"$WORK/http-$port.log" 2>&1 &
  PIDS+=("$!")
done
for port in $UI $BAD; do wait_http "http://127.0.0.1:$port/index.html" || fail "page server $port"; done

browse() {
  timeout 90 "$CHROME" --headless=new --no-sandbox --disable-gpu --ignore-certificate-errors \
    --user-data-dir="$WORK/chrome-$1" --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --disable-default-apps --disable-extensions \
    --virtual-time-budget=20000 --dump-dom "http://127.0.0.1:$1/index.html" 2>"$WORK/chrome-$1.log" \
    | sed -n 's:.*<pre id="out">\(.*\)</pre>.*:\1:p' | sed 's/&quot;/"/g'
}

bad=$(browse "$BAD")
echo "   other origin: $bad"
grep -q '"error":"TypeError' <<<"$bad" || fail "a page from a disallowed origin read the registry: $bad"
grep -q 'method=DELETE' "$WORK/reg.log" && fail "a DELETE reached the registry from a disallowed origin"
pass "disallowed origin: the browser refuses every call (preflight 403), nothing deleted"

good=$(browse "$UI")
echo "   allowed origin: $good"
[ "$(jq -c .catalog <<<"$good")" = '["ui/img"]' ] || fail "catalog through CORS: $good"
[ "$(jq -c .tags <<<"$good")" = '["v1","v2"]' ] || fail "tags through CORS: $good"
[ "$(jq -r .deleted <<<"$good")" = 202 ] || fail "delete through CORS: $good"
digest=$(jq -r .digest <<<"$good")
[ "$(curl -sk -o /dev/null -w '%{http_code}' -u ui:ui-pass "https://$R/v2/ui/img/manifests/$digest")" = 404 ] \
  || fail "manifest $digest still there after the UI deleted it"
[ "$(curl -sk -o /dev/null -w '%{http_code}' -u ui:ui-pass -H 'Accept: application/vnd.oci.image.manifest.v1+json' "https://$R/v2/ui/img/manifests/v1")" = 200 ] \
  || fail "the other tag went with it"
grep -q 'method=OPTIONS' "$WORK/reg.log" || fail "no preflight seen"
pass "allowed origin: catalog, tags, Docker-Content-Digest read and manifest deleted from Chromium"
