#!/usr/bin/env bash
# Soak: three registryd nodes on the GlusterFS harness of the tests (tests/system/lib/gluster.sh) for
# a long time under mixed traffic, with the operator's chores going on underneath. Not a test and not
# in CI: it reports, and exits non-zero when a target is missed.
#
# Traffic: CLIENTS loops in parallel, client c talking to node ((c-1) mod 3)+1 by name over TLS:
# skopeo pushes of small random images made as the tests make them (lib/mkimage.py; one in five a
# two-platform index), skopeo pulls, manifest GETs with curl, tag moves (manifest PUT of another
# tag's manifest), deletes (skopeo delete by digest), and pulls through the pull-through cache from a
# local upstream (Debian's docker-registry, CNCF Distribution 2.8.2, in a network namespace of its own
# on the harness's bridge). Underneath: `registryd gc` every minute, a certificate rotation every 5
# minutes (the `..data` symlink swap, then every node must serve the new certificate), one node
# restarted (SIGTERM, start, ready) every 10 minutes, round robin.
#
# Targets: no error (a client's error while its own node restarts is expected and counted apart);
# every node's RSS and open fds flat after warm-up (sampled at the start and every minute); at the
# end every acknowledged image pulls with skopeo, digest-exact, and every deleted one is gone.
#
# Usage: sudo bench/soak.sh [--duration 30m] [--clients 6] [--binary auto|release|quick]
#   (env: SOAK_DURATION, SOAK_CLIENTS, SOAK_BINARY; intervals, for short runs: SOAK_GC_EVERY=60,
#   SOAK_ROTATE_EVERY=300, SOAK_RESTART_EVERY=600 seconds; SOAK_GC_GRACE=120 s, the gc grace, short so
#   gc collects during the run; SOAK_WARMUP=300 s). Wrap it in `flock /tmp/registryd-gluster.lock`:
#   one GlusterFS harness at a time on a machine.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${SOAK_DURATION:-30m} CLIENTS=${SOAK_CLIENTS:-6} BINARY=${SOAK_BINARY:-auto}
while [ $# -gt 0 ]; do
  case $1 in
    --duration) DURATION=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --binary) BINARY=$2; shift 2 ;;
    *) echo "usage: $0 [--duration 30m|90s] [--clients N] [--binary auto|release|quick]" >&2; exit 2 ;;
  esac
done
case $DURATION in
  *m) SECS=$(( ${DURATION%m} * 60 )) ;;
  *s) SECS=${DURATION%s} ;;
  *[!0-9]*|'') echo "--duration: a number of minutes (30m) or seconds (90s), not '$DURATION'" >&2; exit 2 ;;
  *) SECS=$(( DURATION * 60 )) ;;
esac
[[ $CLIENTS =~ ^[1-9][0-9]*$ ]] || { echo "--clients: a positive number, not '$CLIENTS'" >&2; exit 2; }
GC_EVERY=${SOAK_GC_EVERY:-60} ROTATE_EVERY=${SOAK_ROTATE_EVERY:-300} RESTART_EVERY=${SOAK_RESTART_EVERY:-600}
GC_GRACE=${SOAK_GC_GRACE:-120} WARMUP=${SOAK_WARMUP:-300}

# The binary: the release build when it is newer than every source, else the quick profile (built).
release_fresh() {
  [ -x target/release/registryd ] &&
    [ -z "$(find src Cargo.toml Cargo.lock build.rs -newer target/release/registryd -print -quit 2>/dev/null)" ]
}
case $BINARY in
  release) release_fresh || { echo "target/release/registryd is missing or older than src/" >&2; exit 2; }
           BIN_NOTE="release profile (fresh)" ;;
  quick) ;;
  auto) if release_fresh; then BINARY=release BIN_NOTE="release profile (fresh)"; else BINARY=quick; fi ;;
  *) echo "--binary: auto, release or quick" >&2; exit 2 ;;
esac
if [ "$BINARY" = quick ]; then
  cargo build --profile quick -q
  BIN_NOTE="quick profile (target/release/registryd $( [ -x target/release/registryd ] && echo "is older than the sources" || echo "absent"))"
fi
export TEST_REGISTRYD_BIN=$PWD/target/$BINARY/registryd

source tests/system/lib/common.sh
source tests/system/lib/gluster.sh
deps_apt glusterfs-server glusterfs-client skopeo docker-registry python3 curl openssl jq >/dev/null \
  || fail "could not install the soak's packages"
