#!/usr/bin/env bash
# Clients that stop taking what they asked for cannot make registryd hold memory, and uploads
# trickled a byte at a time cannot hold its upload slots (issue 21, #3 and the trickle):
# - HTTP/2 connections that announce a flow-control window of 1 byte, open as many GETs of a 1 MiB
#   blob as the server allows, never send WINDOW_UPDATE and PING every second: RSS stays under a
#   bound, other clients are served meanwhile, the connections are closed within the send stall
#   timeout (PINGs do not keep them), and RSS comes back near where it started once they are gone;
# - rapid reset and a SETTINGS/PING flood, briefly: RSS bounded, others served;
# - four uploads trickling one byte every half second are cut off (408) after the body timeout's
#   span, so a fifth upload gets its slot.
source "$(dirname "$0")/lib/common.sh"
ensure_venv
A="$PY $SYS_DIR/lib/h2_abuse.py"
loopback_cert

P=$(free_port)
R=127.0.0.1:$P
STALL=4
start_registryd --tls reg "$P" "$WORK/data" - <<EOF
[limits]
body_read_timeout_secs = 2
send_stall_timeout_secs = $STALL
idle_timeout_secs = 60
max_concurrent_uploads = 4
EOF
REG=$REG_PID

rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$REG/status"; }
# sample_rss FILE: VmRSS every 0.2 s into FILE until stopped; sets SAMPLER.
sample_rss() { ( while kill -0 "$REG" 2>/dev/null; do rss_kb >>"$1"; sleep 0.2; done ) & SAMPLER=$!; }
max_of() { sort -n "$1" | tail -1; }
mb() { awk -v k="$1" 'BEGIN{printf "%.1f", k / 1024}'; }

