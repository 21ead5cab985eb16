#!/usr/bin/env bash
# Three registryd nodes on one GlusterFS replica-3 volume (lib/gluster.sh), one harness for every
# check of the cluster issue: read-after-write across nodes, 30 concurrent pushers on 3 nodes, a network
# partition, kill -9 of a node, a node losing its mount, brick failures and a hung brick, and the
# coherence warnings;
# and of the lifecycle issue: garbage collection while two nodes push and pull; and retention
# passes while two nodes push and pull.
source "$(dirname "$0")/lib/common.sh"
source "$SYS_DIR/lib/gluster.sh"
# Each check says when it ended (seconds into the test): the test takes 12 to 22 minutes on these
# machines, and the CI log is the one place that shows which part grew.
pass() { echo "ok: $* [${SECONDS}s]"; }

t0=$(date +%s)
gl_up
for i in 1 2 3; do gl_start "$i"; done
for i in 1 2 3; do gl_wait_ready "$i" || fail "node $i not ready"; done
pass "3 nodes up on GlusterFS replica 3 in $(( $(date +%s) - t0 ))s"
for i in 1 2 3; do
  grep -q "storage is on GlusterFS with the coherence settings on" "$WORK/node$i.log" \
    || { cat "$WORK/node$i.log"; fail "node $i did not confirm the GlusterFS coherence settings"; }
done

export PUSHERS_CA=$GL/ca/ca.crt
N1=$(gl_addr 1):8443 N2=$(gl_addr 2):8443 N3=$(gl_addr 3):8443
ROOT=$(gl_root)

# 1. Read-after-write across nodes: real clients by name, then every listing through the API.
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/img" v1 --layer-bytes 3000000 >/dev/null
gl_in 1 skopeo --insecure-policy copy -q --dest-cert-dir "$GL/certs.d" "oci:$WORK/img:v1" \
  docker://registry.home:8443/cluster/skopeo:v1 || fail "skopeo push through node 1"
want=$(gl_in 1 skopeo inspect --raw --cert-dir "$GL/certs.d" docker://registry.home:8443/cluster/skopeo:v1 | sha256sum)
for i in 2 3; do
  gl_in "$i" skopeo --insecure-policy copy -q --src-cert-dir "$GL/certs.d" \
    docker://registry.home:8443/cluster/skopeo:v1 "dir:$WORK/pulled$i" || fail "skopeo pull through node $i"
  got=$(sha256sum <"$WORK/pulled$i/manifest.json")
  [ "$got" = "$want" ] || fail "node $i served a different manifest"
  for f in "$WORK/img/blobs/sha256/"*; do
    d=$(basename "$f")
    [ ! -e "$WORK/pulled$i/$d" ] || cmp -s "$f" "$WORK/pulled$i/$d" || fail "node $i served different bytes for $d"
  done
done
pass "skopeo push through node 1, pulls through nodes 2 and 3 byte-identical right after"
gl_in 1 python3 "$SYS_DIR/lib/cluster.py" consistency "$N1" "$N2" "$N3" || fail "read-after-write across nodes"
pass "read-after-write across nodes"

# 1b. One upload driven through several nodes, as a client behind a load balancer does: chunks whose
# PATCHes land on nodes 1, 2 and 3 in turn, then two PATCHes of the same chunk (offset 0) on nodes 1
# and 2 at the same moment. The upload's cluster-wide lock serialises them: the second waits for the
# first, then finds the offset moved and gets 416 with the stored Range (never interleaved bytes).
UPR=/v2/cluster/lb/blobs/uploads/
upload_start() { # NODE: POST, prints the Location path
  gl_curl "$1" -fs -D - -o /dev/null -X POST "https://registry.home:8443$UPR" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p'
}
# A PATCH refused before its body was read (416) ends the HTTP/2 stream with a reset, which curl
# reports as an error after printing the answer's headers: the status is read from those.
patch() { # NODE LOCATION FILE START [curl args]: prints "status range"
  local n=$1 loc=$2 f=$3 start=$4; shift 4
  { gl_curl "$n" -s -D - -o /dev/null -X PATCH -H 'Content-Type: application/octet-stream' \
    -H "Content-Range: $start-$((start + $(stat -c %s "$f") - 1))" --data-binary "@$f" "$@" \
    "https://registry.home:8443$loc" || true; } | tr -d '\r' | awk '/^HTTP/{s=$2} tolower($1)=="range:"{r=$2} END{print s, r}'
}
head -c $((3 * 1048576)) /dev/urandom >"$WORK/lb.blob"
split -b 1048576 -d "$WORK/lb.blob" "$WORK/lb.part"
loc=$(upload_start 1)
[ -n "$loc" ] || fail "upload through nodes: no Location"
off=0
for k in 0 1 2; do
  n=$((k + 1))
  got=$(patch "$n" "$loc" "$WORK/lb.part0$k" "$off")
  off=$((off + 1048576))
  [ "$got" = "202 0-$((off - 1))" ] || fail "upload through nodes: PATCH $k on node $n answered $got"
done
LBD=sha256:$(sha256sum <"$WORK/lb.blob" | cut -d' ' -f1)
code=$(gl_curl 2 -s -o "$WORK/lb.put" -w '%{http_code}' -X PUT "https://registry.home:8443$loc?digest=$LBD")
[ "$code" = 201 ] || fail "upload through nodes: PUT on node 2 answered $code $(cat "$WORK/lb.put")"
gl_curl 3 -fs "https://registry.home:8443/v2/cluster/lb/blobs/$LBD" | cmp -s - "$WORK/lb.blob" \
  || fail "upload through nodes: node 3 serves other bytes"
# Concurrent: 8 MiB each, rate-limited so that both are in flight together for seconds.
head -c $((8 * 1048576)) /dev/urandom >"$WORK/lb.a"
head -c $((8 * 1048576)) /dev/urandom >"$WORK/lb.b"
loc=$(upload_start 1)
patch 1 "$loc" "$WORK/lb.a" 0 --http1.1 --limit-rate 4M >"$WORK/lb.ra" &
PA=$!
patch 2 "$loc" "$WORK/lb.b" 0 --http1.1 --limit-rate 4M >"$WORK/lb.rb" &
PB=$!
wait "$PA"; wait "$PB"
ra=$(cat "$WORK/lb.ra") rb=$(cat "$WORK/lb.rb")
case "$ra|$rb" in
  "202 0-8388607|416 0-8388607") won=a ;;
  "416 0-8388607|202 0-8388607") won=b ;;
  *) fail "concurrent PATCHes of one upload on nodes 1 and 2 answered '$ra' and '$rb' (want one 202, one 416, Range 0-8388607)" ;;
