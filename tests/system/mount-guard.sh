#!/usr/bin/env bash
# Mount guard: with the storage root on an unmounted directory registryd answers 503 with the reason
# and writes nothing there; mounting a tmpfs makes it serve without a restart; a lazy unmount under
# the running daemon turns requests into 503 and /readyz off, and remounting recovers.
source "$(dirname "$0")/lib/common.sh"

M=$WORK/mnt
mkdir -p "$M"
CLEANUPS+=("umount -l '$M' 2>/dev/null")
PORT=$(free_port)
R=http://127.0.0.1:$PORT
REGISTRYD_STORAGE_REQUIRE_MOUNT=$M REGISTRYD_STORAGE_REQUIRE_FSTYPE=tmpfs \
REGISTRYD_STORAGE_CHECK_INTERVAL_SECS=1 REGISTRYD_STORAGE_CHECK_FAILURES=2 \
  "$TEST_REGISTRYD_BIN" serve --plain-http --listen "127.0.0.1:$PORT" --storage "$M/registry" >"$WORK/reg.log" 2>&1 &
REG_PID=$!
PIDS+=("$REG_PID")
wait_http "$R/healthz" || { cat "$WORK/reg.log"; fail "registryd did not start"; }

blob() { # push a small blob, print the status
  local b="blob $RANDOM $(date +%s%N)"
  curl -s -o "$WORK/resp" -w '%{http_code}' -X POST --data-binary "$b" \
    "$R/v2/guard/blobs/uploads/?digest=sha256:$(printf '%s' "$b" | sha256sum | cut -d' ' -f1)"
}
wait_ready() { for _ in $(seq 1 50); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$R/readyz")" = "$1" ] && return 0; sleep 0.1; done; return 1; }

[ "$(curl -s -o /dev/null -w '%{http_code}' "$R/readyz")" = 503 ] || fail "/readyz is not 503 without the mount"
code=$(blob)
[ "$code" = 503 ] || fail "push without the mount answered $code"
jq -e '.errors[0].code == "UNAVAILABLE" and (.errors[0].message | test("not mounted"))' "$WORK/resp" >/dev/null \
  || fail "503 without the reason: $(cat "$WORK/resp")"
[ -z "$(ls -A "$M")" ] || fail "something was written under the unmounted $M: $(ls -A "$M")"
pass "unmounted: 503 UNAVAILABLE with the reason, /readyz 503, nothing written"

mount -t tmpfs -o size=16m tmpfs "$M"
wait_ready 200 || fail "/readyz did not turn 200 after mounting"
[ "$(blob)" = 201 ] || fail "push after mounting: $(cat "$WORK/resp")"
pass "mounted: serving without a restart"

umount -l "$M"
code=$(blob)
[ "$code" = 503 ] || fail "push right after umount -l answered $code"
wait_ready 503 || fail "/readyz still 200 after umount -l"
[ -z "$(ls -A "$M")" ] || fail "written to the local disk after umount -l: $(ls -A "$M")"
pass "lazily unmounted: 503 at once, /readyz off, nothing written to the local disk"

mount -t tmpfs -o size=16m tmpfs "$M"
wait_ready 200 || fail "/readyz did not recover after remounting"
[ "$(blob)" = 201 ] || fail "push after remounting: $(cat "$WORK/resp")"
# A mount of the wrong type does not count.
umount -l "$M"
mkdir -p "$WORK/other"; dd if=/dev/zero of="$WORK/other.img" bs=1M count=8 status=none; mkfs.ext4 -q "$WORK/other.img"
mount -o loop "$WORK/other.img" "$M" 2>/dev/null && {
  CLEANUPS+=("umount -l '$M' 2>/dev/null")
  wait_ready 503 || fail "an ext4 mount passed require_fstype=tmpfs"
  grep -q "not tmpfs" <(curl -s "$R/readyz") || fail "wrong fstype reason missing"
  umount -l "$M"
}
pass "remounted: recovered; a mount of the wrong type is refused"