S=$WORK/soak
mkdir -p "$S"
SK="skopeo --insecure-policy"
R=registry.home:8443
now() { echo "$EPOCHREALTIME"; }
T0=$(date +%s)
echo "soak: $SECS s, $CLIENTS clients, binary $TEST_REGISTRYD_BIN, $BIN_NOTE"
echo "soak: gc every ${GC_EVERY}s (grace ${GC_GRACE}s), certificate rotation every ${ROTATE_EVERY}s, a node restart every ${RESTART_EVERY}s; warm-up ${WARMUP}s"
echo "soak: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg) at the start (the machine may be shared)"

gl_up
# The certificate as a Kubernetes secret mounts it: tls.crt -> ..data/tls.crt, ..data -> genN, so a
# rotation is one atomic rename and no node ever sees a mismatched pair.
mkdir -p "$GL/tls/gen0"
mv "$GL/tls/tls.crt" "$GL/tls/tls.key" "$GL/tls/gen0/"
ln -s gen0 "$GL/tls/..data"
ln -s ..data/tls.crt "$GL/tls/tls.crt"
ln -s ..data/tls.key "$GL/tls/tls.key"

# The upstream of the pull-through cache: Distribution in a namespace of its own on the bridge.
UPNS=${GL_TAG}up UPADDR=10.213.0.20:5000
ip netns add "$UPNS"
CLEANUPS+=("ip link del ${GL_TAG}vu 2>/dev/null; ip netns del $UPNS 2>/dev/null")
ip link add "${GL_TAG}vu" type veth peer name eth1 netns "$UPNS"
ip link set "${GL_TAG}vu" master "${GL_TAG}br" up
ip -n "$UPNS" link set lo up
ip -n "$UPNS" addr add "${UPADDR%:*}/24" dev eth1
ip -n "$UPNS" link set eth1 up
cat >"$S/upstream.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $S/upstream-data}}
http: {addr: $UPADDR}
EOF
ip netns exec "$UPNS" docker-registry serve "$S/upstream.yml" >"$S/upstream.log" 2>&1 &
PIDS+=("$!")
UPSTREAM_IMAGES=4
for _ in $(seq 1 100); do gl_in 1 curl -fs -o /dev/null "http://$UPADDR/v2/" && break; sleep 0.1; done
for u in $(seq 1 "$UPSTREAM_IMAGES"); do
  arch=(--arch amd64); [ "$u" = 1 ] && arch=(--arch amd64 --arch arm64)
  python3 tests/system/lib/mkimage.py "$S/up$u" v1 "${arch[@]}" --layer-bytes $((200000 * u)) --seed "up$u" >/dev/null
  gl_in 1 $SK copy -q --all --dest-tls-verify=false --digestfile "$S/up$u.digest" "oci:$S/up$u:v1" \
    "docker://$UPADDR/library/u$u:v1" || fail "seeding the upstream"
  echo "up.test/library/u$u:v1 $(cat "$S/up$u.digest")" >>"$S/upstream.digests"
done

cat >"$S/node.toml" <<EOF
[[upstream]]
name = "up.test"
url = "http://$UPADDR"
EOF
GL_SERVE_ARGS=(--config "$S/node.toml")
# Each node its own node.name (the harness leaves the host name, the same on the three).
for i in 1 2 3; do gl_start "$i" REGISTRYD_NODE_NAME="node$i"; done
for i in 1 2 3; do gl_wait_ready "$i" || fail "node $i not ready"; done