esac
WD=sha256:$(sha256sum <"$WORK/lb.$won" | cut -d' ' -f1)
code=$(gl_curl 3 -s -o "$WORK/lb.put" -w '%{http_code}' -X PUT "https://registry.home:8443$loc?digest=$WD")
[ "$code" = 201 ] || fail "concurrent PATCHes: PUT of the winner's digest on node 3 answered $code $(cat "$WORK/lb.put")"
gl_curl 1 -fs "https://registry.home:8443/v2/cluster/lb/blobs/$WD" | cmp -s - "$WORK/lb.$won" \
  || fail "concurrent PATCHes: the stored blob is not the winner's bytes"
pass "one upload through 3 nodes (curl, a PATCH per node, PUT on node 2): exact; 2 concurrent PATCHes on nodes 1 and 2: one 202, the other waited and got 416 Range: 0-8388607, blob exact"

# 2. Concurrency.
gl_in 1 python3 "$SYS_DIR/lib/cluster.py" storm "$ROOT" "$N1" "$N2" "$N3" >"$WORK/storm.out" \
  || { cat "$WORK/storm.out"; fail "concurrent pushes on 3 nodes"; }
# Nothing temporary left behind. Twice (in about 10 CI runs) finished uploads' directories were still
# listed right after the storm, on every brick, with entries pending heal; once the heal left them
# there. The likely cause: when concurrent operations fail on different bricks, each brick blames
# another, and the heal's conservative merge brings a removed entry back rather than guess. Such a
# directory is an abandoned upload, which gc removes (its job, not the push's); a temp file left is
# a failure.
if left=$(python3 "$SYS_DIR/lib/cluster.py" leftovers "$ROOT" "$GL"/bricks/b{1,2,3}); then
  healed=""
else
  gl_cli volume heal "$GL_VOL" >/dev/null 2>&1 || true
  gl_wait_healed 60 || true
  if after=$(python3 "$SYS_DIR/lib/cluster.py" leftovers "$ROOT" "$GL"/bricks/b{1,2,3}); then
    healed="; right after, the mount still listed what the heal then removed: $left"
  else
    # What tells the causes apart, for the log: whether the nodes saw their removals fail, what
    # the directories hold on each brick, and what the volume still has to heal.
    grep -h "upload" "$WORK"/node{1,2,3}.log | grep -v " INFO " | tail -n 20 || true
    for d in $(echo "$after" | awk '/_uploads/{print $1}' | head -n 3); do
      for b in 1 2 3; do echo "brick $b: $d:"; find "$GL/bricks/b$b/$d" -printf '  %P %s\n' 2>&1 | head -n 8; done
    done
    gl_cli volume heal "$GL_VOL" info 2>&1 | grep -E "^Brick|entries" || true
    ! echo "$after" | grep -v "/_uploads/" | grep -q . \
      || fail "temp files left by the concurrent pushes, still after the heal: $after"
    REGISTRYD_STORAGE_ROOT=$ROOT REGISTRYD_GC_GRACE_SECS=2 REGISTRYD_GC_UPLOAD_MAX_AGE_SECS=0 \
      "$TEST_REGISTRYD_BIN" gc >"$WORK/storm-gc.out" 2>&1 || { cat "$WORK/storm-gc.out"; fail "gc after the storm"; }
    python3 "$SYS_DIR/lib/cluster.py" leftovers "$ROOT" "$GL"/bricks/b{1,2,3} \
      || { cat "$WORK/storm-gc.out"; fail "upload directories left by the concurrent pushes outlived the heal and a gc pass: $after"; }
    healed="; upload directories outlived the heal ($(echo "$after" | grep -c _uploads) listed) and a gc pass removed them as abandoned"
  fi
fi
# registryd warns when a finished upload's directory would not go (it does not fail the push).
warned=$(cat "$WORK"/node{1,2,3}.log | grep -c "finished upload's directory" || true)
[ "$warned" = 0 ] || healed="$healed; nodes warned $warned times of an upload directory they could not remove"
pass "concurrent pushers: $(cat "$WORK/storm.out"), no temp files or upload directories left$healed"

