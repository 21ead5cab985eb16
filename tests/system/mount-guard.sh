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
start_registryd reg "$PORT" "$M/registry" - <<TOML
[storage]
require_mount = "$M"
require_fstype = "tmpfs"
check_interval_secs = 1
check_failures = 2
TOML

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

# The token signing key lives on the shared volume like everything else: with logins on and the
# mount missing at start, nothing is made under the mount point (a key there would be a local
# one, and each node would sign with its own), token requests answer 503 with the reason; once
# the volume is mounted, a token from one node is accepted by another.
M2=$WORK/mnt2
mkdir -p "$M2"
CLEANUPS+=("umount -l '$M2' 2>/dev/null")
command -v htpasswd >/dev/null || fail "htpasswd missing (apache2-utils)"
htpasswd -Bbc "$WORK/htpasswd" ci ci-pass 2>/dev/null
start_node() { # PORT: a node with logins on, storage on $M2
  start_registryd "node-$1" "$1" "$M2/registry" - <<TOML
[storage]
require_mount = "$M2"
check_interval_secs = 1
[auth]
htpasswd = "$WORK/htpasswd"
allow_plain_http = true
TOML
}
PA=$(free_port); PB=$(free_port)
start_node "$PA"
start_node "$PB"
code=$(curl -s -o "$WORK/resp" -w '%{http_code}' -u ci:ci-pass "http://127.0.0.1:$PA/auth/token")
[ "$code" = 503 ] || fail "token request without the mount answered $code: $(cat "$WORK/resp")"
jq -e '.errors[0].code == "UNAVAILABLE" and (.errors[0].message | test("not mounted"))' "$WORK/resp" >/dev/null \
  || fail "token 503 without the reason: $(cat "$WORK/resp")"
[ -z "$(ls -A "$M2")" ] || fail "written under the unmounted $M2 with logins on: $(find "$M2" | head)"
pass "logins on, unmounted: token requests 503 with the reason, no key made under the mount point"

mount -t tmpfs -o size=16m tmpfs "$M2"
for port in "$PA" "$PB"; do
  for _ in $(seq 1 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] && break
    sleep 0.1
  done
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/readyz")" = 200 ] \
    || { tail -5 "$WORK/node-$port.log"; fail "node on $port not ready 30 s after mounting"; }
done
token=$(curl -sf -u ci:ci-pass "http://127.0.0.1:$PA/auth/token" | jq -r .token) \
  || fail "no token after mounting: $(cat "$WORK/node-$PA.log" | tail -5)"
[ -n "$token" ] && [ "$token" != null ] || fail "empty token after mounting"
[ -f "$M2/registry/registryd/auth/token.key" ] || fail "the token key is not on the mounted volume: $(find "$M2" | head)"
code=$(curl -s -o "$WORK/resp" -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:$PB/v2/_catalog")
[ "$code" = 200 ] || fail "node B refused node A's token ($code): $(cat "$WORK/resp")"
token_b=$(curl -sf -u ci:ci-pass "http://127.0.0.1:$PB/auth/token" | jq -r .token) || fail "no token from node B"
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token_b" "http://127.0.0.1:$PA/v2/_catalog")
[ "$code" = 200 ] || fail "node A refused node B's token ($code)"
pass "mounted: tokens work, made with the one key on the volume, and each node accepts the other's"

# A node that starts while the volume is gone cannot check a token either: 503, nothing made.
umount -l "$M2"
PC=$(free_port)
start_node "$PC"
code=$(curl -s -o "$WORK/resp" -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:$PC/v2/_catalog")
[ "$code" = 503 ] || fail "a Bearer request to a node without the volume answered $code: $(cat "$WORK/resp")"
[ -z "$(ls -A "$M2")" ] || fail "written under the unmounted $M2 by a Bearer request: $(find "$M2" | head)"
pass "unmounted again: a Bearer request to a new node answers 503, nothing made under the mount point"
