#!/usr/bin/env bash
# On-disk compatibility with CNCF Distribution 2.8.2 (Debian docker-registry), both directions:
# push with one, stop it, serve the same directory with the other, pull and compare digests.
source "$(dirname "$0")/lib/common.sh"

command -v docker-registry >/dev/null || fail "docker-registry missing: apt-get install docker-registry"
SK="skopeo --insecure-policy"

start_distribution() { # DIR PORT
  cat >"$WORK/dist-$2.yml" <<YML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $1}
  delete: {enabled: true}
http: {addr: 127.0.0.1:$2}
YML
  docker-registry serve "$WORK/dist-$2.yml" >"$WORK/dist-$2.log" 2>&1 &
  DIST_PID=$!
  PIDS+=("$DIST_PID")
  wait_http "http://127.0.0.1:$2/v2/" || { cat "$WORK/dist-$2.log"; fail "docker-registry did not start"; }
}

python3 "$SYS_DIR/lib/mkimage.py" "$WORK/multi" v1 --arch amd64 --arch arm64 >/dev/null
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/single" v1 --layer-bytes 100000 >/dev/null

push_all() { # PORT
  $SK copy --quiet --all --dest-tls-verify=false "oci:$WORK/multi:v1" "docker://127.0.0.1:$1/compat/multi:v1"
  $SK copy --quiet --dest-tls-verify=false "oci:$WORK/single:v1" "docker://127.0.0.1:$1/compat/single:v1"
  $SK copy --quiet --dest-tls-verify=false "oci:$WORK/single:v1" "docker://127.0.0.1:$1/other/single:latest"
}

digests() { # PORT -> one line per image: ref digest-of-raw-manifest, then the catalog and tags
  for ref in compat/multi:v1 compat/single:v1 other/single:latest; do
    echo "$ref $($SK inspect --raw --tls-verify=false "docker://127.0.0.1:$1/$ref" | sha256sum | cut -d' ' -f1)"
  done
  for arch in amd64 arm64; do
    echo "multi/$arch $($SK inspect --raw --tls-verify=false --override-arch $arch "docker://127.0.0.1:$1/compat/multi@$(jq -r ".manifests[] | select(.platform.architecture==\"$arch\") | .digest" <<<"$($SK inspect --raw --tls-verify=false "docker://127.0.0.1:$1/compat/multi:v1")")" | sha256sum | cut -d' ' -f1)"
  done
  curl -fs "http://127.0.0.1:$1/v2/_catalog" | jq -c .
  curl -fs "http://127.0.0.1:$1/v2/compat/single/tags/list" | jq -c .
}

pull_all() { # PORT DEST
  mkdir -p "$2"
  $SK copy --quiet --all --src-tls-verify=false "docker://127.0.0.1:$1/compat/multi:v1" "oci:$2/multi:v1"
  $SK copy --quiet --src-tls-verify=false "docker://127.0.0.1:$1/compat/single:v1" "oci:$2/single:v1"
  for d in multi single; do
    for b in "$WORK/$d"/blobs/sha256/*; do
      cmp -s "$b" "$2/$d/blobs/sha256/$(basename "$b")" || fail "$d blob $(basename "$b") differs"
    done
  done
}

# 1. Distribution writes, registryd serves.
P1=$(free_port)
start_distribution "$WORK/from-dist" "$P1"
push_all "$P1"
digests "$P1" >"$WORK/dist.digests"
stop_pid "$DIST_PID"
P2=$(free_port)
start_registryd reg1 "$P2" "$WORK/from-dist"
digests "$P2" >"$WORK/reg.digests"
diff "$WORK/dist.digests" "$WORK/reg.digests" || fail "registryd serves Distribution's data differently"
pull_all "$P2" "$WORK/pull1"
# and registryd can add to it
$SK copy --quiet --dest-tls-verify=false "oci:$WORK/single:v1" "docker://127.0.0.1:$P2/compat/single:v2"
stop_pid "$REG_PID"
pass "Distribution 2.8.2 wrote, registryd served identical digests, catalog and tags"

# 2. registryd writes, Distribution serves.
P3=$(free_port)
start_registryd reg2 "$P3" "$WORK/from-reg"
push_all "$P3"
digests "$P3" >"$WORK/reg2.digests"
stop_pid "$REG_PID"
P4=$(free_port)
start_distribution "$WORK/from-reg" "$P4"
digests "$P4" >"$WORK/dist2.digests"
diff "$WORK/reg2.digests" "$WORK/dist2.digests" || fail "Distribution serves registryd's data differently"
pull_all "$P4" "$WORK/pull2"
# Distribution can delete what registryd wrote, and registryd sees it.
d=$($SK inspect --raw --tls-verify=false "docker://127.0.0.1:$P4/other/single:latest" | sha256sum | cut -d' ' -f1)
code=$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "http://127.0.0.1:$P4/v2/other/single/manifests/sha256:$d")
[ "$code" = 202 ] || fail "Distribution delete of registryd's manifest answered $code"
stop_pid "$DIST_PID"
P5=$(free_port)
start_registryd reg3 "$P5" "$WORK/from-reg"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P5/v2/other/single/manifests/sha256:$d")
[ "$code" = 404 ] || fail "manifest deleted by Distribution still served by registryd ($code)"
pass "registryd wrote, Distribution 2.8.2 served identical digests, catalog and tags, and deleted"
