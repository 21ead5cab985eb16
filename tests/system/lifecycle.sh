#!/usr/bin/env bash
# Storage lifecycle with real clients: `registryd gc` (dry run, then for real) while skopeo keeps
# pushing and pulling, fsck finding and repairing a flipped byte, read-only mode switched by a
# reload, and the free-space floor on a small tmpfs refusing pushes and recovering by itself.
source "$(dirname "$0")/lib/common.sh"

SK="skopeo --insecure-policy"
PORT=$(free_port)
R=127.0.0.1:$PORT
DATA=$WORK/data
start_registryd reg "$PORT" "$DATA" - <<EOF
[gc]
interval_secs = 0
grace_secs = 2
EOF
REG=$REG_PID
CONFIG=$REG_CONFIG
GC() { "$TEST_REGISTRYD_BIN" gc --config "$CONFIG" "$@"; }
blobs() { find "$DATA/docker/registry/v2/blobs" -name data | wc -l; }
digest_of() { $SK inspect --raw --tls-verify=false "docker://$R/$1" | sha256sum | cut -d' ' -f1; }

# --- Images: shared/img and shared/copy are the same image (every blob shared); gone/img is its own.
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/shared" v1 --seed shared --layer-bytes 300000 >/dev/null
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/gone" v1 --seed gone --layer-bytes 300000 >/dev/null
$SK copy -q --dest-tls-verify=false "oci:$WORK/shared:v1" "docker://$R/shared/img:v1"
$SK copy -q --dest-tls-verify=false "oci:$WORK/shared:v1" "docker://$R/shared/copy:v1"
$SK copy -q --dest-tls-verify=false "oci:$WORK/gone:v1" "docker://$R/gone/img:v1"
want_shared=$(digest_of shared/img:v1)
for ref in shared/copy:v1 gone/img:v1; do
  d=$(curl -sI -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$R/v2/${ref%%:*}/manifests/${ref##*:}" | tr -d '\r' | awk 'tolower($1)=="docker-content-digest:"{print $2}')
  [ "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "http://$R/v2/${ref%%:*}/manifests/$d")" = 202 ] || fail "delete $ref"
done
sleep 3   # past gc.grace_secs

before=$(blobs)
GC --dry-run >"$WORK/dry.out" || fail "gc --dry-run"
grep -q "would remove: 3 blobs" "$WORK/dry.out" || { cat "$WORK/dry.out"; fail "dry run: expected 3 blobs (gone/img's config, layer, manifest)"; }
[ "$(blobs)" = "$before" ] || fail "--dry-run removed blobs"
pass "gc --dry-run: $(grep 'would remove' "$WORK/dry.out"), nothing changed"

# --- GC for real while skopeo keeps pushing (new layers every time) and pulling.
(
  set -e
  for i in $(seq 1 15); do
    python3 "$SYS_DIR/lib/mkimage.py" "$WORK/load$i" v1 --seed "load$i" --layer-bytes 100000 >/dev/null
    $SK copy -q --dest-tls-verify=false "oci:$WORK/load$i:v1" "docker://$R/load/app:$i"
    $SK copy -q --dest-tls-verify=false "oci:$WORK/shared:v1" "docker://$R/load/shared:$i"
    $SK copy -q --src-tls-verify=false "docker://$R/shared/img:v1" "oci:$WORK/pulled:$i"
  done
) >"$WORK/load.log" 2>&1 &
LOAD=$!
runs=0
while kill -0 $LOAD 2>/dev/null; do
  GC >>"$WORK/gc.out" 2>&1 || { cat "$WORK/gc.out"; fail "gc failed while pushes ran"; }
  runs=$((runs + 1))
done
wait $LOAD || { cat "$WORK/load.log"; fail "a push or pull failed while gc ran"; }
grep -q "removed: 3 blobs" "$WORK/gc.out" || { cat "$WORK/gc.out"; fail "gone/img's 3 blobs were not collected"; }
for i in $(seq 1 15); do
  [ "$(digest_of "load/app:$i")" = "$(sha256sum "$WORK/load$i/blobs/sha256/$(jq -r '.manifests[0].digest' "$WORK/load$i/index.json" | cut -d: -f2)" | cut -d' ' -f1)" ] \
    || fail "load/app:$i damaged"
  $SK copy -q --src-tls-verify=false "docker://$R/load/app:$i" "oci:$WORK/check:$i" || fail "load/app:$i does not pull after gc"
done
[ "$(digest_of shared/img:v1)" = "$want_shared" ] || fail "shared/img changed"
$SK copy -q --src-tls-verify=false "docker://$R/shared/img:v1" "oci:$WORK/final:v1" || fail "shared/img does not pull after gc"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$R/v2/gone/img/blobs/$(jq -r '.manifests[0].digest' "$WORK/gone/index.json")")" = 404 ] \
  || fail "gone/img's manifest blob still served"
pass "$runs gc passes during 15 pushes + 15 pulls: every push and pull succeeded, all 30 images intact, gone/img's blobs collected"

# --- fsck: a flipped byte in a blob that nothing references yet.
head -c 200000 /dev/urandom >"$WORK/loose"
ld=sha256:$(sha256sum "$WORK/loose" | cut -d' ' -f1)
curl -sf -o /dev/null -X POST -H 'Content-Type: application/octet-stream' --data-binary @"$WORK/loose" "http://$R/v2/loose/blobs/uploads/?digest=$ld"
FSCK() { "$TEST_REGISTRYD_BIN" fsck --config "$CONFIG" "$@"; }
FSCK >"$WORK/fsck0.out" || { cat "$WORK/fsck0.out"; fail "fsck of a healthy store"; }
printf '\xff' | dd of="$DATA/docker/registry/v2/blobs/sha256/${ld:7:2}/${ld#sha256:}/data" bs=1 seek=1000 conv=notrunc status=none
set +e; FSCK >"$WORK/fsck1.out"; rc=$?; set -e
[ $rc = 4 ] || { cat "$WORK/fsck1.out"; fail "fsck exit $rc, expected 4 for a corrupt blob"; }
grep -q "found corrupt-blob: $ld" "$WORK/fsck1.out" || { cat "$WORK/fsck1.out"; fail "fsck did not name the corrupt blob"; }
set +e; FSCK --repair >"$WORK/fsck2.out"; rc=$?; set -e
[ $rc = 4 ] && grep -q "repaired corrupt-blob: $ld" "$WORK/fsck2.out" && grep -q "repaired dangling-layer-link" "$WORK/fsck2.out" \
  || { cat "$WORK/fsck2.out"; fail "fsck --repair"; }
[ -f "$DATA/registryd/quarantine/${ld#sha256:}/data" ] || fail "corrupt blob not quarantined"
FSCK >"$WORK/fsck3.out" || { cat "$WORK/fsck3.out"; fail "fsck after repair not clean"; }
pass "fsck: healthy 0; flipped byte found (exit 4), --repair quarantined it and dropped its link; clean again"

# --- Read-only mode, switched by a reload.
echo 'read_only = true' >"$WORK/ro.toml"
sed -i "s|^root = .*|&\nread_only = true|" "$CONFIG"
kill -HUP $REG
for _ in $(seq 1 50); do grep -q "read-only mode ON" "$WORK/reg.log" && break; sleep 0.1; done
code=$(curl -s -o "$WORK/ro.json" -w '%{http_code}' -X POST "http://$R/v2/ro/blobs/uploads/")
[ "$code" = 405 ] && jq -e '.errors[0].code == "UNSUPPORTED" and (.errors[0].message | contains("read-only"))' "$WORK/ro.json" >/dev/null \
  || fail "push in read-only mode: $code $(cat "$WORK/ro.json")"
[ "$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "http://$R/v2/shared/img/manifests/v1")" = 405 ] || fail "delete in read-only mode"
$SK copy -q --src-tls-verify=false "docker://$R/shared/img:v1" "oci:$WORK/ro:v1" || fail "pull in read-only mode"
sed -i '/^read_only = true$/d' "$CONFIG"
kill -HUP $REG
for _ in $(seq 1 50); do grep -q "read-only mode OFF" "$WORK/reg.log" && break; sleep 0.1; done
$SK copy -q --dest-tls-verify=false "oci:$WORK/shared:v1" "docker://$R/ro/after:v1" || fail "push after read-only was switched off"
pass "read-only: push 405 UNSUPPORTED and delete refused, pull fine; writable again after the reload"

# --- Free-space floor on a 64 MiB tmpfs: pushes refused under 40 MiB free, back by themselves.
SMALL=$WORK/small
mkdir -p "$SMALL"
mount -t tmpfs -o size=64m tmpfs "$SMALL"
CLEANUPS+=("umount -l '$SMALL'")
P2=$(free_port)
REGISTRYD_STORAGE_MIN_FREE_BYTES=$((40 * 1024 * 1024)) REGISTRYD_STORAGE_CHECK_INTERVAL_SECS=1 \
  start_registryd small "$P2" "$SMALL/data"
SMALL_PID=$REG_PID
CLEANUPS+=("kill $SMALL_PID 2>/dev/null; wait $SMALL_PID 2>/dev/null")
up() { curl -s -o "$WORK/small.json" -w '%{http_code}' -X POST "http://127.0.0.1:$P2/v2/fill/blobs/uploads/"; }
[ "$(up)" = 202 ] || fail "push with space free"
head -c $((30 * 1024 * 1024)) /dev/zero >"$SMALL/ballast"
ok=0
for _ in $(seq 1 50); do [ "$(up)" = 503 ] && { ok=1; break; }; sleep 0.1; done
[ $ok = 1 ] || fail "push not refused under the free-space floor"
jq -e '.errors[0].code == "DENIED" and (.errors[0].message | contains("min_free_bytes"))' "$WORK/small.json" >/dev/null \
  || fail "floor refusal unclear: $(cat "$WORK/small.json")"
curl -sf -o /dev/null "http://127.0.0.1:$P2/v2/_catalog" || fail "reads refused under the floor"
grep -q "storage nearly full" "$WORK/small.log" || fail "floor not logged"
rm -f "$SMALL/ballast"
ok=0
for _ in $(seq 1 50); do [ "$(up)" = 202 ] && { ok=1; break; }; sleep 0.1; done
[ $ok = 1 ] || fail "pushes did not resume after space was freed"
pass "free-space floor: 503 DENIED under 40 MiB free, reads fine, accepted again by itself once freed"
