#!/usr/bin/env bash
# registryd import-config on the Distribution configs users run, each run for real: CNCF
# Distribution 2.8.2 (Debian docker-registry) serves with the YAML, then registryd serves with the
# converted TOML on the same port and data, and clients see the same registry. (1) A compose-style
# config with TLS, htpasswd, CORS headers for a UI, nosniff and health checks; (2) a pull-through
# mirror (proxy.remoteurl with credentials); (3) plain htpasswd without TLS; (4) Debian's own
# /etc/docker/registry/config.yml. Broken YAML gets a clear error.
source "$(dirname "$0")/lib/common.sh"
command -v docker-registry >/dev/null || fail "docker-registry missing: apt-get install docker-registry"

loopback_cert
htpasswd -Bbc "$WORK/htpasswd" ci ci-pass 2>/dev/null
SK="skopeo --insecure-policy"
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/img" v1 --seed import-config >/dev/null
WANT=$(jq -r '.manifests[0].digest' "$WORK/img/index.json")

run_dist() { # YML URL: serves Distribution until the URL answers; sets DIST_PID
  docker-registry serve "$1" >>"$WORK/dist.log" 2>&1 &
  DIST_PID=$!
  PIDS+=("$DIST_PID")
  for _ in $(seq 1 100); do curl -sk -o /dev/null "$2" && return 0; sleep 0.1; done
  cat "$WORK/dist.log"; fail "docker-registry did not start with $1"
}
# TOML URL: serves registryd with the converted config; sets REGD_PID. Not start_registryd: the
# converted config is under test, so it runs exactly as import-config wrote it.
run_regd() {
  "$TEST_REGISTRYD_BIN" serve --config "$1" >>"$WORK/regd.log" 2>&1 &
  REGD_PID=$!
  PIDS+=("$REGD_PID")
  for _ in $(seq 1 100); do curl -sk -o /dev/null "$2" && return 0; sleep 0.1; done
  cat "$WORK/regd.log"; fail "registryd did not start with the converted $1"
}
convert() { # YML TOML
  "$TEST_REGISTRYD_BIN" import-config "$1" >"$2" 2>"$2.warnings" || { cat "$2.warnings"; fail "import-config $1"; }
  "$TEST_REGISTRYD_BIN" check-config --config "$2" >/dev/null || fail "check-config refused the converted $1"
}

# --- (1) compose-style: TLS, htpasswd, UI CORS headers, health checks.
P=$(free_port) UI=http://ui.example:8080
cat >"$WORK/compose.yml" <<YML
version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  cache:
    blobdescriptor: inmemory
  filesystem:
    rootdirectory: $WORK/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$P
  secret: asecretforlocaldevelopment
  tls:
    certificate: $WORK/tls.crt
    key: $WORK/tls.key
  headers:
    X-Content-Type-Options: [nosniff]
    Access-Control-Allow-Origin: ['$UI']
    Access-Control-Allow-Methods: ['HEAD', 'GET', 'OPTIONS', 'DELETE']
    Access-Control-Allow-Headers: ['Authorization', 'Accept', 'Cache-Control']
    Access-Control-Max-Age: [1728000]
    Access-Control-Allow-Credentials: [true]
    Access-Control-Expose-Headers: ['Docker-Content-Digest']
auth:
  htpasswd:
    realm: Registry Realm
    path: $WORK/htpasswd
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
YML
run_dist "$WORK/compose.yml" "https://127.0.0.1:$P/v2/"
$SK copy -q --dest-tls-verify=false --dest-creds ci:ci-pass "oci:$WORK/img:v1" "docker://127.0.0.1:$P/team/app:v1" \
  || fail "push to Distribution"
stop_pid "$DIST_PID"
convert "$WORK/compose.yml" "$WORK/compose.toml"
run_regd "$WORK/compose.toml" "https://127.0.0.1:$P/v2/"
R=127.0.0.1:$P
got=$($SK inspect --tls-verify=false --creds ci:ci-pass --raw "docker://$R/team/app:v1" | sha256sum | cut -d' ' -f1)
[ "sha256:$got" = "$WANT" ] || fail "registryd serves another manifest than Distribution stored"
h=$(curl -sk -D- -o /dev/null "https://$R/v2/" | tr -d '\r')
grep -q '^HTTP/[0-9.]* 401' <<<"$h" && grep -qi '^www-authenticate: Basic realm="Registry Realm"' <<<"$h" \
  || fail "anonymous /v2/ not challenged with the realm: $h"
