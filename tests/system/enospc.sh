#!/usr/bin/env bash
# A full disk answers 507 with an OCI error, leaves no partial blob visible, and the same push
# succeeds once space is free (monolithic, and a chunked upload resumed from its acknowledged offset).
source "$(dirname "$0")/lib/common.sh"

SMALL=$WORK/small
mkdir -p "$SMALL"
mount -t tmpfs -o size=24m tmpfs "$SMALL"
CLEANUPS+=("umount -l '$SMALL'")
PORT=$(free_port)
start_registryd enospc "$PORT" "$SMALL/data"
R=http://127.0.0.1:$PORT

head -c 8000000 /dev/urandom >"$WORK/blob"
D=sha256:$(sha256sum "$WORK/blob" | cut -d' ' -f1)
# Leave about 4 MB free.
avail=$(df --output=avail -B1 "$SMALL" | tail -1)
fallocate -l $((avail - 4000000)) "$SMALL/filler" 2>/dev/null || head -c $((avail - 4000000)) /dev/zero >"$SMALL/filler"

code=$(curl -s -o "$WORK/err.json" -w '%{http_code}' -X POST --data-binary @"$WORK/blob" "$R/v2/full/blobs/uploads/?digest=$D")
[ "$code" = 507 ] || fail "full disk answered $code: $(cat "$WORK/err.json")"
jq -e '.errors[0].code and (.errors[0].message | test("full"))' "$WORK/err.json" >/dev/null || fail "no OCI error body: $(cat "$WORK/err.json")"
code=$(curl -s -o /dev/null -w '%{http_code}' -I "$R/v2/full/blobs/$D")
[ "$code" = 404 ] || fail "partial blob visible after ENOSPC ($code)"
[ -z "$(find "$SMALL/data/docker/registry/v2/blobs" -name data 2>/dev/null)" ] || fail "blob data file left behind"
[ -z "$(find "$SMALL/data/docker/registry/v2/repositories" -path '*/_uploads/*' -name data 2>/dev/null)" ] || fail "upload data left behind"
pass "ENOSPC: 507 $(jq -c .errors[0].code "$WORK/err.json"), nothing visible, nothing left behind"

# Chunked: the first 3 MB chunk fits, the next one does not.
loc=$(curl -fsi -X POST "$R/v2/full/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
head -c 3000000 "$WORK/blob" | curl -fs -X PATCH -H 'Content-Range: 0-2999999' --data-binary @- "$R$loc" || fail "first chunk"
code=$(tail -c +3000001 "$WORK/blob" | curl -s -o /dev/null -w '%{http_code}' -X PATCH -H "Content-Range: 3000000-7999999" --data-binary @- "$R$loc")
[ "$code" = 507 ] || fail "chunk on a full disk answered $code"

rm -f "$SMALL/filler"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary @"$WORK/blob" "$R/v2/full/blobs/uploads/?digest=$D")
[ "$code" = 201 ] || fail "retry after freeing space answered $code"
range=$(curl -fsi "$R$loc" | tr -d '\r' | awk 'tolower($1)=="range:"{print $2}')
[ "$range" = 0-2999999 ] || fail "chunked upload stands at $range, not the acknowledged 0-2999999"
tail -c +3000001 "$WORK/blob" | curl -fs -X PATCH -H "Content-Range: 3000000-7999999" --data-binary @- "$R$loc" || fail "resumed chunk"
curl -fs -X PUT "$R$loc?digest=$D" || fail "completing the resumed upload"
curl -fs "$R/v2/full/blobs/$D" | cmp - "$WORK/blob" || fail "blob content after retry"
pass "after freeing space: monolithic retry 201, chunked upload resumed at 0-2999999 and completed"