# 2b. A network partition: node A's GlusterFS client cannot reach brick 1 and node B's cannot reach
# brick 2 (a client option points them at a closed port), so each side still has a majority. Both
# push to the same new repositories at the same moments. Were both sides to create one new directory,
# each copy would get its own GFID (a GFID split-brain; EIO for good unless resolved); registryd makes
# new directories under a cluster lock (flock, which both sides take on brick 3), so none is: checked
# on the bricks right after the partition. After it every acknowledged push is served by every node,
# and the heal (waited for before 5.) leaves no split-brain.
# Their parent directory exists on every brick first, as on a volume in use (the mount of node 1).
mkdir -p "$(gl_root)/docker/registry/v2/repositories/part"
PART_PIDS=()
declare -A PORT_PART=()
declare -A CUT=([a]=0 [b]=1) # the client (brick - 1) each side cannot reach
for side in a b; do
  cut=${CUT[$side]}
  mkdir -p "$GL/part-$side"
  gl_fuse "$GL/part-$side" "$GL/run/part-$side.pid" "$GL/log/part-$side.log" "${ZERO_TIMEOUTS[@]}" \
    --xlator-option="$GL_VOL-client-$cut.remote-port=1"
  for _ in $(seq 1 50); do gl_link_is "$GL/part-$side" "$cut" 0 && break; sleep 0.1; done
  gl_link_is "$GL/part-$side" "$cut" 0 || fail "partition: side $side is still connected to brick $((cut + 1))"
  PORT_PART[$side]=$(free_port)
  REGISTRYD_STORAGE_OPERATION_TIMEOUT_SECS=15 start_registryd "part-$side" "${PORT_PART[$side]}" "$GL/part-$side/$GL_ROOT_REL"
  PART_PIDS+=("$REG_PID")
done
PUSHERS_CA='' python3 "$SYS_DIR/lib/cluster.py" partition-push "127.0.0.1:${PORT_PART[a]}" \
  "127.0.0.1:${PORT_PART[b]}" 30 "$WORK/acked-part" >"$WORK/part.out" || { cat "$WORK/part.out"; fail "partition: pushes"; }
split=$(python3 "$SYS_DIR/lib/cluster.py" gfid-mismatches "$GL_ROOT_REL/docker/registry/v2" "$GL"/bricks/b{1,2,3})
for side in a b; do
  gl_link_is "$GL/part-$side" "${CUT[$side]}" 0 \
    || fail "partition: side $side reconnected to brick $((CUT[$side] + 1)) during the pushes (the cut did not hold)"
done
for p in "${PART_PIDS[@]}"; do stop_pid "$p"; done
umount "$GL/part-a" "$GL/part-b"
# New directories are made under a cluster lock (a node looks again under it and finds the other
# side's directory), so the two sides never give one path two identities.
[ "${split%% *}" = 0 ] || fail "partition: paths in GFID split-brain right after it: $split"
gl_in 1 python3 "$SYS_DIR/lib/cluster.py" partition-verify "$WORK/acked-part" "$N1" "$N2" "$N3" >"$WORK/part-verify.out" \
  || { cat "$WORK/part-verify.out"; fail "partition: after it ended"; }
pass "network partition: $(cat "$WORK/part.out"); no path in GFID split-brain; right after it, $(cat "$WORK/part-verify.out")"

# 2c. Quorum readiness: a node whose GlusterFS client reaches bricks 1 and 2 only through TCP
# forwarders (cluster.py forward; the client's remote-port option points at them). Stopping both
# forwarders leaves it connected to brick 3 alone, short of the replica set's quorum: /readyz 503 and
# STATUS= say so, while the mount itself still answers; started again, the client reconnects and the
# node is ready again.
QFWD=() QPORT=() QBRICK=()
for b in 1 2; do
  QPORT[$b]=$(free_port)
  bport=$(gl_cli volume status "$GL_VOL" "$GL_HOST:$GL/bricks/b$b" --xml | sed -n 's#.*<port>\([0-9]*\)</port>.*#\1#p' | head -1)
  [ -n "$bport" ] || fail "quorum: port of brick $b not found"
  QBRICK[$b]=$bport
done
qforward() { # B: (re)start the forwarder to brick B
  python3 "$SYS_DIR/lib/cluster.py" forward "${QPORT[$1]}" "$GL_HOST:${QBRICK[$1]}" &
  QFWD[$1]=$!
  PIDS+=("$!")
  for _ in $(seq 1 50); do ss -ltn "sport = :${QPORT[$1]}" | has LISTEN && return 0; sleep 0.1; done
  fail "quorum: forwarder to brick $1 not listening"
}
qforward 1
qforward 2
mkdir -p "$GL/q"
gl_fuse "$GL/q" "$GL/run/q.pid" "$GL/log/q.log" "${ZERO_TIMEOUTS[@]}" \
  --xlator-option="$GL_VOL-client-0.remote-port=${QPORT[1]}" --xlator-option="$GL_VOL-client-1.remote-port=${QPORT[2]}"
for n in 0 1 2; do
  for _ in $(seq 1 100); do gl_link_is "$GL/q" "$n" 1 && break; sleep 0.1; done
  gl_link_is "$GL/q" "$n" 1 || fail "quorum: the client is not connected to brick $((n + 1)) through its forwarder"
done
python3 "$SYS_DIR/lib/notify_listen.py" "$WORK/q.sock" "$WORK/q.notify" &
PIDS+=("$!")
wait_file "$WORK/q.sock.bound" || fail "quorum: notify listener"
QP=$(free_port)
NOTIFY_SOCKET=$WORK/q.sock REGISTRYD_STORAGE_CHECK_INTERVAL_SECS=1 REGISTRYD_STORAGE_CHECK_FAILURES=2 \
  REGISTRYD_STORAGE_OPERATION_TIMEOUT_SECS=15 start_registryd quorum "$QP" "$GL/q/$GL_ROOT_REL"