# --- One client: a loop of random operations against its node, until $S/stop exists. Every
# operation is logged as `op KIND ok|fail T0 T1 NODE DETAIL` and every acknowledged change of the
# registry as a ledger line (`push|tag REPO TAG DIGEST`, `delete REPO DIGEST`; `lost REPO TAG` and
# `lostdel REPO DIGEST` when a change failed and its outcome is unknown), for the final check.
client() {
  trap - EXIT
  set +e
  local c=$1 n=$2 k=0 d=$S/c$1 out t0 t1 r key repo tag dg code pick tries
  local -A TAGD=()
  local -a keys=()
  mkdir -p "$d"
  out=$d/events
  op() { echo "op $1 $2 $3 $4 $n ${5:-}" >>"$out"; }
  firstline() { tr '\n' ' ' <"$d/err" | cut -c1-300; }
  while [ ! -e "$S/stop" ]; do
    k=$((k + 1))
    keys=("${!TAGD[@]}")
    r=$((RANDOM % 100))
    if [ "${#keys[@]}" -lt 3 ] || [ "$r" -lt 25 ]; then
      # Push a new image to a new tag.
      repo=soak/c$c/r$((RANDOM % 3)) tag=p$k
      local multi=() all=()
      [ $((k % 5)) = 0 ] && multi=(--arch amd64 --arch arm64) all=(--all)
      rm -rf "$d/img"
      python3 tests/system/lib/mkimage.py "$d/img" v1 "${multi[@]}" --layer-bytes $((4096 + RANDOM * 16)) \
        --seed "soak-$c-$k-$RANDOM" >"$d/made" 2>"$d/err"
      t0=$(now)
      if gl_in "$n" $SK copy -q "${all[@]}" --dest-cert-dir "$GL/certs.d" --digestfile "$d/dg" \
        "oci:$d/img:v1" "docker://$R/$repo:$tag" 2>"$d/err"; then
        t1=$(now) dg=$(cat "$d/dg")
        TAGD[$repo:$tag]=$dg
        echo "push $repo $tag $dg" >>"$d/ledger"
        if [ "$dg" = "$(cat "$d/made")" ]; then op push ok "$t0" "$t1"; else op push-digest-changed fail "$t0" "$t1" "made $(cat "$d/made") pushed $dg"; fi
      else
        t1=$(now)
        echo "lost $repo $tag" >>"$d/ledger"
        op push fail "$t0" "$t1" "$repo:$tag $(firstline)"
      fi
    elif [ "$r" -lt 45 ]; then
      # Pull a tag of ours (every platform), digest-exact.
      key=${keys[RANDOM % ${#keys[@]}]} repo=${key%:*} tag=${key##*:}
      rm -rf "$d/pull"
      t0=$(now)
      if gl_in "$n" $SK copy -q --all --src-cert-dir "$GL/certs.d" "docker://$R/$repo:$tag" "dir:$d/pull" 2>"$d/err"; then
        t1=$(now)
        if [ "sha256:$(sha256sum <"$d/pull/manifest.json" | cut -d' ' -f1)" = "${TAGD[$key]}" ]; then op pull ok "$t0" "$t1"
        else op pull-wrong-manifest fail "$t0" "$t1" "$key want ${TAGD[$key]}"; fi
      else
        t1=$(now)
        op pull fail "$t0" "$t1" "$key $(firstline)"
      fi
    elif [ "$r" -lt 65 ]; then
      # GET a manifest by tag with curl: status, Docker-Content-Digest and body digest.
      key=${keys[RANDOM % ${#keys[@]}]} repo=${key%:*} tag=${key##*:}
      rm -f "$d/body"
      t0=$(now)
      code=$(gl_curl "$n" -o "$d/body" -D "$d/hdr" -w '%{http_code}' \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json' \
        "https://$R/v2/$repo/manifests/$tag" 2>"$d/err")
      t1=$(now)
      if [ "$code" != 200 ]; then op get fail "$t0" "$t1" "$key HTTP ${code:-none} $(firstline) $(head -c 200 "$d/body" 2>/dev/null)"
      elif [ "sha256:$(sha256sum <"$d/body" | cut -d' ' -f1)" != "${TAGD[$key]}" ] ||
        ! tr -d '\r' <"$d/hdr" | grep -qix "docker-content-digest: ${TAGD[$key]}"; then
        op get-wrong-manifest fail "$t0" "$t1" "$key want ${TAGD[$key]}"
      else op get ok "$t0" "$t1"; fi
    elif [ "$r" -lt 75 ]; then
      # Move a tag of ours to another manifest of the same repository (a manifest PUT by tag).
      key=${keys[RANDOM % ${#keys[@]}]} repo=${key%:*} dg=${TAGD[$key]}
      pick= tries=0
      while [ -z "$pick" ] && [ "$tries" -lt 10 ]; do
        tries=$((tries + 1))
        local other=${keys[RANDOM % ${#keys[@]}]}
        [ "${other%:*}" = "$repo" ] && [ "${TAGD[$other]}" != "$dg" ] && pick=$other
      done
      [ -n "$pick" ] || continue
      tag=${pick##*:}
      t0=$(now)
      code=$(gl_curl "$n" -o "$d/body" -D "$d/hdr" -w '%{http_code}' "https://$R/v2/$repo/manifests/$dg" \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json' 2>"$d/err")
      if [ "$code" = 200 ]; then
        local ct
        ct=$(tr -d '\r' <"$d/hdr" | sed -n 's/^[Cc]ontent-[Tt]ype: //p')
        code=$(gl_curl "$n" -o "$d/put" -w '%{http_code}' -X PUT -H "Content-Type: $ct" --data-binary @"$d/body" \
          "https://$R/v2/$repo/manifests/$tag" 2>"$d/err")
        t1=$(now)
        if [ "$code" = 201 ]; then
          TAGD[$pick]=$dg
          echo "tag $repo $tag $dg" >>"$d/ledger"
          op tag-move ok "$t0" "$t1"
        else
          unset "TAGD[$pick]"
          echo "lost $repo $tag" >>"$d/ledger"
          op tag-move fail "$t0" "$t1" "$pick PUT HTTP ${code:-none} $(firstline) $(head -c 200 "$d/put" 2>/dev/null)"
        fi
      else
        t1=$(now)
        op tag-move fail "$t0" "$t1" "$repo@$dg GET HTTP ${code:-none} $(firstline)"
      fi
    elif [ "$r" -lt 83 ]; then
      # Delete a manifest of ours by digest (its tags go with it).
      key=${keys[RANDOM % ${#keys[@]}]} repo=${key%:*} dg=${TAGD[$key]}
      t0=$(now)
      if gl_in "$n" skopeo delete --cert-dir "$GL/certs.d" "docker://$R/$repo@$dg" 2>"$d/err"; then
        t1=$(now)
        echo "delete $repo $dg" >>"$d/ledger"
        op delete ok "$t0" "$t1"
      else
        t1=$(now)
        echo "lostdel $repo $dg" >>"$d/ledger"
        op delete fail "$t0" "$t1" "$repo@$dg $(firstline)"
      fi
      for key in "${keys[@]}"; do
        [ "${key%:*}" = "$repo" ] && [ "${TAGD[$key]}" = "$dg" ] && unset "TAGD[$key]"
      done
    else
      # Pull through the cache from the upstream, digest-exact.
      local line u
      line=$(sed -n "$((RANDOM % UPSTREAM_IMAGES + 1))p" "$S/upstream.digests")
      u=${line% *} dg=${line#* }
      rm -rf "$d/pull"
      t0=$(now)
      if gl_in "$n" $SK copy -q --all --src-cert-dir "$GL/certs.d" "docker://$R/$u" "dir:$d/pull" 2>"$d/err"; then
        t1=$(now)
        if [ "sha256:$(sha256sum <"$d/pull/manifest.json" | cut -d' ' -f1)" = "$dg" ]; then op proxy-pull ok "$t0" "$t1"
        else op proxy-pull-wrong-manifest fail "$t0" "$t1" "$u want $dg"; fi
      else
        t1=$(now)
        op proxy-pull fail "$t0" "$t1" "$u $(firstline)"
      fi
    fi
  done
}

# --- The chores, from this shell (it owns the node processes).
sample() { # one line per node: TIME NODE PID RSS_KIB FDS
  local i p t
  t=$(( $(date +%s) - T0 ))
  for i in 1 2 3; do
    p=${NODE_PID[$i]}
    echo "$t $i $p $(awk '/^VmRSS/{print $2}' "/proc/$p/status" 2>/dev/null || echo 0) $(ls "/proc/$p/fd" 2>/dev/null | wc -l)"
  done | tee -a "$S/samples" | awk '{printf "  t=%4ss node %s pid %s RSS %6.1f MiB fds %s\n", $1, $2, $3, $4/1024, $5}'
}
chore() { # KIND ok|fail DETAIL
  echo "$1 $2 $(( $(date +%s) - T0 )) ${3:-}" >>"$S/chores"
  [ "$2" != fail ] || echo "  chore $1 failed: ${3:-}" >&2
}
GC_PID=
gc_pass() {
  # A pass longer than the interval: this one is skipped, and said so (not an error).
  if [ -n "$GC_PID" ] && kill -0 "$GC_PID" 2>/dev/null; then chore gc-skipped note "the previous pass still runs"; return; fi
  (
    trap - EXIT
    set +e
    local t=$SECONDS
    REGISTRYD_STORAGE_ROOT=$(gl_root) REGISTRYD_GC_GRACE_SECS=$GC_GRACE "$TEST_REGISTRYD_BIN" gc >"$S/gc.last" 2>&1
    rc=$?
    cat "$S/gc.last" >>"$S/gc.out"
    case $rc in
      0) chore gc ok "$((SECONDS - t)) s: $(grep -h '^removed' "$S/gc.last")" ;;
      3) chore gc-lock-busy ok "another collector held the lock" ;;
      *) chore gc fail "exit $rc: $(tail -2 "$S/gc.last" | tr '\n' ' ')" ;;
    esac
  ) &
  GC_PID=$!
  PIDS+=("$GC_PID")
}
fingerprint() { # NODE: the SHA-256 fingerprint of the certificate NODE serves
  gl_in "$1" openssl s_client -connect 169.254.254.254:8443 -servername registry.home </dev/null 2>/dev/null |
    openssl x509 -noout -fingerprint -sha256 2>/dev/null
}
GEN=0
rotate() {
  GEN=$((GEN + 1))
  local g=$GL/tls/gen$GEN i want ok t
  mkdir -p "$g"
  REGISTRYD_TLS_CERTIFICATE=$g/tls.crt REGISTRYD_TLS_KEY=$g/tls.key \
    "$TEST_REGISTRYD_BIN" cert init --ca-dir "$GL/ca" --hosts registry.home >/dev/null 2>"$S/rotate.err" \
    || { chore rotate fail "cert init: $(head -1 "$S/rotate.err")"; return; }
  want=$(openssl x509 -in "$g/tls.crt" -noout -fingerprint -sha256)
  ln -sfn "gen$GEN" "$GL/tls/..data.tmp" && mv -T "$GL/tls/..data.tmp" "$GL/tls/..data"
  t=$(date +%s.%N)
  for i in 1 2 3; do
    ok=0
    for _ in $(seq 1 30); do
      [ "$(fingerprint "$i")" = "$want" ] && { ok=1; break; }
      sleep 0.5
    done
    [ "$ok" = 1 ] || chore rotate fail "node $i still serves the old certificate 15 s after rotation $GEN"
  done
  chore rotate ok "generation $GEN served by every node within $(awk "BEGIN{printf \"%.1f\", $(date +%s.%N) - $t}") s"
}
NEXT_NODE=1
restart() {
  local i=$NEXT_NODE t0 t1 up=0
  NEXT_NODE=$(( NEXT_NODE % 3 + 1 ))
  t0=$(now)
  kill -TERM "${NODE_PID[$i]}" 2>/dev/null || true
  wait "${NODE_PID[$i]}" 2>/dev/null || true
  gl_start "$i" REGISTRYD_NODE_NAME="node$i"
  for _ in $(seq 1 600); do
    [ "$(gl_curl "$i" -o /dev/null -w '%{http_code}' "https://$R/readyz" 2>/dev/null)" = 200 ] && { up=1; break; }
    sleep 0.1
  done
  t1=$(now)
  echo "$i $t0 $t1" >>"$S/restarts"
  if [ "$up" = 1 ]; then chore restart ok "node $i down and ready again in $(awk "BEGIN{printf \"%.1f\", $t1 - $t0}") s"
  else chore restart fail "node $i not ready 60 s after its restart"; fi
}

echo "soak: nodes ready; RSS and fds at the start:"
sample
: >"$S/restarts"
for c in $(seq 1 "$CLIENTS"); do
  client "$c" $(( (c - 1) % 3 + 1 )) &
  CLIENT_PIDS+=("$!")
  PIDS+=("$!")
done
END=$(( T0 + SECS ))
next_gc=$(( $(date +%s) + GC_EVERY )) next_rot=$(( $(date +%s) + ROTATE_EVERY ))
next_restart=$(( $(date +%s) + RESTART_EVERY )) next_sample=$(( $(date +%s) + 60 ))
while [ "$(date +%s)" -lt "$END" ]; do
  t=$(date +%s)
  [ "$t" -ge "$next_sample" ] && { sample; next_sample=$((next_sample + 60)); }
  [ "$t" -ge "$next_gc" ] && { gc_pass; next_gc=$((next_gc + GC_EVERY)); }
  [ "$t" -ge "$next_rot" ] && { rotate; next_rot=$((next_rot + ROTATE_EVERY)); }
  [ "$t" -ge "$next_restart" ] && { restart; next_restart=$((next_restart + RESTART_EVERY)); }
  sleep 1
done
touch "$S/stop"
echo "soak: traffic stopped at $(( $(date +%s) - T0 )) s; waiting for the clients' last operations"
for p in "${CLIENT_PIDS[@]}"; do wait "$p" || true; done
[ -z "$GC_PID" ] || wait "$GC_PID" 2>/dev/null || true
echo "soak: RSS and fds at the end:"
sample

# --- The final check: one more gc pass (it must keep everything acknowledged), then every acknowledged
# manifest pulled with skopeo by digest (all platforms, blobs checked by skopeo), every tag resolved
# with skopeo inspect, every deleted manifest 404, through the three nodes in turn.
t=$SECONDS
if REGISTRYD_STORAGE_ROOT=$(gl_root) REGISTRYD_GC_GRACE_SECS=$GC_GRACE "$TEST_REGISTRYD_BIN" gc >"$S/gc.last" 2>&1; then
  chore gc-final ok "$((SECONDS - t)) s: $(grep -h '^removed' "$S/gc.last")"
else
  chore gc-final fail "after $((SECONDS - t)) s: $(tail -1 "$S/gc.last")"
fi
cat "$S/gc.last" >>"$S/gc.out"
python3 bench/soak.py expect "$S" >"$S/expect"
verify() { # NODE J: the lines of $S/expect for verifier J, through NODE
  trap - EXIT
  set +e
  local n=$1 kind repo ref dg d=$S/v$2 code
  mkdir -p "$d"
  while read -r kind repo ref dg; do
    case $kind in
      digest)
        rm -rf "$d/pull"
        if ! gl_in "$n" $SK copy -q --all --src-cert-dir "$GL/certs.d" "docker://$R/$repo@$dg" "dir:$d/pull" 2>"$d/err"; then
          echo "verify-missing $repo@$dg via node $n: $(head -c 300 "$d/err")"
        elif [ "sha256:$(sha256sum <"$d/pull/manifest.json" | cut -d' ' -f1)" != "$dg" ]; then
          echo "verify-wrong-manifest $repo@$dg via node $n"
        else echo "verify-ok digest"; fi ;;
      tag)
        if ! gl_in "$n" skopeo inspect --raw --cert-dir "$GL/certs.d" "docker://$R/$repo:$ref" >"$d/raw" 2>"$d/err"; then
          echo "verify-tag-missing $repo:$ref via node $n: $(head -c 300 "$d/err")"
        elif [ "sha256:$(sha256sum <"$d/raw" | cut -d' ' -f1)" != "$dg" ]; then
          echo "verify-tag-wrong $repo:$ref via node $n: want $dg"
        else echo "verify-ok tag"; fi ;;
      gone)
        code=$(gl_curl "$n" -o /dev/null -w '%{http_code}' -I "https://$R/v2/$repo/manifests/$ref" 2>/dev/null)
        if [ "$code" = 404 ]; then echo "verify-ok gone"; else echo "verify-deleted-present $repo $ref via node $n: HTTP $code"; fi ;;
    esac
  done
}
echo "soak: verifying $(grep -c '^digest' "$S/expect" || true) acknowledged manifests, $(grep -c '^tag' "$S/expect" || true) tags, $(grep -c '^gone' "$S/expect" || true) deleted references"
# Two verifiers per node, six in all.
vp=() t=$SECONDS
for j in 0 1 2 3 4 5; do
  awk -v j="$j" 'NR % 6 == j' "$S/expect" | verify $((j % 3 + 1)) "$j" >"$S/verify$j" &
  vp+=("$!")
done
for p in "${vp[@]}"; do wait "$p"; done
cat "$S"/verify[0-5] >"$S/verify"
echo "soak: verified in $((SECONDS - t)) s"

python3 bench/soak.py report "$S" "$WARMUP" "$WORK" && rc=0 || rc=$?
if [ -n "${SOAK_KEEP:-}" ]; then mkdir -p "$SOAK_KEEP" && cp -r "$S" "$WORK"/node*.log "$SOAK_KEEP/" && echo "soak: records kept in $SOAK_KEEP"; fi
exit "$rc"
