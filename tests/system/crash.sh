#!/usr/bin/env bash
# kill -9 in the middle of 20 concurrent pushes: after a restart every acknowledged push is pullable
# and digest-correct, and no link points at missing data. Then kill -9 in the middle of a chunk:
# the upload resumes at the last acknowledged offset.
source "$(dirname "$0")/lib/common.sh"

PORT=$(free_port)
DATA=$WORK/data
start_registryd crash1 "$PORT" "$DATA"
python3 "$SYS_DIR/lib/pushers.py" push "127.0.0.1:$PORT" "$WORK/acked" 30 &
CLIENT=$!
PIDS+=("$CLIENT")
sleep 3
kill -9 "$REG_PID"
wait "$CLIENT" || true
n=$(wc -l <"$WORK/acked")
[ "$n" -gt 0 ] || fail "no push completed before the kill"
in_flight=$(find "$DATA/docker/registry/v2/repositories" -path '*/_uploads/*' -name startedat | wc -l)
start_registryd crash2 "$PORT" "$DATA"
python3 "$SYS_DIR/lib/pushers.py" verify "127.0.0.1:$PORT" "$WORK/acked" "$DATA" || fail "verification after kill -9"
pass "kill -9 during 20 concurrent pushes: $n acknowledged pushes intact ($in_flight uploads were in flight)"
stop_pid "$REG_PID"

# kill -9 mid-chunk, then resume.
start_registryd crash3 "$PORT" "$DATA"
python3 "$SYS_DIR/lib/pushers.py" resume "127.0.0.1:$PORT" "$WORK/marker" &
CLIENT=$!
PIDS+=("$CLIENT")
for _ in $(seq 1 100); do [ -e "$WORK/marker.half-sent" ] && break; sleep 0.1; done
[ -e "$WORK/marker.half-sent" ] || fail "resume client never reached the half-sent chunk"
kill -9 "$REG_PID"
wait "$REG_PID" 2>/dev/null || true
start_registryd crash4 "$PORT" "$DATA"
touch "$WORK/marker.restarted"
wait "$CLIENT" || fail "upload did not resume after kill -9"
pass "kill -9 mid-chunk: upload resumed at the acknowledged offset"
