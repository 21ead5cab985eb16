#!/usr/bin/env bash
# A 2 GiB blob, generated on the fly, uploads (streamed PATCH) and downloads through registryd
# without raising its peak RSS (VmHWM) by more than a few MiB.
source "$(dirname "$0")/lib/common.sh"

SIZE=$((2 * 1024 * 1024 * 1024))
LIMIT_KIB=$((24 * 1024))
PORT=$(free_port)
start_registryd big "$PORT" "$WORK/data"
R=http://127.0.0.1:$PORT
gen() { head -c "$SIZE" /dev/zero | tr '\0' 'r'; }
hwm() { awk '/VmHWM/{print $2}' "/proc/$REG_PID/status"; }

D=sha256:$(gen | sha256sum | cut -d' ' -f1)
curl -fs -o /dev/null "$R/v2/"
before=$(hwm)
loc=$(curl -fsi -X POST "$R/v2/big/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
gen | curl -fs -X PATCH -H 'Content-Type: application/octet-stream' -T - "$R$loc" || fail "streamed PATCH of 2 GiB"
curl -fs -X PUT "$R$loc?digest=$D" || fail "completing the 2 GiB upload"
after_up=$(hwm)
got=sha256:$(curl -fs "$R/v2/big/blobs/$D" | sha256sum | cut -d' ' -f1)
[ "$got" = "$D" ] || fail "downloaded 2 GiB blob has digest $got"
after_down=$(hwm)
echo "peak RSS: ${before} KiB at start, ${after_up} KiB after upload, ${after_down} KiB after download"
[ $((after_down - before)) -le "$LIMIT_KIB" ] || fail "peak RSS grew by $((after_down - before)) KiB (limit $LIMIT_KIB KiB)"
pass "2 GiB up and down, peak RSS grew by $((after_down - before)) KiB"
