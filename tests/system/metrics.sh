#!/usr/bin/env bash
# Prometheus metrics, scraped and parsed by the reference parser (Python prometheus_client's
# OpenMetrics parser, Debian's python3-prometheus-client): request counts by method, route kind and
# status after real skopeo pushes and pulls, latency histograms, bytes, uploads in progress, cache
# hits, misses and upstream errors per upstream (a second registryd as the upstream, and one that is
# down), storage checks, certificate expiry, GC runs and bytes freed. /metrics is on the loopback
# listener only by default; a LAN-style listener serves it when listed, with a login when
# metrics.users is set. Runs in a network namespace of its own (for the second address).
if [ -z "${METRICS_IN_NETNS:-}" ]; then
  exec env METRICS_IN_NETNS=1 unshare --net bash "$0" "$@"
fi
ip link set lo up
ip addr add 10.77.0.1/32 dev lo
source "$(dirname "$0")/lib/common.sh"

PY=/usr/bin/python3
$PY -c 'import prometheus_client.openmetrics.parser' 2>/dev/null \
  || fail "python3-prometheus-client missing: apt-get install python3-prometheus-client"

loopback_cert
htpasswd -Bbc "$WORK/htpasswd" prom prom-pass 2>/dev/null
htpasswd -Bb "$WORK/htpasswd" ci ci-pass 2>/dev/null
UP=$(free_port) P=$(free_port) DOWN=$(free_port)
start_registryd upstream "$UP" "$WORK/upstream-data"
R=127.0.0.1:$P LAN=10.77.0.1:$P

FRAGMENT=$(cat <<EOF
[server]
listen = ["127.0.0.1:$P", "$LAN"]
[storage]
check_interval_secs = 1
[auth]
htpasswd = "$WORK/htpasswd"
anonymous_by_listener = ["127.0.0.1:$P=all"]
[proxy]
upstream_timeout_secs = 2
[[upstream]]
name = "up.test"
url = "http://127.0.0.1:$UP"
[[upstream]]
name = "down.test"
url = "http://127.0.0.1:$DOWN"
EOF
)
start_registryd --tls reg "$P" "$WORK/data" "$FRAGMENT"

scrape() { # [curl args]: the metrics of the loopback listener, parsed; prints a JSON summary
  curl -sk --fail "$@" "https://$R/metrics" >"$WORK/metrics.txt" || return 1
  $PY - "$WORK/metrics.txt" <<'PYEOF'
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in fam.samples:
        key = s.name + json.dumps(dict(sorted(s.labels.items())), separators=(",", ":"))
        out[key] = s.value
print(json.dumps(out))
PYEOF
}
val() { # JSON NAME LABELS-JSON: the sample's value, or 0
  jq -r --arg k "$2$3" '.[$k] // 0' <<<"$1"
}

python3 "$SYS_DIR/lib/mkimage.py" "$WORK/img" v1 >/dev/null
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/img2" v2 --layer-bytes 4000 >/dev/null
SK="skopeo --insecure-policy"
$SK copy -q --dest-tls-verify=false "oci:$WORK/img:v1" "docker://$R/team/app:v1"
$SK copy -q --dest-tls-verify=false "oci:$WORK/img2:v2" "docker://$R/team/app:v2"
$SK copy -q --src-tls-verify=false "docker://$R/team/app:v1" "oci:$WORK/pulled:v1"
# Through the cache: an image on the upstream, pulled twice (miss, then hit); one from a dead upstream.
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/img3" v1 --seed upstream-only >/dev/null
$SK copy -q --dest-tls-verify=false "oci:$WORK/img3:v1" "docker://127.0.0.1:$UP/lib/tool:v1"
$SK copy -q --src-tls-verify=false "docker://$R/up.test/lib/tool:v1" "oci:$WORK/cached:v1"
$SK copy -q --src-tls-verify=false "docker://$R/up.test/lib/tool:v1" "oci:$WORK/cached2:v1"
$SK copy -q --src-tls-verify=false "docker://$R/down.test/lib/x:v1" "oci:$WORK/never:v1" 2>/dev/null \
  && fail "a pull from a dead upstream succeeded"
# GC frees the deleted tag's manifest and its own layer.
D2=$(curl -sk -o /dev/null -w '%header{docker-content-digest}' -H 'Accept: application/vnd.oci.image.manifest.v1+json' "https://$R/v2/team/app/manifests/v2")
code=$(curl -sk -o /dev/null -w "%{http_code}" -X DELETE "https://$R/v2/team/app/manifests/$D2"); [ "$code" = 202 ] \
  || fail "delete of team/app:v2 ($D2): $code"

m=$(scrape) || fail "GET /metrics on the loopback listener failed"
curl -sk -D- -o /dev/null "https://$R/metrics" | tr -d '\r' | has -i '^content-type: application/openmetrics-text' \
  || fail "content type is not OpenMetrics"

puts=$(val "$m" registryd_http_requests_total '{"method":"PUT","route":"manifest","status":"201"}')
[ "${puts%.*}" -ge 2 ] || fail "manifest PUT 201 counted $puts times, expected 2"
gets=$(val "$m" registryd_http_requests_total '{"method":"GET","route":"blob","status":"200"}')
[ "${gets%.*}" -ge 2 ] || fail "blob GET 200 counted $gets times"
[ "$(val "$m" registryd_http_requests_total '{"method":"DELETE","route":"manifest","status":"202"}')" = 1 ] \
  || fail "manifest DELETE not counted once"