grep -qi '^x-content-type-options: nosniff' <<<"$h" || fail "nosniff header missing"
pre=$(curl -sk -D- -o /dev/null -X OPTIONS -H "Origin: $UI" -H 'Access-Control-Request-Method: DELETE' \
  -H 'Access-Control-Request-Headers: Authorization' "https://$R/v2/team/app/manifests/v1" | tr -d '\r')
grep -qi "^access-control-allow-origin: $UI" <<<"$pre" && grep -qi '^access-control-allow-methods:.*DELETE' <<<"$pre" \
  && grep -qi '^access-control-allow-credentials: true' <<<"$pre" && grep -qi '^access-control-max-age: 1728000' <<<"$pre" \
  || fail "CORS preflight from the UI origin: $pre"
code=$(curl -sk -u ci:ci-pass -o /dev/null -w '%{http_code}' -X DELETE "https://$R/v2/team/app/manifests/$WANT")
[ "$code" = 202 ] || fail "delete (storage.delete.enabled) answered $code"
stop_pid "$REGD_PID"
pass "compose-style config: Distribution's data served with TLS, the login realm, nosniff, the UI's CORS, deletes ($(wc -l <"$WORK/compose.toml.warnings") warnings)"

# --- (2) pull-through mirror with upstream credentials.
UP=$(free_port) M=$(free_port)
start_registryd --tls up "$UP" "$WORK/up-data" - <<EOF
[auth]
htpasswd = "$WORK/htpasswd"
anonymous = "none"
EOF
$SK copy -q --dest-tls-verify=false --dest-creds ci:ci-pass "oci:$WORK/img:v1" "docker://127.0.0.1:$UP/library/tool:v1"
cat >"$WORK/mirror.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $WORK/mirror-data
http:
  addr: 127.0.0.1:$M
proxy:
  remoteurl: https://127.0.0.1:$UP
  username: ci
  password: ci-pass
  ttl: 168h
YML
convert "$WORK/mirror.yml" "$WORK/mirror.toml"
grep -q "^url = \"https://127.0.0.1:$UP\"" "$WORK/mirror.toml" && grep -q '^username = "ci"' "$WORK/mirror.toml" \
  || fail "upstream not in the converted mirror config: $(cat "$WORK/mirror.toml")"
# The upstream's certificate comes from this test's CA: the mirror trusts it.
sed -i "s|^\\[\\[upstream\\]\\]|[[upstream]]\\nca = \"$WORK/ca.crt\"|" "$WORK/mirror.toml"
run_regd "$WORK/mirror.toml" "http://127.0.0.1:$M/v2/"
got=$($SK inspect --tls-verify=false --raw "docker://127.0.0.1:$M/library/tool:v1" | sha256sum | cut -d" " -f1) || true
[ "sha256:$got" = "$WANT" ] || fail "the converted mirror did not serve library/tool:v1 from the upstream"
pass "proxy.remoteurl with credentials: the converted mirror serves library/tool:v1 from the upstream, by the bare name, as clients of a Distribution mirror ask"

# --- (3) htpasswd without TLS, (4) Debian's packaged config.
H=$(free_port)
cat >"$WORK/basic.yml" <<YML
version: 0.1
storage: {filesystem: {rootdirectory: $WORK/basic-data}}
http: {addr: "127.0.0.1:$H"}
auth: {htpasswd: {realm: basic-realm, path: $WORK/htpasswd}}
YML
convert "$WORK/basic.yml" "$WORK/basic.toml"
grep -q "allow_plain_http" "$WORK/basic.toml.warnings" || fail "no warning about passwords in clear text"
run_regd "$WORK/basic.toml" "http://127.0.0.1:$H/v2/"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$H/v2/")" = 401 ] || fail "plain htpasswd: anonymous not refused"
$SK copy -q --dest-tls-verify=false --dest-creds ci:ci-pass "oci:$WORK/img:v1" "docker://127.0.0.1:$H/x/y:v1" \
  || fail "plain htpasswd: push with the login"
convert /etc/docker/registry/config.yml "$WORK/debian.toml"
pass "htpasswd over plain HTTP converts to a login-only registry (with its warning); Debian's config.yml converts and validates"

printf 'http:\n  addr: [unclosed\n' >"$WORK/broken.yml"
err=$("$TEST_REGISTRYD_BIN" import-config "$WORK/broken.yml" 2>&1) && fail "broken YAML converted"
grep -q "not valid YAML" <<<"$err" || fail "unclear error: $err"
pass "broken YAML: '$err'"