Q_PID=$REG_PID
qready() { curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$QP/readyz"; }
qwait() { # CODE: waits up to 30 s for /readyz to answer CODE
  for _ in $(seq 1 300); do [ "$(qready)" = "$1" ] && return 0; sleep 0.1; done
  return 1
}
qwait 200 || fail "quorum: node not ready with every brick connected"
kill "${QFWD[1]}" "${QFWD[2]}"
waitgone "${QFWD[1]}" "${QFWD[2]}"
t=$(date +%s%N)
qwait 503 || fail "quorum: still ready connected to brick 3 alone ($(for n in 0 1 2; do gl_link_is "$GL/q" "$n" 1 && printf 1 || printf 0; done))"
lost_ms=$(( ($(date +%s%N) - t) / 1000000 ))
qlinks=$(for n in 0 1 2; do gl_link_is "$GL/q" "$n" 1 && printf 1 || printf 0; done)
# GlusterFS 10.3 here: with 2 of 3 bricks gone the client's .meta graph itself answers ENOTCONN.
grep -qE "STATUS=.*storage UNAVAILABLE: .*(connected to 1 of the 3 bricks of $GL_VOL-replicate-0, short of its quorum|short of a quorum of bricks: its mount answers)" "$WORK/q.notify" \
  || { cat "$WORK/q.notify"; fail "quorum: STATUS= does not say why"; }
# What the mount itself does meanwhile, reported (GlusterFS 10.3 here answers ENOTCONN to everything).
if echo x >"$GL/q/$GL_ROOT_REL/.quorum-probe" 2>/dev/null; then qwrite="still writes"; else qwrite="refuses writes"; fi
rm -f "$GL/q/$GL_ROOT_REL/.quorum-probe" 2>/dev/null || true
qforward 1
qforward 2
t=$(date +%s%N)
qwait 200 || fail "quorum: not ready again after the client could reconnect"
back_ms=$(( ($(date +%s%N) - t) / 1000000 ))
grep -q "STATUS=.*storage ok" <(tail -3 "$WORK/q.notify") || { tail -3 "$WORK/q.notify"; fail "quorum: STATUS= not back to ok"; }
stop_pid "$Q_PID"
kill "${QFWD[1]}" "${QFWD[2]}"
umount "$GL/q"
pass "quorum: a client left with 1 of 3 bricks (links $qlinks; its mount $qwrite) turned the node unready in ${lost_ms} ms with the reason in STATUS=; ready again ${back_ms} ms after the bricks were reachable"

# 3. kill -9 of node 1 during pushes; nodes 2 and 3 serve every acknowledged push.
gl_in 1 python3 "$SYS_DIR/lib/pushers.py" push "169.254.254.254:8443" "$WORK/acked" 30 &
CLIENT=$!
PIDS+=("$CLIENT")
# Kill once some pushes are acknowledged and others are surely in flight (20 pushers).
# A loaded machine makes GlusterFS slow: wait for the acknowledgements, however long they take.
for _ in $(seq 1 1200); do [ "$(wc -l 2>/dev/null <"$WORK/acked" || echo 0)" -ge 10 ] && break; sleep 0.1; done
[ "$(wc -l 2>/dev/null <"$WORK/acked" || echo 0)" -ge 10 ] || fail "fewer than 10 pushes acknowledged in 120 s before the kill"
kill -9 "${NODE_PID[1]}"
wait "$CLIENT" || true
n=$(wc -l <"$WORK/acked")
[ "$n" -gt 0 ] || fail "no push acknowledged before the kill"
for i in 2 3; do
  gl_in "$i" python3 "$SYS_DIR/lib/pushers.py" verify "169.254.254.254:8443" "$WORK/acked" "$GL/mnt/n$i/$GL_ROOT_REL" \
    || fail "node $i after node 1 was killed"
done
gl_start 1
gl_wait_ready 1 || fail "node 1 did not come back"
gl_in 1 python3 "$SYS_DIR/lib/pushers.py" resume "169.254.254.254:8443" "$WORK/marker" &
CLIENT=$!
PIDS+=("$CLIENT")
wait_file "$WORK/marker.half-sent" || fail "resume client never sent its half chunk"
kill -9 "${NODE_PID[1]}"
waitgone "${NODE_PID[1]}"
gl_start 1
gl_wait_ready 1 || fail "node 1 did not come back after the second kill"
touch "$WORK/marker.restarted"
wait "$CLIENT" || fail "chunked upload did not resume on the restarted node"
pass "kill -9 of node 1: $n acknowledged pushes intact on nodes 2 and 3; node 1 restarted and resumed an upload"

# 4. Node 2 loses its mount (its FUSE client dies): 503 and unready, no local writes, recovery in
#    place when the volume is mounted again inside node 2's mount namespace.
kill -9 "$(cat "$GL/run/fuse2.pid")"
for _ in $(seq 1 50); do
  [ "$(gl_curl 2 -o /dev/null -w '%{http_code}' https://registry.home:8443/readyz)" = 503 ] && break
  sleep 0.1
done
[ "$(gl_curl 2 -o /dev/null -w '%{http_code}' https://registry.home:8443/readyz)" = 503 ] || fail "node 2 still ready without its mount"
body=$(gl_curl 2 https://registry.home:8443/v2/cluster/skopeo/tags/list -w ' %{http_code}')
[ "${body##* }" = 503 ] || fail "node 2 without its mount answered ${body##* }"
grep -q '"UNAVAILABLE"' <<<"$body" || fail "503 without the OCI error: $body"
kill -0 "${NODE_PID[2]}" || fail "node 2 exited when it lost its mount"
# With the dead mount lazily detached, the path is a plain local directory: nothing may land there.
nsenter -m -t "${NODE_PID[2]}" umount -l "$GL/vagabond"
push=$(gl_in 2 env PUSHERS_CA="$PUSHERS_CA" python3 -c '
import sys; sys.path.insert(0, sys.argv[1]); from pushers import req
print(req("169.254.254.254:8443", "POST", "/v2/lost/blobs/uploads/")[0])' "$SYS_DIR/lib")
[ "$push" = 503 ] || fail "push to node 2 with no mount answered $push"
[ -z "$(ls -A "$GL/vagabond")" ] || fail "node 2 wrote to the local disk: $(ls -A "$GL/vagabond")"
nsenter -m -t "${NODE_PID[2]}" glusterfs --process-name fuse --volfile-server="$GL_HOST" --volfile-id="/$GL_VOL" \
  --pid-file="$GL/run/fuse2b.pid" --log-file="$GL/log/fuse2b.log" "${ZERO_TIMEOUTS[@]}" "$GL/vagabond"
GL_FUSE_PIDS+=("$GL/run/fuse2b.pid")
gl_wait_ready 2 || fail "node 2 did not recover after the remount"
gl_in 2 python3 "$SYS_DIR/lib/pushers.py" verify "169.254.254.254:8443" "$WORK/acked" "$ROOT" || fail "node 2 after recovery"
kill -0 "${NODE_PID[2]}" || fail "node 2 restarted"
pass "node 2 lost its mount: 503 + unready, process up, no local writes; recovered in place after the remount"

# 6. Pull-through cache across nodes: an upstream (Distribution, in node 3's network namespace),
# nodes 1 and 3 asked at once for the same uncached 40 MiB blob: one upstream GET between them, and
# every client gets the right bytes. (Not node 2: its volume was remounted inside its old mount
# namespace in item 4, and a restarted node 2 would see the root namespace's dead mount.)
UP=$(gl_addr 3):5000
cat >"$WORK/up.yml" <<YML
version: 0.1
log: {level: info, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: $WORK/up-data}}
http: {addr: $UP}
YML
ip netns exec "$(gl_ns 3)" docker-registry serve "$WORK/up.yml" >"$WORK/up.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 100); do gl_in 3 curl -fs -o /dev/null "http://$UP/v2/" && break; sleep 0.1; done
head -c $((40 * 1024 * 1024)) /dev/urandom >"$WORK/up.blob"
UPD=sha256:$(sha256sum <"$WORK/up.blob" | cut -d' ' -f1)
gl_in 3 python3 - "$UP" "$UPD" "$WORK/up.blob" <<'PY' || fail "push to the upstream"
import sys, urllib.request
up, d, f = sys.argv[1:4]
r = urllib.request.urlopen(urllib.request.Request(f"http://{up}/v2/team/big/blobs/uploads/", method="POST"))
loc = r.headers["Location"]
loc = loc if loc.startswith("http") else f"http://{up}{loc}"
sep = "&" if "?" in loc else "?"
urllib.request.urlopen(urllib.request.Request(f"{loc}{sep}digest={d}", data=open(f, "rb").read(), method="PUT",
    headers={"Content-Type": "application/octet-stream"}))
PY
# For the cluster nodes (gl_start, not start_registryd: see lib/gluster.sh), restarted with it.
cat >"$WORK/proxy.toml" <<TOML
[[upstream]]
name = "up.test"
url = "http://$UP"
TOML
GL_SERVE_ARGS=(--config "$WORK/proxy.toml")
for i in 1 3; do
  kill "${NODE_PID[$i]}"; wait "${NODE_PID[$i]}" 2>/dev/null || true
  gl_start "$i"
done
for i in 1 3; do gl_wait_ready "$i" || fail "node $i not ready with the upstream configured"; done
CURLS=()
for i in 1 3; do
  for k in 1 2 3 4 5; do
    gl_curl "$i" -f "https://registry.home:8443/v2/up.test/team/big/blobs/$UPD" -o "$WORK/fetched.$i.$k" &
    CURLS+=("$!")
  done
done
for p in "${CURLS[@]}"; do wait "$p" || fail "a pull of the uncached blob failed"; done
for f in "$WORK"/fetched.*; do
  [ "sha256:$(sha256sum <"$f" | cut -d' ' -f1)" = "$UPD" ] || fail "$(basename "$f") holds other bytes"
done
gets=$(grep -cE "\"GET /v2/team/big/blobs/$UPD HTTP/[0-9.]+\" 200 " "$WORK/up.log" || true)
[ "$gets" = 1 ] || fail "two nodes made $gets upstream GETs for one blob, not 1"
gl_curl 3 -fs -o /dev/null "https://registry.home:8443/v2/up.test/team/big/blobs/$UPD" || fail "node 3 serving the cached blob"
pass "pull-through across nodes: 10 clients on nodes 1 and 3, one uncached 40 MiB blob, 1 upstream GET, all bytes verified"

# 7. Coherence warnings: a mount without the zero timeouts, then a volume with quick-read on.
mkdir -p "$GL/plain"
gl_fuse "$GL/plain" "$GL/run/fuse-plain.pid" "$GL/log/fuse-plain.log"
PORT=$(free_port)
start_registryd coherence "$PORT" "$GL/plain/elsewhere"
for opt in entry-timeout attribute-timeout; do
  grep -q "mount with -o $opt=0" "$WORK/coherence.log" || { cat "$WORK/coherence.log"; fail "no warning for $opt"; }
done
stop_pid "$REG_PID"
gl_cli volume set "$GL_VOL" performance.quick-read on >/dev/null
for _ in $(seq 1 50); do grep -q "quick-read" "$GL/plain/.meta/graphs/active/volfile" && break; sleep 0.2; done
start_registryd coherence2 "$PORT" "$GL/plain/elsewhere"
grep -q "gluster volume set $GL_VOL performance.quick-read off" "$WORK/coherence2.log" \
  || { cat "$WORK/coherence2.log"; fail "no warning for quick-read"; }
stop_pid "$REG_PID"
# registryd doctor names the same problems (its other checks fail here: no link, no certificate).
"$TEST_REGISTRYD_BIN" doctor --storage "$GL/plain/elsewhere" >"$WORK/doctor.out" 2>&1 || true
grep -qE "^ok +storage .*\(fuse.glusterfs\): writable" "$WORK/doctor.out" \
  && grep -qE "^WARN +glusterfs .*quick-read" "$WORK/doctor.out" \
  && grep -q "fix: .*gluster volume set $GL_VOL performance.quick-read off" "$WORK/doctor.out" \
  || { cat "$WORK/doctor.out"; fail "doctor did not report the GlusterFS mount and its quick-read"; }
gl_cli volume set "$GL_VOL" performance.quick-read off >/dev/null
pass "coherence: warnings (daemon and doctor) name the mount options and volume options that are off, with the fix"

# 8. Garbage collection across nodes: `registryd gc` runs again and again on the shared volume while
# skopeo pushes through nodes 1 and 3 and pulls through node 3. Every push and pull succeeds, every
# tagged image pulls byte-identical, and the deleted image's blobs are collected.
SKN="skopeo --insecure-policy"
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/gckeep" v1 --seed gckeep --layer-bytes 200000 >/dev/null
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/gcgone" v1 --seed gcgone --layer-bytes 200000 >/dev/null
gl_in 1 $SKN copy -q --dest-cert-dir "$GL/certs.d" "oci:$WORK/gckeep:v1" docker://registry.home:8443/gc/keep:v1 || fail "gc: push keep"
gl_in 3 $SKN copy -q --dest-cert-dir "$GL/certs.d" "oci:$WORK/gcgone:v1" docker://registry.home:8443/gc/gone:v1 || fail "gc: push gone"
gone_m=$(jq -r '.manifests[0].digest' "$WORK/gcgone/index.json")
code=$(gl_curl 3 -o "$WORK/gc-del.json" -w '%{http_code}' -X DELETE "https://registry.home:8443/v2/gc/gone/manifests/$gone_m")
[ "$code" = 202 ] || fail "gc: delete gone: $code $(cat "$WORK/gc-del.json")"
sleep 3
gcrun() { REGISTRYD_STORAGE_ROOT=$(gl_root) REGISTRYD_GC_GRACE_SECS=2 "$TEST_REGISTRYD_BIN" gc "$@"; }
# The volume also holds what earlier items left unreferenced (interrupted pushes, blobs the cache
# fetched without a manifest): gone's three blobs are among what goes, not all of it.
gone_blobs=$(jq -r '.manifests[0].digest' "$WORK/gcgone/index.json"; jq -r '.config.digest, .layers[].digest' \
  "$WORK/gcgone/blobs/sha256/$(jq -r '.manifests[0].digest' "$WORK/gcgone/index.json" | cut -d: -f2)")
stored() { [ -f "$(gl_root)/docker/registry/v2/blobs/sha256/${1:7:2}/${1#sha256:}/data" ]; }
for b in $gone_blobs; do stored "$b" || fail "gc: $b missing before gc"; done
gcrun --dry-run >"$WORK/gc-dry" || { cat "$WORK/gc-dry"; fail "gc --dry-run on GlusterFS"; }
would=$(sed -n 's/^would remove: \([0-9]*\) blobs.*/\1/p' "$WORK/gc-dry")
[ "${would:-0}" -ge 3 ] || { cat "$WORK/gc-dry"; fail "gc --dry-run: expected at least gone's 3 blobs"; }
for b in $gone_blobs; do stored "$b" || fail "gc --dry-run removed $b"; done
(
  set -e
  for i in $(seq 1 6); do
    python3 "$SYS_DIR/lib/mkimage.py" "$WORK/gcl$i" v1 --seed "gcload$i" --layer-bytes 100000 >/dev/null
    gl_in 1 $SKN copy -q --dest-cert-dir "$GL/certs.d" "oci:$WORK/gcl$i:v1" "docker://registry.home:8443/gc/load1:$i"
    gl_in 3 $SKN copy -q --dest-cert-dir "$GL/certs.d" "oci:$WORK/gcl$i:v1" "docker://registry.home:8443/gc/load3:$i"
    gl_in 3 $SKN copy -q --src-cert-dir "$GL/certs.d" docker://registry.home:8443/gc/keep:v1 "oci:$WORK/gcpull:$i"
  done
) >"$WORK/gc-load.log" 2>&1 &
GCLOAD=$!
gcruns=0
while kill -0 $GCLOAD 2>/dev/null; do
  gcrun >>"$WORK/gc.out" 2>&1 || { cat "$WORK/gc.out"; fail "gc failed on GlusterFS while pushes ran"; }
  gcruns=$((gcruns + 1))
done
wait $GCLOAD || { cat "$WORK/gc-load.log"; fail "a push or pull failed while gc ran on the cluster"; }
for b in $gone_blobs; do stored "$b" && { cat "$WORK/gc.out"; fail "gc: gone's $b not collected"; }; done
for ref in gc/keep:v1 $(for i in $(seq 1 6); do echo "gc/load1:$i gc/load3:$i"; done); do
  for n in 1 3; do
    gl_in "$n" $SKN copy -q --src-cert-dir "$GL/certs.d" "docker://registry.home:8443/$ref" "dir:$WORK/gccheck" \
      || fail "gc: $ref does not pull through node $n after gc"
    rm -rf "$WORK/gccheck"
  done
done
[ "$(gl_curl 1 -o /dev/null -w '%{http_code}' "https://registry.home:8443/v2/gc/gone/blobs/$gone_m")" = 404 ] || fail "gc: gone's manifest blob still served"
pass "gc on the shared volume: dry run would free $would blobs and freed none; $gcruns passes during 12 pushes (nodes 1, 3) and 6 pulls; all succeeded, 13 images pull through nodes 1 and 3, the deleted image's 3 blobs collected"

# 8b. Retention across nodes: retention passes (`registryd gc` with a [[retention]] rule) run again
# and again on the shared volume while nodes 2 and 3 push new CI tags and pull the kept one. Every
# push and pull succeeds, the old tags go, and every tag pushed while the passes ran is kept.
cat >"$WORK/retention.toml" <<'EOF2'
[[retention]]
repositories = "ret/**"
keep_tags = ["keep"]
keep_pushed_within_days = 7
EOF2
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/retkeep" keep --seed retkeep --layer-bytes 50000 >/dev/null
gl_in 1 $SKN copy -q --dest-cert-dir "$GL/certs.d" "oci:$WORK/retkeep:keep" docker://registry.home:8443/ret/app:keep || fail "retention: push keep"
for i in 1 2 3 4; do
  python3 "$SYS_DIR/lib/mkimage.py" "$WORK/retold$i" v1 --seed "retold$i" --layer-bytes 50000 >/dev/null
  gl_in 1 $SKN copy -q --dest-cert-dir "$GL/certs.d" "oci:$WORK/retold$i:v1" "docker://registry.home:8443/ret/app:old$i" \
    || fail "retention: push old$i"
done
# The old tags were pushed ten days ago, as far as storage can tell (their links' times).
find "$ROOT/docker/registry/v2/repositories/ret/app/_manifests/tags" -path '*/old*/current/link' -exec touch -d '-10 days' {} +
(
  set -e
  for i in $(seq 1 5); do
    python3 "$SYS_DIR/lib/mkimage.py" "$WORK/retnew$i" v1 --seed "retnew$i" --layer-bytes 50000 >/dev/null
    gl_in 2 $SKN copy -q --dest-cert-dir "$GL/certs.d" "oci:$WORK/retnew$i:v1" "docker://registry.home:8443/ret/app:n2-$i"
    gl_in 3 $SKN copy -q --dest-cert-dir "$GL/certs.d" "oci:$WORK/retnew$i:v1" "docker://registry.home:8443/ret/app:n3-$i"
    gl_in 3 $SKN copy -q --src-cert-dir "$GL/certs.d" docker://registry.home:8443/ret/app:keep "oci:$WORK/retpull:$i"
  done
) >"$WORK/ret-load.log" 2>&1 &
RETLOAD=$!
retruns=0
while kill -0 $RETLOAD 2>/dev/null; do
  gcrun --config "$WORK/retention.toml" --json >>"$WORK/ret.out" 2>>"$WORK/ret.err" || { cat "$WORK/ret.out" "$WORK/ret.err"; fail "retention pass failed on GlusterFS while pushes ran"; }
  retruns=$((retruns + 1))
done
wait $RETLOAD || { cat "$WORK/ret-load.log"; fail "a push or pull failed while retention ran on the cluster"; }
gcrun --config "$WORK/retention.toml" --json >>"$WORK/ret.out" 2>>"$WORK/ret.err" || fail "last retention pass"
tags=$(gl_curl 1 -fs "https://registry.home:8443/v2/ret/app/tags/list" | jq -r '.tags | sort | join(" ")')
want="keep $(for i in $(seq 1 5); do echo "n2-$i n3-$i"; done | tr '\n' ' ' | xargs -n1 | sort | xargs)"
[ "$tags" = "$(echo "$want" | xargs -n1 | sort | xargs)" ] || { cat "$WORK/ret.out"; fail "retention: tags left: $tags (want $want)"; }
untagged=$(jq -s '[.[] | .tags_removed] | add' "$WORK/ret.out")
[ "$untagged" = 4 ] || fail "retention untagged $untagged tags in all, not the 4 old ones"
pass "retention on the shared volume: $retruns passes while nodes 2 and 3 pushed 10 tags and pulled 5 times; all succeeded, the 4 old tags went, every tag pushed during the passes kept"

# 2b, settled: the heal of what the partition left (it ran in the background meanwhile) ends, and no
# path is in GFID split-brain on the bricks. The brick failures below need all three bricks healed.
gl_cli volume heal "$GL_VOL" >/dev/null 2>&1 || true
gl_wait_healed 120 || fail "partition: the heal did not end"
left=$(python3 "$SYS_DIR/lib/cluster.py" gfid-mismatches "$GL_ROOT_REL/docker/registry/v2" "$GL"/bricks/b{1,2,3})
[ "${left%% *}" = 0 ] || fail "partition: still in GFID split-brain after the heal: $left"
gl_in 1 python3 "$SYS_DIR/lib/cluster.py" partition-verify "$WORK/acked-part" "$N1" "$N2" "$N3" >/dev/null \
  || fail "partition: after the heal"
pass "network partition, after the heal: no path in GFID split-brain, every acknowledged push still served"

# 5. Brick failures, last: a two-brick outage can leave the volume unusable for a while (see below).
gl_in 1 python3 "$SYS_DIR/lib/pushers.py" push "169.254.254.254:8443" "$WORK/acked0" 5 || true
[ -s "$WORK/acked0" ] || fail "no push before the brick failures"
# Brick 1 hangs first and is then the one killed, so bricks 2 and 3 (the quorum for the one-brick-down
# pushes) are never disturbed before that step.
# A brick that hangs (SIGSTOP) blocks I/O until network.ping-timeout (5 s here): requests must end
# (served after the failover, or 503 at the 15 s operation timeout) and threads must stay bounded.
HB=$(gl_brick_pid 1)
kill -STOP "$HB"
CLEANUPS+=("kill -CONT $HB 2>/dev/null")
threads_max=0
CURLS=()
for j in $(seq 1 60); do
  gl_curl 1 -o /dev/null -w '%{http_code} %{time_total}\n' -m 60 https://registry.home:8443/v2/cluster/skopeo/manifests/v1 \
    >>"$WORK/hung" 2>/dev/null &
  CURLS+=("$!")
done
for _ in $(seq 1 30); do
  t=$(awk '/^Threads:/{print $2}' "/proc/${NODE_PID[1]}/status")
  [ "$t" -gt "$threads_max" ] && threads_max=$t
  sleep 0.2
done
for p in "${CURLS[@]}"; do wait "$p" 2>/dev/null || true; done
kill -CONT "$HB"
total=$(wc -l <"$WORK/hung")
slowest=$(awk '{print $2}' "$WORK/hung" | sort -n | tail -1)
[ "$total" = 60 ] || fail "only $total of 60 requests ended while a brick hung"
awk '{ if ($1 != 200 && $1 != 503) bad=1 } END { exit bad }' "$WORK/hung" || fail "unexpected statuses: $(sort "$WORK/hung" | uniq -c)"
awk -v s="$slowest" 'BEGIN { exit !(s < 20) }' || fail "a request took ${slowest}s while a brick hung"
[ "$threads_max" -lt 300 ] || fail "threads piled up to $threads_max while a brick hung"
gl_wait_ready 1 || fail "node 1 not ready after the brick resumed"
out=$(gl_in 3 python3 "$SYS_DIR/lib/cluster.py" served-or-503 "169.254.254.254:8443" "$WORK/acked0") || fail "after the hung brick"
grep -q ", 0 answered 503" <<<"$out" || fail "after the hung brick: $out"
pass "hung brick: 60 requests ended ($(awk '{print $1}' "$WORK/hung" | sort | uniq -c | xargs)), slowest ${slowest}s, at most $threads_max threads"


B1=$(gl_brick_pid 1) B2=$(gl_brick_pid 2) B3=$(gl_brick_pid 3)
[ -n "$B1" ] && [ -n "$B2" ] && [ -n "$B3" ] || fail "brick PIDs not found"
kill -9 "$B1"
gl_in 3 python3 "$SYS_DIR/lib/pushers.py" push "169.254.254.254:8443" "$WORK/acked-1down" 10 || true
[ -s "$WORK/acked-1down" ] || fail "no push succeeded with one brick down"
gl_in 1 python3 "$SYS_DIR/lib/pushers.py" verify "169.254.254.254:8443" "$WORK/acked-1down" "$ROOT" || fail "pull with one brick down"
pass "one brick of three killed: pushes and pulls go on ($(wc -l <"$WORK/acked-1down") pushes)"
kill -9 "$B2"
sleep 1
start=$(date +%s%N)
code=$(gl_curl 1 -o "$WORK/two-down" -w '%{http_code}' -m 20 https://registry.home:8443/v2/cluster/skopeo/manifests/v1)
ms=$(( ($(date +%s%N) - start) / 1000000 ))
[ "$code" = 503 ] || fail "two bricks down: node 1 answered $code ($(cat "$WORK/two-down"))"
[ "$ms" -lt 8000 ] || fail "two bricks down: the 503 took ${ms} ms"
kill -0 "${NODE_PID[1]}" || fail "node 1 exited with two bricks down"
# As the README says: `start force` until every brick runs (gl_start_force). Before, the test took a
# brick left down for clients that do not reconnect.
starts=$(gl_start_force 1 2) || fail "bricks 1 and 2 not running after $starts start force"
# The self-heal daemon needs a moment to find the restarted bricks; until then `heal` is refused.
for _ in $(seq 1 30); do gl_cli volume heal "$GL_VOL" >/dev/null 2>&1 && break; sleep 1; done
for i in 1 2 3; do gl_wait_ready "$i" || fail "node $i not ready after the bricks came back"; done
gl_wait_healed 50 || true # what is served is checked either way, below
# Recovery needs the nodes' GlusterFS clients to reconnect to the restarted bricks (3 to 4 s in a
# bare experiment); if they do not, that is reported, not failed.
# What must hold either way: nothing served is wrong (200 with the right digest, or 503).
for i in 1 2 3; do
  for f in acked0 acked-1down; do
    out=$(gl_in "$i" python3 "$SYS_DIR/lib/cluster.py" served-or-503 "169.254.254.254:8443" "$WORK/$f") \
      || fail "node $i served something wrong after the heal ($f)"
  done
done
if gl_wait_connected 1 3; then
  for i in 1 3; do
    for _ in $(seq 1 120); do
      [ "$(gl_curl "$i" -o /dev/null -w '%{http_code}' -m 10 https://registry.home:8443/v2/cluster/skopeo/manifests/v1)" = 200 ] && break
      sleep 0.5
    done
    out=$(gl_in "$i" python3 "$SYS_DIR/lib/cluster.py" served-or-503 "169.254.254.254:8443" "$WORK/acked-1down") \
      || fail "node $i served something wrong after the heal"
    echo "   node $i after reconnecting: $out"
  done
  gl_in 3 python3 "$SYS_DIR/lib/pushers.py" push "169.254.254.254:8443" "$WORK/acked-healed" 15 || true
  [ -s "$WORK/acked-healed" ] || fail "no push succeeded after the bricks came back and the clients reconnected"
  pass "two bricks killed: 503 in ${ms} ms, process up; after $starts start force + heal: served, pushes go on, nothing served wrong"
else
  echo "note: GlusterFS clients did not reconnect to the restarted bricks within 60 s; recovery not checked"
  # What each client says of its links (client-N: brick N+1), and its last words on them: a bare
  # client of a fresh volume reconnects within 3 to 4 s of `start force` here.
  for i in 1 3; do
    echo "   node $i links: $(for n in 0 1 2; do gl_link_is "$GL/mnt/n$i" "$n" 1 && printf 1 || printf 0; done)"
  done
  echo "   bricks running: $(for b in 1 2 3; do gl_brick_online "$b" && printf 1 || printf 0; done)"
  grep -h "client_query_portmap\|Connected to\|client_rpc_notify\|graph" "$GL/log/fuse1.log" 2>/dev/null | tail -6 | cut -c1-200
  pass "two bricks killed: 503 in ${ms} ms, process up; after start force + heal nothing served wrong"
fi
