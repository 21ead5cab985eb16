#!/usr/bin/env bash
# Pull-through cache against real upstreams on 127.0.0.1: CNCF Distribution 2.8.2 with TLS and
# htpasswd (named docker.io here), and a second Distribution behind a Bearer token server (named
# quay.test). skopeo pulls by each naming form, containerd pulls with registryd as its mirror,
# coalescing is counted in the upstream's access log, tags follow their TTL, and cached images are
# served when the upstream is gone.
source "$(dirname "$0")/lib/common.sh"

command -v docker-registry >/dev/null || fail "docker-registry missing: apt-get install docker-registry"
command -v htpasswd >/dev/null || fail "htpasswd missing: apt-get install apache2-utils"
ensure_venv
SK="skopeo --insecure-policy"

# --- Certificates: a test CA and a leaf for 127.0.0.1.
mkdir -p "$WORK/tls" "$WORK/certs.d"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=proxy test CA" \
  -keyout "$WORK/tls/ca.key" -out "$WORK/tls/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
  -keyout "$WORK/tls/leaf.key" -out "$WORK/tls/leaf.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$WORK/tls/ext"
openssl x509 -req -in "$WORK/tls/leaf.csr" -CA "$WORK/tls/ca.crt" -CAkey "$WORK/tls/ca.key" \
  -CAcreateserial -days 2 -extfile "$WORK/tls/ext" -out "$WORK/tls/leaf.crt" 2>/dev/null
cp "$WORK/tls/ca.crt" "$WORK/certs.d/ca.crt"

# --- Upstream A: "docker.io", TLS + htpasswd (bcrypt).
PA=$(free_port)
htpasswd -Bbn hubuser hubpass >"$WORK/htpasswd" 2>/dev/null
cat >"$WORK/a.yml" <<YML
version: 0.1
log: {level: info, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: $WORK/a-data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$PA, tls: {certificate: $WORK/tls/leaf.crt, key: $WORK/tls/leaf.key}}
auth: {htpasswd: {realm: upstream-a, path: $WORK/htpasswd}}
YML
start_a() {
  docker-registry serve "$WORK/a.yml" >>"$WORK/a.log" 2>&1 &
  A_PID=$!
  PIDS+=("$A_PID")
  for _ in $(seq 1 100); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --cacert "$WORK/tls/ca.crt" "https://127.0.0.1:$PA/v2/")" = 401 ] && return 0
    sleep 0.1
  done
  cat "$WORK/a.log"; fail "upstream A did not start"
}
start_a

# --- Upstream B: "quay.test", plain HTTP, Bearer tokens from our token server.
PB=$(free_port) PT=$(free_port)
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=token signer" \
  -keyout "$WORK/token.key" -out "$WORK/token.crt" 2>/dev/null
"$PY" "$SYS_DIR/lib/token_server.py" "$PT" "$WORK/token.key" test-service test-issuer \
  quayuser:quaypass "$WORK/token.log" >"$WORK/token-server.log" 2>&1 &
PIDS+=("$!")
cat >"$WORK/b.yml" <<YML
version: 0.1
log: {level: info}
storage: {filesystem: {rootdirectory: $WORK/b-data}}
http: {addr: 127.0.0.1:$PB}
auth:
  token: {realm: "http://127.0.0.1:$PT/token", service: test-service, issuer: test-issuer, rootcertbundle: $WORK/token.crt}
YML
docker-registry serve "$WORK/b.yml" >"$WORK/b.log" 2>&1 &
B_PID=$!
PIDS+=("$B_PID")
for _ in $(seq 1 100); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PB/v2/")" = 401 ] && break
  sleep 0.1
done

# --- Images on the upstreams, pushed straight to them.
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/alpine" v1 --layer-bytes 300000 >/dev/null
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/alpine2" v2 --layer-bytes 300000 >/dev/null
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/other" v1 >/dev/null
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/tool" v1 --arch amd64 --arch arm64 >/dev/null
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/private" v1 >/dev/null
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/warm" v1 --arch amd64 --arch arm64 >/dev/null
to_a() { $SK copy -q --dest-creds hubuser:hubpass --dest-cert-dir "$WORK/certs.d" "$1" "docker://127.0.0.1:$PA/$2"; }
to_a "oci:$WORK/alpine:v1" library/alpine:3.20 || fail "push to upstream A"
# 100 MiB that does not compress, pushed as a bare blob (monolithic POST + PUT).
head -c $((100 * 1024 * 1024)) /dev/urandom >"$WORK/big.blob"
BIG=sha256:$(sha256sum <"$WORK/big.blob" | cut -d' ' -f1)
loc=$(curl -fsS -u hubuser:hubpass --cacert "$WORK/tls/ca.crt" -X POST -D - -o /dev/null \
  "https://127.0.0.1:$PA/v2/library/big/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
case $loc in http*) ;; *) loc="https://127.0.0.1:$PA$loc" ;; esac
sep='?'; case $loc in *\?*) sep='&' ;; esac
curl -fsS -u hubuser:hubpass --cacert "$WORK/tls/ca.crt" -X PUT -H 'Content-Type: application/octet-stream' \
  --data-binary @"$WORK/big.blob" "$loc${sep}digest=$BIG" -o /dev/null || fail "push of the 100 MiB blob to upstream A"
