#!/usr/bin/env bash
# kill -9 does not exercise fsync. This traces one push (strace -f) and checks, for every file it
# publishes, fsync -> rename -> directory fsync, all before the 2xx is written.
source "$(dirname "$0")/lib/common.sh"

command -v strace >/dev/null || fail "strace missing: apt-get install strace"
PORT=$(free_port)
# Started by hand, not by start_registryd: the daemon runs under strace, which traces its start too.
strace -f -y -s 80 -o "$WORK/trace" \
  -e trace=fsync,fdatasync,rename,renameat,renameat2,write,writev,sendto,sendmsg \
  "$TEST_REGISTRYD_BIN" serve --plain-http --listen "127.0.0.1:$PORT" --storage "$WORK/data" >"$WORK/reg.log" 2>&1 &
REG_PID=$!
PIDS+=("$REG_PID")
wait_http "http://127.0.0.1:$PORT/v2/" || fail "registryd under strace did not start"

python3 "$SYS_DIR/lib/mkimage.py" "$WORK/img" v1 --layer-bytes 500000 >/dev/null
# chunked layer upload (POST, PATCH x2, PUT) so upload checkpoints are traced too
layer=$(ls -S "$WORK/img/blobs/sha256" | head -1)
f=$WORK/img/blobs/sha256/$layer
size=$(stat -c %s "$f")
half=$((size / 2))
loc=$(curl -fsi -X POST "http://127.0.0.1:$PORT/v2/traced/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
head -c "$half" "$f" | curl -fs -X PATCH -H "Content-Range: 0-$((half - 1))" --data-binary @- "http://127.0.0.1:$PORT$loc"
tail -c +$((half + 1)) "$f" | curl -fs -X PATCH -H "Content-Range: $half-$((size - 1))" --data-binary @- "http://127.0.0.1:$PORT$loc"
curl -fs -X PUT "http://127.0.0.1:$PORT$loc?digest=sha256:$layer"
skopeo --insecure-policy copy --quiet --dest-tls-verify=false "oci:$WORK/img:v1" "docker://127.0.0.1:$PORT/traced:v1"
# Stop the traced daemon itself (strace only detaches on a signal), then strace ends with it.
child=$(pgrep -P "$REG_PID" | head -1)
kill "$child"; wait "$REG_PID" 2>/dev/null || true
python3 "$SYS_DIR/lib/fsync_order.py" "$WORK/trace" || { cp "$WORK/trace" /tmp/fsync-order.trace; fail "durability order (trace kept in /tmp/fsync-order.trace)"; }
# The checker must catch a violation: drop every directory fsync from the trace.
grep -v -E 'fsync\([0-9]+<[^>]*/(current|[0-9a-f]{64})>\)' "$WORK/trace" >"$WORK/trace.broken"
if python3 "$SYS_DIR/lib/fsync_order.py" "$WORK/trace.broken" >/dev/null; then fail "checker accepted a trace without directory fsyncs"; fi
# ... and must join calls strace splits across threads (how CI once saw a false failure): split
# every fsync of the trace into "<unfinished ...>" and "<... fsync resumed>" lines.
sed -E 's/^([0-9]+) +(f(data)?sync\([0-9]+<[^>]*>)\)(.*)$/\1  \2 <unfinished ...>\n\1  <... fsync resumed>)\4/' "$WORK/trace" >"$WORK/trace.split"
grep -q 'fsync resumed' "$WORK/trace.split" || fail "test bug: no fsync split"
python3 "$SYS_DIR/lib/fsync_order.py" "$WORK/trace.split" >/dev/null || fail "checker rejected a trace whose fsyncs strace split across lines"
pass "strace: durability order holds for every published file (and the checker rejects a trace without dir fsyncs)"
