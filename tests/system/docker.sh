#!/usr/bin/env bash
# The Docker engine (Debian docker.io, started here with its own socket and data root) pulls, tags
# and pushes through registryd: a pull, a push to a second repository (cross-repository mounts),
# and a push of a new layer (Docker's streamed PATCH without Content-Range).
source "$(dirname "$0")/lib/common.sh"

command -v dockerd >/dev/null || fail "dockerd missing: apt-get install docker.io"
PORT=$(free_port)
start_registryd docker "$PORT" "$WORK/data"
R=127.0.0.1:$PORT

start_dockerd

python3 "$SYS_DIR/lib/mkimage.py" "$WORK/base" v1 --layer-bytes 200000 >/dev/null
skopeo --insecure-policy copy --quiet --dest-tls-verify=false "oci:$WORK/base:v1" "docker://$R/base/img:v1"

$DOCKER pull -q "$R/base/img:v1" >/dev/null || fail "docker pull"
pass "docker pull"

$DOCKER tag "$R/base/img:v1" "$R/copies/img:v1"
$DOCKER push -q "$R/copies/img:v1" >/dev/null || fail "docker push to second repo"
mounts=$(grep -c 'method=POST path=/v2/copies/img/blobs/uploads/ status=201' "$WORK/docker.log" || true)
[ "$mounts" -ge 1 ] || { grep copies/img "$WORK/docker.log"; fail "docker push did not mount from base/img"; }
pass "docker tag + push: $mounts layer(s) cross-repository mounted"

# A layer registryd has never seen: docker import creates it without running anything.
mkdir -p "$WORK/rootfs"
head -c 3000000 /dev/urandom >"$WORK/rootfs/random.bin"
echo "imported" >"$WORK/rootfs/hello.txt"
tar -C "$WORK/rootfs" -cf "$WORK/rootfs.tar" .
$DOCKER import "$WORK/rootfs.tar" "$R/fresh/img:v1" >/dev/null
$DOCKER push -q "$R/fresh/img:v1" >/dev/null || fail "docker push of a new layer"
grep -q 'method=PATCH path=/v2/fresh/img/blobs/uploads/[0-9a-f-]* status=202' "$WORK/docker.log" \
  || fail "no streamed PATCH seen for the new layer"
pass "docker push of a new 3 MB layer via streamed PATCH"

# Pull it back into an empty engine state and compare the manifest digest.
want=$(curl -sI -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
  "http://$R/v2/fresh/img/manifests/v1" | tr -d '\r' | awk 'tolower($1)=="docker-content-digest:"{print $2}')
$DOCKER rmi -f "$R/fresh/img:v1" "$R/base/img:v1" "$R/copies/img:v1" >/dev/null
$DOCKER pull -q "$R/fresh/img:v1" >/dev/null || fail "docker pull of pushed image"
got=$($DOCKER inspect --format '{{index .RepoDigests 0}}' "$R/fresh/img:v1")
[ "$got" = "$R/fresh/img@$want" ] || fail "pulled digest $got, registry has $want"
$DOCKER save "$R/fresh/img:v1" | tar -xO --wildcards '*/layer.tar' 2>/dev/null | tar -xO ./random.bin | cmp - "$WORK/rootfs/random.bin" \
  || fail "layer content differs after round trip"
pass "docker pull after push: digest $want, layer content identical"