to_a "oci:$WORK/other:v1" library/other:v1 || fail "push other image to upstream A"
$SK copy -q --all --dest-creds hubuser:hubpass --dest-cert-dir "$WORK/certs.d" \
  "oci:$WORK/warm:v1" "docker://127.0.0.1:$PA/library/warm:v1" || fail "push multi-platform image to upstream A"
$SK copy -q --all --dest-tls-verify=false --dest-creds quayuser:quaypass \
  "oci:$WORK/tool:v1" "docker://127.0.0.1:$PB/org/tool:v1" || { cat "$WORK/b.log" | tail -5; fail "push to upstream B (token auth)"; }
upstream_digest() { # REF (on A)
  $SK inspect --raw --creds hubuser:hubpass --cert-dir "$WORK/certs.d" "docker://127.0.0.1:$PA/$1" | sha256sum | cut -d' ' -f1
}
ALPINE1=$(upstream_digest library/alpine:3.20)

# --- registryd with both upstreams.
PR=$(free_port)
printf 'quaypass\n' >"$WORK/quay.password"
start_registryd proxy "$PR" "$WORK/data" - <<TOML
[proxy]
default_upstream = "docker.io"
tag_ttl_secs = 8
upstream_timeout_secs = 5
[[upstream]]
name = "docker.io"
url = "https://127.0.0.1:$PA"
username = "hubuser"
password = "hubpass"
ca = "$WORK/tls/ca.crt"
[[upstream]]
name = "quay.test"
url = "http://127.0.0.1:$PB"
username = "quayuser"
password_file = "$WORK/quay.password"
TOML
R=127.0.0.1:$PR
grep -q "pull-through cache on" "$WORK/proxy.log" || fail "registryd did not log its upstreams"
"$TEST_REGISTRYD_BIN" check-config --config "$WORK/proxy.toml" | has hubpass \
  && fail "check-config printed an upstream password"

# 1. The three naming forms: host prefix, bare name (default upstream), containerd's ns.
pull() { # REF DEST
  rm -rf "$2"
  $SK copy -q --src-tls-verify=false "docker://$R/$1" "oci:$2:x"
}
pull docker.io/library/alpine:3.20 "$WORK/p1" || { tail -20 "$WORK/proxy.log"; fail "skopeo pull by prefix"; }
got=$($SK inspect --raw --tls-verify=false "docker://$R/docker.io/library/alpine:3.20" | sha256sum | cut -d' ' -f1)
[ "$got" = "$ALPINE1" ] || fail "prefix form served a different manifest"
for b in "$WORK/alpine/blobs/sha256/"*; do
  cmp -s "$b" "$WORK/p1/blobs/sha256/$(basename "$b")" || fail "blob $(basename "$b") differs after a pull through the cache"
