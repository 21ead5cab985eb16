#!/usr/bin/env bash
# A hung mount (the FUSE daemon of the storage mount frozen with SIGSTOP) turns requests into 503
# after storage.operation_timeout_secs instead of holding them; the process stays alive (/healthz),
# /readyz goes off, and everything recovers when the mount answers again.
source "$(dirname "$0")/lib/common.sh"
command -v bindfs >/dev/null || fail "bindfs missing: apt-get install bindfs"

mkdir -p "$WORK/backing" "$WORK/fuse"
bindfs --no-allow-other "$WORK/backing" "$WORK/fuse"
FUSE_PID=$(pgrep -n -f "bindfs --no-allow-other $WORK/backing") || fail "bindfs did not start"
CLEANUPS+=("kill -CONT $FUSE_PID 2>/dev/null; fusermount3 -u '$WORK/fuse' 2>/dev/null || fusermount -u '$WORK/fuse' 2>/dev/null || umount -l '$WORK/fuse'")
PORT=$(free_port)
R=http://127.0.0.1:$PORT
start_registryd reg "$PORT" "$WORK/fuse/registry" - <<TOML
[storage]
operation_timeout_secs = 2
check_interval_secs = 1
check_failures = 1
TOML
push() {
  local b="blob $1 $(date +%s%N)"
  curl -s -m 30 -o "$WORK/resp.$1" -w '%{http_code}' -X POST --data-binary "$b" \
    "$R/v2/hung/blobs/uploads/?digest=sha256:$(printf '%s' "$b" | sha256sum | cut -d' ' -f1)"
}
[ "$(push 0)" = 201 ] || fail "push before the hang"

kill -STOP "$FUSE_PID"
start=$(date +%s)
codes=""
for i in $(seq 1 8); do push "$i" >"$WORK/code.$i" & done
for _ in $(seq 1 300); do n=0; for i in $(seq 1 8); do [ -s "$WORK/code.$i" ] && n=$((n+1)); done; [ "$n" = 8 ] && break; sleep 0.1; done
for i in $(seq 1 8); do codes="$codes $(cat "$WORK/code.$i")"; done
took=$(( $(date +%s) - start ))
[ "$(echo $codes | tr ' ' '\n' | sort -u)" = 503 ] || fail "requests on a hung mount answered:$codes"
[ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$R/healthz")" = 200 ] || fail "/healthz does not answer while the mount hangs"
# The health check gives storage the operation timeout (2 s) before it calls it unusable.
for _ in $(seq 1 50); do [ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$R/readyz")" = 503 ] && break; sleep 0.1; done
[ "$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$R/readyz")" = 503 ] || fail "/readyz still 200 while the mount hangs"
pass "hung mount: 8 concurrent pushes all 503 within ${took}s (timeout 2 s), /healthz 200, /readyz 503"

kill -CONT "$FUSE_PID"
for _ in $(seq 1 100); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$R/readyz")" = 200 ] && break; sleep 0.1; done
[ "$(push 9)" = 201 ] || fail "push after the mount came back: $(cat "$WORK/resp.9")"
pass "mount answers again: serving without a restart"