# Blob A is what the attackers ask for (never served whole before, so its digest check runs too);
# blob B is what a normal client pulls meanwhile.
head -c $((1024 * 1024)) /dev/urandom >"$WORK/a"
head -c $((1024 * 1024)) /dev/urandom >"$WORK/b"
for f in a b; do
  d=sha256:$(sha256sum "$WORK/$f" | cut -d' ' -f1)
  eval "D_$f=$d"
  c=$(curl -sk -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/octet-stream' \
    --data-binary @"$WORK/$f" "https://$R/v2/abuse/blob/blobs/uploads/?digest=$d")
  [ "$c" = 201 ] || fail "push of blob $f: $c"
done
# normal_pulls SECONDS OUT: pulls blob B over HTTP/2 every 0.3 s; writes "ok failed" to OUT.
normal_pulls() {
  local end=$((SECONDS + $1)) ok=0 bad=0
  while [ $SECONDS -lt $end ]; do
    if curl -sfk --http2 -m 5 "https://$R/v2/abuse/blob/blobs/$D_b" | cmp -s - "$WORK/b"; then
      ok=$((ok + 1)); else bad=$((bad + 1)); fi
    sleep 0.3
  done
  echo "$ok $bad" >"$2"
}
normal_pulls 1 "$WORK/warm"
sleep 0.5
BASE=$(rss_kb)

# --- Window 1, many streams, PINGs, never a WINDOW_UPDATE.
CONNS=4
sample_rss "$WORK/rss1"
normal_pulls 8 "$WORK/pulls1" &
PULLS=$!
$A window1 127.0.0.1 "$P" "/v2/abuse/blob/blobs/$D_a" $CONNS 100 1 12 >"$WORK/w1.json"
wait $PULLS
sleep 1.5
AFTER=$(rss_kb)
stop_pid "$SAMPLER"
PEAK=$(max_of "$WORK/rss1")
read -r ok bad <"$WORK/pulls1"
echo "window1: $(cat "$WORK/w1.json")"
echo "RSS: start $(mb "$BASE") MB, peak $(mb "$PEAK") MB, 1.5 s after the connections closed $(mb "$AFTER") MB"
jq -e --argjson n $CONNS '.closed == $n' "$WORK/w1.json" >/dev/null \
  || fail "window-1 connections still open after 12 s (PINGs kept them?): $(cat "$WORK/w1.json")"
jq -e --argjson s $STALL '.max_closed_after <= $s + 3' "$WORK/w1.json" >/dev/null \
  || fail "window-1 connections not closed within the send stall timeout ($STALL s): $(cat "$WORK/w1.json")"
jq -e 'all(.opened[]; . <= 32)' "$WORK/w1.json" >/dev/null || fail "more than 32 streams per connection"
[ "$bad" = 0 ] && [ "$ok" -gt 5 ] || fail "normal pulls during the attack: $ok ok, $bad failed"
# Bounds: measured 15-16 MB -> 24 MB peak and back to 16-17 MB (4 connections x 32 streams, the
# cap); before the fix 15.8 -> 319.5 MB (4 x 100 streams) and 295.7 MB still held after they
# closed; without malloc_trim RSS stayed at its 24 MB peak after they closed.
[ $((PEAK - BASE)) -lt $((20 * 1024)) ] || fail "RSS grew by $(mb $((PEAK - BASE))) MB under $CONNS window-1 connections"
[ $((AFTER - BASE)) -lt $((6 * 1024)) ] || fail "RSS $(mb "$AFTER") MB after the connections closed (start $(mb "$BASE") MB)"
pass "$CONNS window-1 connections x $(jq '.opened[0]' "$WORK/w1.json") streams: closed after $(jq .max_closed_after "$WORK/w1.json") s (stall timeout $STALL s), RSS $(mb "$BASE") -> $(mb "$PEAK") -> $(mb "$AFTER") MB, $ok normal pulls served meanwhile"

# --- Rapid reset and a SETTINGS/PING flood, briefly.
sample_rss "$WORK/rss2"
normal_pulls 4 "$WORK/pulls2" &
PULLS=$!
$A rapid-reset 127.0.0.1 "$P" "/v2/abuse/blob/blobs/$D_a" 3 >"$WORK/rr.json" &
RR=$!
$A flood 127.0.0.1 "$P" 3 >"$WORK/flood.json"
wait $RR $PULLS
stop_pid "$SAMPLER"
PEAK2=$(max_of "$WORK/rss2")
read -r ok bad <"$WORK/pulls2"
kill -0 "$REG" || fail "registryd died under rapid reset / flood"
[ "$bad" = 0 ] && [ "$ok" -gt 3 ] || fail "normal pulls during rapid reset / flood: $ok ok, $bad failed"
[ $((PEAK2 - BASE)) -lt $((20 * 1024)) ] || fail "RSS grew by $(mb $((PEAK2 - BASE))) MB under rapid reset / flood"
pass "rapid reset $(cat "$WORK/rr.json") and flood $(cat "$WORK/flood.json"): RSS peak $(mb "$PEAK2") MB, $ok normal pulls served"

# --- Four trickling uploads are cut off; a fifth gets its slot.
locs=()
for i in 1 2 3 4 5; do
  locs+=("$(curl -sk -D- -o /dev/null -X POST "https://$R/v2/abuse/up/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')")
done
$A trickle 127.0.0.1 "$P" "$(IFS=,; echo "${locs[*]:0:4}")" 4 0.5 15 >"$WORK/trickle.json" &
TR=$!
sleep 0.7
t0=$SECONDS
code=000
for _ in $(seq 1 40); do
  code=$(echo data | curl -sk --http1.1 -o /dev/null -w '%{http_code}' -X PATCH --data-binary @- "https://$R${locs[4]}") || true
  [ "$code" = 202 ] && break
  sleep 0.2
done
waited=$((SECONDS - t0))
wait $TR
echo "trickle: $(cat "$WORK/trickle.json")"
[ "$code" = 202 ] || fail "a fifth upload still refused ($code) while four uploads trickle"
jq -e 'all(.uploads[]; .status == "408" and .after <= 4.5)' "$WORK/trickle.json" >/dev/null \
  || fail "trickling uploads not cut off with 408 within the body timeout's span: $(cat "$WORK/trickle.json")"
pass "4 uploads trickling a byte every 0.5 s cut off with 408 after $(jq .max_after "$WORK/trickle.json") s; a fifth upload got its slot after ${waited} s"
