#!/usr/bin/env bash
# The web UI in a real browser: Debian's chromium driven by playwright-core (npm), against a
# registryd with TLS, htpasswd logins (admin: push and delete everywhere; reader: pull only) and
# access rules (secret/ hidden from everyone but admin, anonymous pull elsewhere), and a
# pull-through cache of a CNCF Distribution on 127.0.0.1. Real clients put the content there:
# skopeo pushes a multi-arch index and a single image, the oras SDK an artifact with a referrer,
# skopeo pulls the upstream's image once through the cache, curl leaves an upload half done.
# ui/check.mjs then walks every page as anonymous, reader and admin: each shows what was pushed;
# axe-core finds no serious or critical accessibility violation; admin deletes a tag through the
# confirmation page (skopeo then finds it gone and its sibling tag kept); forged cross-site POSTs
# are refused and delete nothing. Then ui/firefox.mjs walks the pages an operator uses most in
# Debian's firefox-esr (puppeteer-core over WebDriver BiDi), inside a network namespace with only
# loopback, and deletes one more tag there. Screenshots of every page, light and dark, are left in
# $REGISTRYD_UI_SCREENSHOTS (default /tmp/registryd-ui-screenshots), named in the output.
source "$(dirname "$0")/lib/common.sh"

T_START=$SECONDS
deps_apt chromium firefox-esr socat docker-registry apache2-utils skopeo jq openssl curl \
  || fail "the UI test's Debian packages could not be installed"
deps_ui_node || fail "the UI test's npm packages (tests/system/ui/package-lock.json) could not be installed"
ensure_venv
T_INSTALLED=$SECONDS
SK="skopeo --insecure-policy"
SHOTS=${REGISTRYD_UI_SCREENSHOTS:-/tmp/registryd-ui-screenshots}
UI_DIR=$SYS_DIR/ui

# --- The upstream: CNCF Distribution on 127.0.0.1, plain HTTP, holding one image.
PU=$(free_port)
cat >"$WORK/up.yml" <<YML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $WORK/up-data}}
http: {addr: 127.0.0.1:$PU}
YML
docker-registry serve "$WORK/up.yml" >"$WORK/up.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$PU/v2/" || { cat "$WORK/up.log"; fail "the upstream did not start"; }
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/hello" 1.0 --layer-bytes 30000 --seed upstream >/dev/null
$SK copy -q --dest-tls-verify=false "oci:$WORK/hello:1.0" "docker://127.0.0.1:$PU/library/hello:1.0" \
  || fail "push to the upstream"

# --- registryd: TLS on 127.0.0.1 (anonymous pull there, "auto"), logins, one hidden prefix.
loopback_cert
htpasswd -Bbc "$WORK/htpasswd" admin admin-pass 2>/dev/null
htpasswd -Bb "$WORK/htpasswd" reader reader-pass 2>/dev/null
PR=$(free_port)
R=127.0.0.1:$PR
start_registryd --tls reg "$PR" "$WORK/data" - <<EOF
[auth]
htpasswd = "$WORK/htpasswd"
max_failures_per_minute = 0
[proxy]
upstream_timeout_secs = 5
[[upstream]]
name = "docker.io"
url = "http://127.0.0.1:$PU"
[[access]]
prefix = ""
pull = ["*", "anonymous"]
push = ["admin"]
[[access]]
prefix = "secret"
pull = ["admin"]
push = ["admin"]
[ui]
enabled = true
listeners = ["all"]
EOF
mkdir -p "$WORK/certs.d"
cp "$WORK/ca.crt" "$WORK/certs.d/ca.crt"
AS_ADMIN=(--dest-creds admin:admin-pass --dest-cert-dir "$WORK/certs.d")

# --- Content, pushed with real clients.
# A multi-arch index; a single image tagged twice (v2 is the one the UI deletes, v1 the one the
# forged requests aim at) and pushed again as apps/copy (which then has no blob of its own); a tag
# moved to another image (its first manifest stays, untagged); a repository only admin may see.
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/multi" v1 --arch amd64 --arch arm64 --layer-bytes 20000 >/dev/null
python3 "$UI_DIR/image.py" "$WORK/single" v1 single >/dev/null
python3 "$UI_DIR/image.py" "$WORK/older" v3 older >/dev/null
python3 "$UI_DIR/image.py" "$WORK/newer" v3 newer >/dev/null
python3 "$UI_DIR/image.py" "$WORK/secret" v1 secret >/dev/null
$SK copy -q --all "${AS_ADMIN[@]}" "oci:$WORK/multi:v1" "docker://$R/apps/multi:v1" || fail "push of the index"
for t in v1 v2; do
  $SK copy -q "${AS_ADMIN[@]}" "oci:$WORK/single:v1" "docker://$R/apps/single:$t" || fail "push of apps/single:$t"
