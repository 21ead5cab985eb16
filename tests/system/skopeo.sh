#!/usr/bin/env bash
# skopeo pushes and pulls a multi-arch image (OCI index, two platforms) and a single-arch image
# built as OCI layouts; list-tags, inspect and delete work against registryd.
source "$(dirname "$0")/lib/common.sh"

PORT=$(free_port)
start_registryd skopeo "$PORT" "$WORK/data"
R=127.0.0.1:$PORT
SK="skopeo --insecure-policy"
CP="$SK copy --quiet"

python3 "$SYS_DIR/lib/mkimage.py" "$WORK/multi" v1 --arch amd64 --arch arm64 >/dev/null
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/single" v1 --layer-bytes 300000 >/dev/null

$CP --all --dest-tls-verify=false "oci:$WORK/multi:v1" "docker://$R/team/multi:v1"
$CP --dest-tls-verify=false "oci:$WORK/single:v1" "docker://$R/team/single:v1"
$CP --dest-tls-verify=false "oci:$WORK/single:v1" "docker://$R/team/single:v2"
pass "pushed multi-arch and single-arch images"

raw=$($SK inspect --raw --tls-verify=false "docker://$R/team/multi:v1")
[ "$(echo "$raw" | jq -r .mediaType)" = application/vnd.oci.image.index.v1+json ] || fail "multi-arch is not an index"
[ "$(echo "$raw" | jq '.manifests | length')" = 2 ] || fail "index does not list two platforms"
want=$(jq -r '.manifests[0].digest' "$WORK/multi/index.json")
got=sha256:$(printf '%s' "$raw" | sha256sum | cut -d' ' -f1)
[ "$got" = "$want" ] || fail "index served with digest $got, pushed $want (not byte-exact)"
arch=$($SK inspect --tls-verify=false --override-arch arm64 "docker://$R/team/multi:v1" | jq -r .Architecture)
[ "$arch" = arm64 ] || fail "arm64 platform resolves to $arch"
pass "inspect: index with 2 platforms, arm64 resolves"

$CP --all --src-tls-verify=false "docker://$R/team/multi:v1" "oci:$WORK/pulled-multi:v1"
$CP --src-tls-verify=false "docker://$R/team/single:v1" "oci:$WORK/pulled-single:v1"
for d in multi single; do
  for b in "$WORK/$d"/blobs/sha256/*; do
    cmp -s "$b" "$WORK/pulled-$d/blobs/sha256/$(basename "$b")" || fail "$d blob $(basename "$b") differs after pull"
  done
done
pass "pulled both back, every blob byte-identical"

tags=$($SK list-tags --tls-verify=false "docker://$R/team/single" | jq -c .Tags)
[ "$tags" = '["v1","v2"]' ] || fail "list-tags gave $tags"
pass "list-tags: $tags"

# skopeo delete removes the manifest by digest (and every tag naming it).
$SK delete --tls-verify=false "docker://$R/team/multi:v1"
if $SK inspect --raw --tls-verify=false "docker://$R/team/multi:v1" >/dev/null 2>&1; then fail "deleted image still there"; fi
pass "delete"