done
pass "skopeo pulls docker.io/library/alpine:3.20 through the cache, byte-identical"
pull docker.io/alpine:3.20 "$WORK/p1b" || fail "single-segment docker.io name (library/)"
pull library/alpine:3.20 "$WORK/p2" || fail "skopeo pull by bare name (registry-mirrors form)"
pass "bare name library/alpine and docker.io/alpine go to the default upstream"
code=$(curl -s -o "$WORK/ns.json" -w '%{http_code}' \
  -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$R/v2/library/other/manifests/v1?ns=docker.io")
[ "$code" = 200 ] || fail "ns=docker.io form answered $code"
cfg=$(jq -r .config.digest "$WORK/ns.json")
curl -fs "http://$R/v2/library/other/blobs/$cfg?ns=docker.io" | sha256sum | has "${cfg#sha256:}" \
  || fail "blob through the ns form"
pass "containerd's ?ns=docker.io form (curl)"
pull quay.test/org/tool:v1 "$WORK/p3" || { tail -20 "$WORK/proxy.log"; fail "pull through the token-auth upstream"; }
grep -q "^user repository:org/tool:pull" "$WORK/token.log" || fail "registryd did not present its credentials to the token server"
$SK copy -q --all --src-tls-verify=false "docker://$R/quay.test/org/tool:v1" "oci:$WORK/p3all:x" \
  || fail "pull of every platform of an index through the cache"
pass "Bearer token upstream: index and both platforms pulled with registryd's credentials"

# 2. A private name outside the default patterns is never looked up upstream.
code=$(curl -s -o "$WORK/team.json" -w '%{http_code}' "http://$R/v2/team/app/manifests/v1")
[ "$code" = 404 ] || fail "missing private team/app answered $code"
grep -q "team/app" "$WORK/a.log" && fail "upstream A was asked for the private name team/app"
pass "missing private team/app: 404, and no upstream heard the name"

# 3. Push and cache in one namespace.
$SK copy -q --dest-tls-verify=false "oci:$WORK/private:v1" "docker://$R/team/app:v1" || fail "private push"
$SK copy -q --dest-tls-verify=false "oci:$WORK/private:v1" "docker://$R/docker.io/library/alpine:evil" 2>"$WORK/deny.err" \
  && fail "a push into docker.io/ was accepted"
grep -qi "denied\|read-only" "$WORK/deny.err" || { cat "$WORK/deny.err"; fail "a refused push did not say why"; }
pull team/app:v1 "$WORK/p4" || fail "pull of the private image"
pull docker.io/library/alpine:3.20 "$WORK/p5" || fail "pull of the cached image next to a private one"
cat_json=$(curl -fs "http://$R/v2/_catalog")
for r in team/app docker.io/library/alpine quay.test/org/tool; do
  jq -e --arg r "$r" '.repositories | index($r)' <<<"$cat_json" >/dev/null || fail "catalog lacks $r: $cat_json"
done
curl -fs "http://$R/v2/docker.io/library/alpine/tags/list" | jq -e '.tags | index("3.20")' >/dev/null \
  || fail "tags list of a cached repository"
pass "private push and cached pull in one registry; push into an upstream prefix refused with DENIED"

# 4. Coalescing: 20 concurrent GETs of one uncached 100 MiB blob, one upstream GET.
upstream_gets() { grep -cE "\"GET /v2/library/big/blobs/$BIG HTTP/[0-9.]+\" 200 " "$WORK/a.log" || true; }
before=$(upstream_gets)
pids=()
for i in $(seq 1 20); do
  curl -fs "http://$R/v2/docker.io/library/big/blobs/$BIG" -o "$WORK/big.$i" &
  pids+=("$!")
done
for p in "${pids[@]}"; do wait "$p" || fail "a concurrent pull of the big blob failed"; done
for i in $(seq 1 20); do
  [ "$(sha256sum <"$WORK/big.$i" | cut -d' ' -f1)" = "${BIG#sha256:}" ] || fail "concurrent pull $i got other bytes"
done
rm -f "$WORK"/big.*
sleep 1
gets=$(( $(upstream_gets) - before ))
[ "$gets" = 1 ] || { grep "library/big/blobs" "$WORK/a.log" | tail; fail "20 concurrent pulls made $gets upstream GETs, not 1"; }
pass "20 concurrent pulls of an uncached 100 MiB blob: all verified, 1 upstream GET"

# 5. Tag TTL: retag upstream; within the TTL the cached manifest, after it the new one.
pull docker.io/library/alpine:3.20 "$WORK/p6" >/dev/null || fail "pull before retag"
sleep 9
$SK inspect --raw --tls-verify=false "docker://$R/docker.io/library/alpine:3.20" >/dev/null
t0=$(date +%s)
to_a "oci:$WORK/alpine2:v2" library/alpine:3.20 || fail "retag upstream"
ALPINE2=$(upstream_digest library/alpine:3.20)
[ "$ALPINE2" != "$ALPINE1" ] || fail "the retag did not change the upstream digest"
got=$($SK inspect --raw --tls-verify=false "docker://$R/docker.io/library/alpine:3.20" | sha256sum | cut -d' ' -f1)
if [ $(( $(date +%s) - t0 )) -lt 6 ]; then
  [ "$got" = "$ALPINE1" ] || fail "within the TTL the cached manifest should be served"
fi
sleep 9
got=$($SK inspect --raw --tls-verify=false "docker://$R/docker.io/library/alpine:3.20" | sha256sum | cut -d' ' -f1)
[ "$got" = "$ALPINE2" ] || fail "after the TTL the new upstream manifest should be served"
pull docker.io/library/alpine:3.20 "$WORK/p7" || fail "pull of the retagged image"
pass "tag TTL: cached manifest before it, the upstream's new one after it"

# 6. containerd with registryd as the docker.io mirror (hosts.toml): it sends ?ns=docker.io.
if command -v containerd >/dev/null && command -v ctr >/dev/null; then
  mkdir -p "$WORK/ctrd/hosts/docker.io"
  cat >"$WORK/ctrd/hosts/docker.io/hosts.toml" <<TOML
server = "https://registry-1.docker.io"
[host."http://$R"]
  capabilities = ["pull", "resolve"]
TOML
  cat >"$WORK/ctrd/config.toml" <<TOML
version = 2
root = "$WORK/ctrd/root"
state = "$WORK/ctrd/state"
[grpc]
  address = "$WORK/ctrd/sock"
[plugins."io.containerd.grpc.v1.cri"]
  disable = true
TOML
  containerd --config "$WORK/ctrd/config.toml" >"$WORK/ctrd.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 1 100); do [ -S "$WORK/ctrd/sock" ] && break; sleep 0.1; done
  ctr --address "$WORK/ctrd/sock" -n regtest content fetch --hosts-dir "$WORK/ctrd/hosts" \
    docker.io/library/other:v1 >"$WORK/ctr.out" 2>&1 || { cat "$WORK/ctr.out"; tail -5 "$WORK/ctrd.log"; fail "ctr pull through the mirror"; }
  # registry-1.docker.io is unreachable from here: the image can only have come through the mirror.
  grep -q "path=/v2/library/other/manifests/" "$WORK/proxy.log" || fail "containerd did not go through registryd"
  ctr --address "$WORK/ctrd/sock" -n regtest images ls -q | has "docker.io/library/other:v1" \
    || fail "containerd did not record the image it pulled"
  pass "containerd (ctr, hosts.toml mirror) pulls docker.io/library/other:v1 through registryd"
else
  fail "containerd is not installed (apt-get install containerd)"
fi

# 7. Pre-warming with `registryd pull` while the daemon runs: one platform of an index.
"$TEST_REGISTRYD_BIN" pull --config "$WORK/proxy.toml" --storage "$WORK/data" --platform linux/arm64 \
  docker.io/library/warm:v1 >"$WORK/warm.out" 2>"$WORK/warm.err" || { cat "$WORK/warm.err"; fail "registryd pull"; }
grep -q "docker.io/library/warm:v1: 2 manifests, 2 blobs fetched" "$WORK/warm.out" || { cat "$WORK/warm.out" "$WORK/warm.err"; fail "registryd pull summary"; }
"$TEST_REGISTRYD_BIN" pull --config "$WORK/proxy.toml" --storage "$WORK/data" team/app:v1 2>"$WORK/warm2.err" \
  && fail "registryd pull of a private name succeeded"
grep -q "not under an upstream" "$WORK/warm2.err" || { cat "$WORK/warm2.err"; fail "unclear registryd pull error"; }
pass "registryd pull --platform linux/arm64 pre-warms one platform of an index"

# 8. Offline: stop upstream A; cached images are served (marked stale), uncached ones fail clearly.
stop_pid "$A_PID"
sleep 9  # past the TTL, so the tag is checked with the unreachable upstream
pull docker.io/library/alpine:3.20 "$WORK/p8" || { tail -5 "$WORK/proxy.log"; fail "cached image with the upstream down"; }
curl -s -D "$WORK/stale.h" -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
  "http://$R/v2/docker.io/library/alpine/manifests/3.20"
grep -qi "^x-registryd-cache: stale" "$WORK/stale.h" || { cat "$WORK/stale.h"; fail "a stale manifest was not marked stale"; }
grep -qi "^warning: 110" "$WORK/stale.h" || fail "no Warning header on a stale manifest"
grep -q "serving the cached manifest" "$WORK/proxy.log" || fail "no warning logged for a stale manifest"
code=$(curl -s -o "$WORK/offline.json" -w '%{http_code}' "http://$R/v2/docker.io/library/never/manifests/v1")
[ "$code" = 502 ] || fail "uncached image with the upstream down answered $code"
jq -e '.errors[0].message | test("unreachable")' "$WORK/offline.json" >/dev/null || fail "unclear offline error: $(cat "$WORK/offline.json")"
grep -q hubpass "$WORK/proxy.log" && fail "the upstream password reached the log"
$SK copy -q --src-tls-verify=false --override-arch arm64 "docker://$R/docker.io/library/warm:v1" "oci:$WORK/p9:x" \
  || fail "the pre-warmed arm64 image with the upstream down"
$SK copy -q --src-tls-verify=false --override-arch amd64 "docker://$R/docker.io/library/warm:v1" "oci:$WORK/p10:x" 2>/dev/null \
  && fail "the amd64 image was never fetched, yet pulled offline"
pass "upstream down: cached image served (stale, Warning header, logged), pre-warmed platform served, uncached one 502 'unreachable'"

# 9. Cache size limit: least recently pulled cached image goes; a pushed image's blobs never do.
for x in a b c; do
  python3 "$SYS_DIR/lib/mkimage.py" "$WORK/ev-$x" v1 --layer-bytes 2000000 >/dev/null
  $SK copy -q --dest-tls-verify=false --dest-creds quayuser:quaypass \
    "oci:$WORK/ev-$x:v1" "docker://127.0.0.1:$PB/org/ev-$x:v1" || fail "push ev-$x to upstream B"
done
layout_bytes() { find "$1/blobs" -type f -printf '%s\n' | awk '{s+=$1} END {print s}'; }
SA=$(layout_bytes "$WORK/ev-a") SC=$(layout_bytes "$WORK/ev-c")
LIMIT=$(( SC + SA / 2 ))
PE=$(free_port)
start_registryd evict "$PE" "$WORK/data2" - <<TOML
[proxy]
max_cache_bytes = $LIMIT
evict_interval_secs = 1
[[upstream]]
name = "quay.test"
url = "http://127.0.0.1:$PB"
username = "quayuser"
password_file = "$WORK/quay.password"
TOML
E=127.0.0.1:$PE
$SK copy -q --src-tls-verify=false "docker://$E/quay.test/org/ev-a:v1" "oci:$WORK/e1:x" || fail "pull ev-a"
blob_path() { echo "$WORK/data2/docker/registry/v2/blobs/sha256/${1:0:2}/$1/data"; }
A_LAYER=$(find "$WORK/ev-a/blobs/sha256" -type f -printf '%s %f\n' | sort -n | tail -1 | cut -d' ' -f2)
[ -n "$A_LAYER" ] && [ -e "$(blob_path "$A_LAYER")" ] || fail "ev-a's layer was not cached"
sleep 1.2
$SK copy -q --src-tls-verify=false "docker://$E/quay.test/org/ev-b:v1" "oci:$WORK/e2:x" || fail "pull ev-b"
# A private image made of ev-b's very blobs: they are pinned from now on.
$SK copy -q --dest-tls-verify=false "oci:$WORK/ev-b:v1" "docker://$E/team/keep:v1" || fail "push team/keep"
sleep 1.2
$SK copy -q --src-tls-verify=false "docker://$E/quay.test/org/ev-c:v1" "oci:$WORK/e3:x" || fail "pull ev-c"
for _ in $(seq 1 100); do [ -e "$(blob_path "$A_LAYER")" ] || break; sleep 0.2; done
[ -e "$(blob_path "$A_LAYER")" ] && { tail -5 "$WORK/evict.log"; fail "the cache went over its limit ($LIMIT bytes) and ev-a was not evicted"; }
grep -q "cache eviction pass" "$WORK/evict.log" || fail "no eviction logged"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$E/v2/quay.test/org/ev-a/tags/list")
tags=$(curl -s "http://$E/v2/quay.test/org/ev-a/tags/list" | jq -c '.tags // []')
[ "$tags" = "[]" ] || [ "$code" = 404 ] || fail "ev-a still tagged after its eviction: $tags"
for f in "$WORK/ev-b/blobs/sha256/"* "$WORK/ev-c/blobs/sha256/"*; do
  [ -e "$(blob_path "$(basename "$f")")" ] || fail "eviction removed $(basename "$f"), which ev-b (pushed) or ev-c (recent) uses"
done
$SK copy -q --src-tls-verify=false "docker://$E/team/keep:v1" "oci:$WORK/e4:x" || fail "the pushed image after an eviction"
$SK copy -q --src-tls-verify=false "docker://$E/quay.test/org/ev-a:v1" "oci:$WORK/e5:x" || fail "ev-a fetched again after its eviction"
pass "cache limit $LIMIT bytes: oldest pulled image evicted (blobs freed), pushed and recent ones kept, evicted one re-fetched on demand"