done
$SK copy -q "${AS_ADMIN[@]}" "oci:$WORK/single:v1" "docker://$R/apps/copy:v1" || fail "push of apps/copy:v1"
$SK copy -q "${AS_ADMIN[@]}" "oci:$WORK/older:v3" "docker://$R/apps/single:v3" || fail "push of apps/single:v3"
$SK copy -q "${AS_ADMIN[@]}" "oci:$WORK/newer:v3" "docker://$R/apps/single:v3" || fail "second push of apps/single:v3"
$SK copy -q "${AS_ADMIN[@]}" "oci:$WORK/secret:v1" "docker://$R/secret/app:v1" || fail "push of secret/app:v1"
# The artifact and its referrer (oras SDK).
mkdir -p "$WORK/oras"
"$PY" "$UI_DIR/artifact.py" "$R" "$WORK/ca.crt" admin admin-pass "$WORK/oras" >"$WORK/artifact.json" \
  || { tail -20 "$WORK/reg.log"; fail "oras push of the artifact and its referrer"; }
# The upstream's image, pulled once through the cache by an anonymous client.
$SK copy -q --src-cert-dir "$WORK/certs.d" "docker://$R/docker.io/library/hello:1.0" "oci:$WORK/pulled:1.0" \
  || { tail -20 "$WORK/reg.log"; fail "pull through the cache"; }
# An upload left half done: 12345 bytes sent, never finished.
challenge=$(curl -sS --cacert "$WORK/ca.crt" -D- -o /dev/null "https://$R/v2/" | tr -d '\r' \
  | awk -F': ' 'tolower($1)=="www-authenticate"{print $2}')
realm=$(sed -n 's/.*realm="\([^"]*\)".*/\1/p' <<<"$challenge")
service=$(sed -n 's/.*service="\([^"]*\)".*/\1/p' <<<"$challenge")
[ -n "$realm" ] || fail "no Bearer challenge on /v2/: $challenge"
token=$(curl -fsS --cacert "$WORK/ca.crt" -u admin:admin-pass -G "$realm" --data-urlencode "service=$service" \
  --data-urlencode "scope=repository:apps/uploading:push,pull" | jq -r '.token // .access_token')
loc=$(curl -fsS --cacert "$WORK/ca.crt" -H "Authorization: Bearer $token" -X POST -D- -o /dev/null \
  "https://$R/v2/apps/uploading/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
case $loc in http*) ;; *) loc="https://$R$loc" ;; esac
head -c 12345 /dev/urandom >"$WORK/partial"
curl -fsS --cacert "$WORK/ca.crt" -H "Authorization: Bearer $token" -X PATCH \
  -H 'Content-Type: application/octet-stream' --data-binary @"$WORK/partial" -o /dev/null "$loc" \
  || fail "PATCH of the upload left in progress"
pass "content pushed: index, single image (3 tags, 1 untagged manifest), hidden repository, oras artifact with a referrer, cached upstream image, an upload in progress"

# --- What the pages must show, from the pushed layouts themselves.
blob() { cat "$1/blobs/sha256/${2#sha256:}"; }
top() { jq -r '.manifests[0].digest' "$1/index.json"; }
image_json() { # LAYOUT: the image's digest, size, layers and config
  local d m
  d=$(top "$1")
  m=$(blob "$1" "$d")
  jq -n --arg d "$d" --argjson m "$m" --argjson c "$(blob "$1" "$(jq -r .config.digest <<<"$m")")" \
    --argjson size "$(blob "$1" "$d" | wc -c)" \
    '{digest: $d, size: $size, manifest: $m, config_size: $m.config.size, config: $c,
      layers: [$m.layers[] | {digest, size, mediaType}]}'
}
MULTI=$(top "$WORK/multi")
children=$(blob "$WORK/multi" "$MULTI" | jq -c '[.manifests[] | {digest, platform: "\(.platform.os)/\(.platform.architecture)"}]')
child_layers='[]'
for c in $(jq -r '.[].digest' <<<"$children"); do
  child_layers=$(jq -c --arg c "$c" --argjson m "$(blob "$WORK/multi" "$c")" \
    '. + [{digest: $c, layers: [$m.layers[] | {digest, size}]}]' <<<"$child_layers")
done
jq -n \
  --arg base "https://$R" --arg registry "$R" --arg shots "$SHOTS" --arg storage "$WORK/data" \
  --arg cert "$WORK/tls.crt" --arg key "$WORK/tls.key" \
  --arg expires "$(date -u -d "$(openssl x509 -enddate -noout -in "$WORK/tls.crt" | cut -d= -f2)" +%F)" \
  --argjson multi "$(jq -n --arg d "$MULTI" --argjson ch "$children" --argjson cl "$child_layers" \
    --arg raw "$(blob "$WORK/multi" "$MULTI")" '{digest: $d, children: $ch, child_layers: $cl, raw: $raw}')" \
  --argjson single "$(image_json "$WORK/single")" \
  --argjson older "$(image_json "$WORK/older")" \
  --argjson newer "$(image_json "$WORK/newer")" \
  --argjson secret "$(image_json "$WORK/secret")" \
  --argjson cached "$(image_json "$WORK/hello")" \
  --argjson artifact "$(cat "$WORK/artifact.json")" \
  '{base: $base, registry: $registry, shots: $shots, storage: $storage, tls: {cert: $cert, key: $key, expires: $expires},
    users: {admin: "admin-pass", reader: "reader-pass"},
    multi: $multi, single: $single, older: $older, newer: $newer, secret: $secret, cached: $cached,
    artifact: $artifact, upload: {repository: "apps/uploading", bytes: 12345},
    upstream: {name: "docker.io", repository: "docker.io/library/hello", tag: "1.0"}}' >"$WORK/expect.json"