upl=$(val "$m" registryd_http_requests_total '{"method":"POST","route":"upload","status":"202"}')
[ "${upl%.*}" -ge 1 ] || fail "upload POST not counted"
cnt=$(val "$m" registryd_http_request_duration_seconds_count '{"method":"PUT","route":"manifest"}')
inf=$(val "$m" registryd_http_request_duration_seconds_bucket '{"le":"+Inf","method":"PUT","route":"manifest"}')
[ "$cnt" = "$inf" ] && [ "${cnt%.*}" -ge 2 ] || fail "latency histogram: count $cnt, +Inf bucket $inf"
pass "requests by method, route and status; latency histogram (manifest PUT x${puts%.*}, blob GET x${gets%.*})"

rx=$(val "$m" registryd_network_receive_bytes_total '{}') tx=$(val "$m" registryd_network_transmit_bytes_total '{}')
# At least every pushed blob came in and every pulled one went out.
pushed=$(cat "$WORK"/img/blobs/sha256/* "$WORK"/img2/blobs/sha256/* | wc -c)
pulled=$(cat "$WORK"/pulled/blobs/sha256/* | wc -c)
$PY -c "import sys; sys.exit(0 if $rx >= $pushed and $tx >= $pulled else 1)" \
  || fail "bytes in $rx (pushed $pushed) / out $tx (pulled $pulled)"
[ "$(val "$m" registryd_uploads_in_progress '{}')" = 0 ] || fail "uploads in progress not back to 0"
pass "bytes in ${rx%.*} and out ${tx%.*}; uploads in progress 0 after the pushes"

miss=$(val "$m" registryd_cache_requests_total '{"kind":"manifest","result":"miss","upstream":"up.test"}')
hit=$(val "$m" registryd_cache_requests_total '{"kind":"manifest","result":"hit","upstream":"up.test"}')
bmiss=$(val "$m" registryd_cache_requests_total '{"kind":"blob","result":"miss","upstream":"up.test"}')
bhit=$(val "$m" registryd_cache_requests_total '{"kind":"blob","result":"hit","upstream":"up.test"}')
down=$(val "$m" registryd_upstream_errors_total '{"error":"unreachable","upstream":"down.test"}')
[ "${miss%.*}" -ge 1 ] && [ "${hit%.*}" -ge 1 ] && [ "${bmiss%.*}" -ge 1 ] && [ "${bhit%.*}" -ge 1 ] \
  || fail "cache: manifest miss $miss hit $hit, blob miss $bmiss hit $bhit"
[ "${down%.*}" -ge 1 ] || fail "unreachable upstream not counted ($down)"
pass "cache per upstream: manifest miss ${miss%.*} hit ${hit%.*}, blob miss ${bmiss%.*} hit ${bhit%.*}; down.test unreachable x${down%.*}"

ok=$(val "$m" registryd_storage_checks_total '{"result":"ok"}')
[ "${ok%.*}" -ge 1 ] && [ "$(val "$m" registryd_storage_ready '{}')" = 1 ] || fail "storage checks $ok"
want=$(date -d "$(openssl x509 -in "$WORK/tls.crt" -noout -enddate | cut -d= -f2)" +%s)
got=$(val "$m" registryd_tls_certificate_expiry_timestamp_seconds '{}')
[ "${got%.*}" = "$want" ] || fail "certificate expiry gauge $got, certificate says $want"
pass "storage checks ok x${ok%.*}, ready; certificate expiry $want"

# Listener and login rules.
[ "$(curl -sk -o /dev/null -w '%{http_code}' "https://$LAN/metrics")" = 404 ] \
  || fail "metrics served on a non-local listener by default"
kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
# Second start: GC every second with no grace (nothing is pushed any more), and metrics for the
# LAN listener too, behind a login.
start_registryd --tls reg2 "$P" "$WORK/data" - <<EOF
$FRAGMENT
[gc]
interval_secs = 1
grace_secs = 0
[metrics]
listeners = ["local", "$LAN"]
users = ["prom"]
EOF
[ "$(curl -sk -o /dev/null -w '%{http_code}' "https://$R/metrics")" = 401 ] || fail "loopback serves metrics without a login"
h=$(curl -sk -D- -o /dev/null "https://$LAN/metrics" | tr -d '\r')
grep -q '^HTTP/[0-9.]* 401' <<<"$h" && grep -qi '^www-authenticate: Basic' <<<"$h" || fail "no Basic challenge: $h"
[ "$(curl -sk -u ci:ci-pass -o /dev/null -w '%{http_code}' "https://$LAN/metrics")" = 401 ] \
  || fail "a user not in metrics.users read the metrics"
curl -sk --fail -u prom:prom-pass "https://$LAN/metrics" | has '^registryd_build_info{version=' \
  || fail "prom could not read the metrics"
pass "metrics.listeners and metrics.users: 404 where not listed, 401 Basic without the login, 200 for prom"

for _ in $(seq 1 100); do
  m=$(scrape -u prom:prom-pass) || fail "scrape with the login failed"
  [ "$(val "$m" registryd_gc_freed_bytes_total '{}')" != 0 ] && break
  sleep 0.2
done
freed=$(val "$m" registryd_gc_freed_bytes_total '{}')
runs=$(val "$m" registryd_gc_runs_total '{"result":"done"}')
last=$(val "$m" registryd_gc_last_run_timestamp_seconds '{}')
[ "${freed%.*}" -gt 0 ] && [ "${runs%.*}" -ge 1 ] || fail "gc: runs $runs freed $freed"
$PY -c "import sys,time; sys.exit(0 if abs(time.time() - $last) < 60 else 1)" || fail "gc last run time $last"
pass "GC runs ${runs%.*}, ${freed%.*} bytes freed (the deleted tag's manifest and own layer)"
