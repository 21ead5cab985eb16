#!/usr/bin/env bash
# Hostile and broken clients are cut off while normal clients keep working: slow-loris request
# heads and silent connections after the header timeout, a stalled upload after the body timeout
# (keeping what arrived, so it resumes from there), uploads past the concurrency bound get 429,
# blobs past the size limit 413, and connections past max_connections wait until others close.
source "$(dirname "$0")/lib/common.sh"

H="python3 $SYS_DIR/lib/hostile.py"
PORT=$(free_port)
R=127.0.0.1:$PORT
REGISTRYD_LIMITS_HEADER_READ_TIMEOUT_SECS=2 REGISTRYD_LIMITS_BODY_READ_TIMEOUT_SECS=2 \
REGISTRYD_LIMITS_IDLE_TIMEOUT_SECS=3 REGISTRYD_LIMITS_MAX_CONCURRENT_UPLOADS=2 \
REGISTRYD_LIMITS_MAX_BLOB_BYTES=$((8 * 1024 * 1024)) REGISTRYD_LIMITS_MAX_CONNECTIONS=40 \
  start_registryd limits "$PORT" "$WORK/data"

# --- Slow-loris heads and silent connections are closed after the header timeout; meanwhile
# normal requests are answered at once.
$H slowloris 127.0.0.1 "$PORT" 15 8 >"$WORK/loris.json" &
LORIS=$!
$H silent 127.0.0.1 "$PORT" 15 8 >"$WORK/silent.json" &
SILENT=$!
sleep 0.5
for i in $(seq 1 20); do
  [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "http://$R/v2/")" = 200 ] || fail "normal request $i failed during the attack"
done
wait $LORIS $SILENT
jq -e '.open == 0 and .max_lifetime < 5' "$WORK/loris.json" >/dev/null || fail "slow-loris connections not cut: $(cat "$WORK/loris.json")"
jq -e '.open == 0 and .max_lifetime < 5' "$WORK/silent.json" >/dev/null || fail "silent connections not cut: $(cat "$WORK/silent.json")"
pass "15 slow-loris + 15 silent connections closed after ~2 s ($(jq -c . "$WORK/loris.json"), $(jq -c . "$WORK/silent.json")); 20 normal requests served meanwhile"

# --- An upload that stalls is cut after the body timeout and resumes from what arrived.
head -c $((3 * 1024 * 1024)) /dev/urandom >"$WORK/blob"
digest=sha256:$(sha256sum "$WORK/blob" | cut -d' ' -f1)
loc=$(curl -s -D- -o /dev/null -X POST "http://$R/v2/lim/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
$H stall 127.0.0.1 "$PORT" "$loc" "$WORK/blob" $((1024 * 1024)) $((3 * 1024 * 1024)) 10 >"$WORK/stall.json"
jq -e '.after < 6' "$WORK/stall.json" >/dev/null || fail "stalled upload not cut within the body timeout: $(cat "$WORK/stall.json")"
range=$(curl -s -D- -o /dev/null "http://$R$loc" | tr -d '\r' | awk -F': ' 'tolower($1)=="range"{print $2}')
[ "$range" = "0-1048575" ] || fail "after the stall the upload should hold the 1 MiB that arrived, Range=$range"
tail -c +$((1024 * 1024 + 1)) "$WORK/blob" | curl -sf -o /dev/null -X PATCH -H 'Content-Type: application/octet-stream' \
  -H "Content-Range: 1048576-$((3 * 1024 * 1024 - 1))" --data-binary @- "http://$R$loc" || fail "resume after the stall"
c=$(curl -s -w " %{http_code}" -X PUT "http://$R$loc?digest=$digest"); [ "${c##* }" = 201 ] || fail "completing the resumed upload: $c"
curl -sf "http://$R/v2/lim/blobs/$digest" | cmp - "$WORK/blob" || fail "resumed blob differs"
pass "stalled upload cut after $(jq .after "$WORK/stall.json") s (status $(jq -r .status "$WORK/stall.json")), resumed from 1 MiB, blob intact"

# --- Concurrent uploads beyond the bound get 429 with Retry-After; slots come back.
locs=()
for i in 1 2 3; do
  locs+=("$(curl -s -D- -o /dev/null -X POST "http://$R/v2/lim/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')")
done
$H stall 127.0.0.1 "$PORT" "${locs[0]}" - 1000 100000 10 >/dev/null &
S1=$!
$H stall 127.0.0.1 "$PORT" "${locs[1]}" - 1000 100000 10 >/dev/null &
S2=$!
sleep 0.5
h=$(echo data | curl -s -D- -o /dev/null -X PATCH --data-binary @- "http://$R${locs[2]}" | tr -d '\r')
grep -q '^HTTP/1.1 429' <<<"$h" || fail "third concurrent upload not refused: $h"
grep -qi '^retry-after: 1' <<<"$h" || fail "429 without Retry-After"
wait $S1 $S2
[ "$(echo data | curl -s -o /dev/null -w '%{http_code}' -X PATCH --data-binary @- "http://$R${locs[2]}")" = 202 ] \
  || fail "upload slot not released after the stalled uploads were cut"
pass "uploads beyond max_concurrent_uploads: 429 + Retry-After; slots released when stalled ones are cut"

# --- Blob size limit: declared too big is refused at once, streamed too big when it passes.
head -c $((9 * 1024 * 1024)) /dev/zero >"$WORK/big"
bigd=sha256:$(sha256sum "$WORK/big" | cut -d' ' -f1)
[ "$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'Content-Type: application/octet-stream' --data-binary @"$WORK/big" "http://$R/v2/lim/blobs/uploads/?digest=$bigd")" = 413 ] \
  || fail "9 MiB monolithic upload not refused with 413"
loc=$(curl -s -D- -o /dev/null -X POST "http://$R/v2/lim/blobs/uploads/" | tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
code=$(curl -s -o "$WORK/413.json" -w '%{http_code}' -X PATCH -H 'Transfer-Encoding: chunked' --data-binary @"$WORK/big" "http://$R$loc")
[ "$code" = 413 ] || fail "9 MiB streamed chunk not refused with 413 (got $code)"
jq -e '.errors[0].code == "SIZE_INVALID"' "$WORK/413.json" >/dev/null || fail "413 body: $(cat "$WORK/413.json")"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$R/v2/lim/blobs/$bigd")" = 404 ] || fail "oversized blob stored"
pass "blobs past limits.max_blob_bytes: 413 SIZE_INVALID, declared or streamed, nothing stored"

# --- Past max_connections new clients wait; they are served once others close.
$H silent 127.0.0.1 "$PORT" 40 6 >"$WORK/full.json" &
FULL=$!
sleep 0.5
t0=$(date +%s.%N)
code=$(curl -s -o /dev/null -m 10 -w '%{http_code}' "http://$R/v2/")
t1=$(date +%s.%N)
wait $FULL
[ "$code" = 200 ] || fail "request after the connection limit freed up: $code"
waited=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b - a}')
awk -v w="$waited" 'BEGIN{exit !(w > 1)}' || fail "request served at once although 40 connections were open ($waited s)"
pass "41st connection waited $waited s until the silent ones were cut, then served"
grep -q "connection limit reached" "$WORK/limits.log" || fail "connection limit not logged"