# --- The browser.
# Only what an earlier run left: the folder may be one the caller named, with other files in it.
mkdir -p "$SHOTS" "$WORK/tmp"
rm -f "$SHOTS"/[0-9][0-9]-*.png "$SHOTS"/ff-*.png "$SHOTS"/failed-[0-9][0-9].html "$SHOTS"/failed-ff-[0-9][0-9].html
T_SETUP=$SECONDS
rc=0
TMPDIR=$WORK/tmp UI_NODE_DIR=$UI_NODE_DIR "$UI_NODE" "$UI_DIR/check.mjs" "$WORK/expect.json" || rc=$?
echo "screenshots: $SHOTS ($(find "$SHOTS" -name '*.png' | wc -l) files)"
echo "timing: installs $((T_INSTALLED - T_START))s, set-up and pushes $((T_SETUP - T_INSTALLED))s, browser $((SECONDS - T_SETUP))s"
[ "$rc" = 0 ] || { grep -E ' (WARN|ERROR) ' "$WORK/reg.log" | tail -20; fail "the browser checks (above)"; }

# --- What the browser did, seen by skopeo: v2 is gone, v1 (the forged requests' target) is not.
tags=$($SK list-tags --cert-dir "$WORK/certs.d" "docker://$R/apps/single" | jq -c '.Tags | sort')
[ "$tags" = '["v1","v3"]' ] || fail "after the UI deleted apps/single:v2, skopeo lists $tags (want [\"v1\",\"v3\"])"
$SK inspect --raw --cert-dir "$WORK/certs.d" "docker://$R/apps/single:v2" >/dev/null 2>&1 \
  && fail "skopeo still pulls apps/single:v2 after the UI deleted it"
got=$($SK inspect --raw --cert-dir "$WORK/certs.d" "docker://$R/apps/single:v1" | sha256sum | cut -d' ' -f1)
[ "sha256:$got" = "$(top "$WORK/single")" ] || fail "apps/single:v1 changed: the forged requests or the tag delete touched it"
$SK inspect --raw --cert-dir "$WORK/certs.d" "docker://$R/apps/single@$(top "$WORK/older")" >/dev/null 2>&1 \
  && fail "skopeo still pulls the untagged manifest the UI deleted"
pass "skopeo: apps/single:v2 and the untagged manifest gone after the deletes through the UI; v1 and v3 kept"


# --- Firefox, in a network namespace of its own: only loopback there, so whatever Firefox reaches
# for by itself cannot leave the machine. The registry stays where it is: socat carries the
# namespace's 127.0.0.1:$PR over a unix socket (a path, seen from both namespaces) to the real one.
$SK copy -q "${AS_ADMIN[@]}" "oci:$WORK/single:v1" "docker://$R/apps/single:ff" || fail "push of apps/single:ff"
socat -lf "$WORK/socat.log" "UNIX-LISTEN:$WORK/ui.sock,fork,mode=600" "TCP:$R" &
PIDS+=("$!")
T_FF=$SECONDS
rc=0
unshare --net bash -c '
  ip link set lo up || exit 1
  socat -lf "$8" "TCP-LISTEN:$1,bind=127.0.0.1,fork,reuseaddr" "UNIX-CONNECT:$2" & fwd=$!
  trap "kill $fwd 2>/dev/null" EXIT
  for _ in $(seq 50); do (: </dev/tcp/127.0.0.1/$1) 2>/dev/null && break; sleep 0.1; done
  TMPDIR=$3 UI_NODE_DIR=$7 "$4" "$5/firefox.mjs" "$6" ff' \
  _ "$PR" "$WORK/ui.sock" "$WORK/tmp" "$UI_NODE" "$UI_DIR" "$WORK/expect.json" "$UI_NODE_DIR" "$WORK/socat-ns.log" || rc=$?
echo "timing: firefox $((SECONDS - T_FF))s"
[ "$rc" = 0 ] || { grep -E ' (WARN|ERROR) ' "$WORK/reg.log" | tail -20; fail "the Firefox checks (above)"; }
tags=$($SK list-tags --cert-dir "$WORK/certs.d" "docker://$R/apps/single" | jq -c '.Tags | sort')
[ "$tags" = '["v1","v3"]' ] || fail "after Firefox deleted apps/single:ff, skopeo lists $tags (want [\"v1\",\"v3\"])"
pass "skopeo: apps/single:ff gone after the delete through Firefox; v1 and v3 kept"
