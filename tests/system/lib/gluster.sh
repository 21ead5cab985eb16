# Three nodes on one GlusterFS replica-3 volume, on one machine. Source after common.sh.
#
# Each node is a network namespace with 169.254.254.254/32 on its lo and 10.213.0.1N on a veth to a
# bridge, and its own mount namespace where $GL/vagabond is that node's own FUSE mount of the volume
# (as /mnt/vagabond is on the users' nodes). registryd runs on each with TLS on
# 169.254.254.254:8443 and 10.213.0.1N:8443, storage on the volume, and the mount guard on.
# Everything is torn down at exit (cleanup trap of common.sh), even when a test fails.
#
#   gl_up                 volume, mounts, namespaces (about 5 s)
#   gl_start N            registryd on node N (sets NODE_PID[N]); gl_wait_ready N
#   gl_in N CMD...        run CMD in node N's network namespace (clients)
#   gl_addr N             10.213.0.1N
#   gl_brick_pid B        PID of brick B (1..3), from `gluster volume status`

GL=$WORK/gl
GL_VOL=rdv$$
GL_HOST=$(hostname) # the CLI refuses localhost/127.x as a brick host
GL_TAG=g$$
GL_ROOT_REL=registry # storage root inside the volume
declare -a NODE_PID=()
GL_FUSE_PIDS=()

gl_ns() { echo "${GL_TAG}n$1"; }
gl_addr() { echo "10.213.0.1$1"; }
gl_in() { local i=$1; shift; ip netns exec "$(gl_ns "$i")" "$@"; }
gl_cli() { gluster --mode=script "$@"; }

# A FUSE client of the volume at MOUNTPOINT with the zero cache timeouts; its PID file is PIDFILE.
gl_fuse() { # MOUNTPOINT PIDFILE LOG [extra glusterfs options]
  local mp=$1 pidfile=$2 log=$3; shift 3
  glusterfs --process-name fuse --volfile-server="$GL_HOST" --volfile-id="/$GL_VOL" \
    --pid-file="$pidfile" --log-file="$log" "$@" "$mp"
  for _ in $(seq 1 100); do
    [ -s "$pidfile" ] && stat -f -c %T "$mp" 2>/dev/null | has fuse && break
    sleep 0.1
  done
  GL_FUSE_PIDS+=("$pidfile")
}
ZERO_TIMEOUTS=(--attribute-timeout=0 --entry-timeout=0 --negative-timeout=0)

gl_up() {
  local i
  if ss -ltn 'sport = :24007' | has LISTEN; then
    fail "port 24007 is taken (a glusterd is already running here); the cluster test runs its own: stop the other one first"
  fi
  mkdir -p "$GL"/{wd,log,run,bricks/b1,bricks/b2,bricks/b3,mnt,vagabond}
  CLEANUPS+=("gl_down")
  sed "s#/var/lib/glusterd#$GL/wd#" /etc/glusterfs/glusterd.vol >"$GL/glusterd.vol"
  cp -r /var/lib/glusterd/groups /var/lib/glusterd/hooks "$GL/wd/" 2>/dev/null || true
  glusterd -f "$GL/glusterd.vol" -p "$GL/run/glusterd.pid" -l "$GL/log/glusterd.log"
  for _ in $(seq 1 100); do gl_cli pool list >/dev/null 2>&1 && break; sleep 0.2; done
  gl_cli volume create "$GL_VOL" replica 3 "$GL_HOST:$GL/bricks/b1" "$GL_HOST:$GL/bricks/b2" \
    "$GL_HOST:$GL/bricks/b3" force >/dev/null
  # The four coherence options (ARCHITECTURE.md), the split-brain policy (README), and a short
  # ping-timeout for the hung-brick test.
  gl_cli volume set "$GL_VOL" performance.quick-read off performance.stat-prefetch off \
    performance.open-behind off performance.flush-behind off cluster.favorite-child-policy majority \
    network.ping-timeout 5 >/dev/null
  gl_cli volume start "$GL_VOL" >/dev/null
  # A shared parent, so the FUSE mounts propagate into the nodes' mount namespaces.
  mount --bind "$GL/mnt" "$GL/mnt" && mount --make-shared "$GL/mnt"
  for i in 1 2 3; do
    mkdir -p "$GL/mnt/n$i"
    gl_fuse "$GL/mnt/n$i" "$GL/run/fuse$i.pid" "$GL/log/fuse$i.log" "${ZERO_TIMEOUTS[@]}"
  done
  # The operator creates the storage root once, as in the README. Three nodes creating it at the same
  # instant can leave GlusterFS with a GFID mismatch on it (EIO for good: a node never ready).
  mkdir -p "$GL/mnt/n1/$GL_ROOT_REL"
  ip link add "${GL_TAG}br" type bridge && ip link set "${GL_TAG}br" up
  for i in 1 2 3; do
    local ns
    ns=$(gl_ns "$i")
    ip netns add "$ns"
    ip link add "${GL_TAG}v$i" type veth peer name eth1 netns "$ns"
    ip link set "${GL_TAG}v$i" master "${GL_TAG}br" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add 169.254.254.254/32 dev lo
    ip -n "$ns" addr add "$(gl_addr "$i")/24" dev eth1
    ip -n "$ns" link set eth1 up
    mkdir -p "/etc/netns/$ns"
    # `ip netns exec` binds this over /etc/hosts: start from the machine's (read, never written), so
    # the brick host name still resolves for a FUSE client started in the node's mount namespace.
    cp /etc/hosts "/etc/netns/$ns/hosts"
  done
  REGISTRYD_TLS_CERTIFICATE=$GL/tls/tls.crt REGISTRYD_TLS_KEY=$GL/tls/tls.key \
    "$TEST_REGISTRYD_BIN" cert init --ca-dir "$GL/ca" --hosts registry.home >/dev/null
  mkdir -p "$GL/certs.d" && cp "$GL/ca/ca.crt" "$GL/certs.d/ca.crt"
}

waitgone() { for p in "$@"; do for _ in $(seq 1 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; done; }

gl_down() {
  set +e
  local p f i
  if [ "${rc:-0}" != 0 ]; then # rc: the exit status, from common.sh's cleanup
    for i in 1 2 3; do
      echo "== node $i: warnings and errors" >&2
      grep -v " INFO " "$WORK/node$i.log" 2>/dev/null | tail -15 >&2
    done
    echo "== volume status and heal info" >&2
    gl_cli volume status "$GL_VOL" 2>&1 | head -12 >&2
    gl_cli volume heal "$GL_VOL" info summary 2>&1 | head -24 >&2
    echo "== FUSE client errors" >&2
    grep -h " E " "$GL"/log/fuse*.log 2>/dev/null | tail -8 >&2
  fi
  for p in "${NODE_PID[@]}"; do kill -9 "$p" 2>/dev/null; done
  waitgone "${NODE_PID[@]}"
  # Every mount under $GL (the nodes', and the extra clients some tests make), deepest first.
  for f in $(awk -v gl="$GL" 'index($2, gl "/") == 1 { print $2 }' /proc/mounts | sort -r); do
    umount -l "$f" 2>/dev/null
  done
  for f in "${GL_FUSE_PIDS[@]}"; do
    [ -s "$f" ] && { p=$(cat "$f"); kill "$p" 2>/dev/null; waitgone "$p"; kill -9 "$p" 2>/dev/null; }
  done
  for i in 1 2 3; do
    ip link del "${GL_TAG}v$i" 2>/dev/null
    ip netns del "$(gl_ns "$i")" 2>/dev/null
    rm -rf "/etc/netns/$(gl_ns "$i")"
  done
  ip link del "${GL_TAG}br" 2>/dev/null
  if [ -s "$GL/run/glusterd.pid" ] && kill -0 "$(cat "$GL/run/glusterd.pid")" 2>/dev/null; then
    gl_cli volume stop "$GL_VOL" force >/dev/null 2>&1
    gl_cli volume delete "$GL_VOL" >/dev/null 2>&1
    p=$(cat "$GL/run/glusterd.pid"); kill "$p"; waitgone "$p"
  fi
  rm -rf "/var/run/gluster/vols/$GL_VOL" "/var/run/gluster/shd/$GL_VOL" "/var/log/glusterfs/bricks/"*"$GL_VOL"* 2>/dev/null
  set -e
}

# registryd on node N, in its namespaces; extra VAR=value arguments go to its environment. Not
# start_registryd: a cluster node runs on the defaults (node address, TLS, its own hosts file) in
# its network and mount namespaces, as on a real node.
# Extra arguments after `registryd serve` (e.g. --config FILE) for the nodes started next.
GL_SERVE_ARGS=()

gl_start() {
  local i=$1; shift
  local ns
  ns=$(gl_ns "$i")
  ip netns exec "$ns" unshare -m --propagation slave sh -c \
    'mount --bind "$1" "$2" && shift 2 && exec "$@"' sh "$GL/mnt/n$i" "$GL/vagabond" \
    env REGISTRYD_TLS_CERTIFICATE="$GL/tls/tls.crt" REGISTRYD_TLS_KEY="$GL/tls/tls.key" \
    REGISTRYD_NODE_HOSTS_FILE="/etc/netns/$ns/hosts" \
    REGISTRYD_SERVER_LISTEN="169.254.254.254:8443,$(gl_addr "$i"):8443" \
    REGISTRYD_STORAGE_ROOT="$GL/vagabond/$GL_ROOT_REL" \
    REGISTRYD_STORAGE_REQUIRE_MOUNT="$GL/vagabond" REGISTRYD_STORAGE_REQUIRE_FSTYPE=fuse.glusterfs \
    REGISTRYD_STORAGE_CHECK_INTERVAL_SECS=1 REGISTRYD_STORAGE_CHECK_FAILURES=2 \
    REGISTRYD_STORAGE_OPERATION_TIMEOUT_SECS=15 "$@" \
    "$TEST_REGISTRYD_BIN" serve "${GL_SERVE_ARGS[@]}" >>"$WORK/node$i.log" 2>&1 &
  NODE_PID[$i]=$!
  PIDS+=("$!")
}

# Curl a node from its own namespace, by name, over TLS.
gl_curl() { local i=$1; shift; gl_in "$i" curl -sS --cacert "$GL/ca/ca.crt" "$@"; }

# Whether the FUSE client at MOUNT is connected (1) or not (0) to brick N+1 (client-N), as it says.
gl_link_is() { # MOUNT N 0|1
  grep -qs "^connected = $3" "$1/.meta/graphs/active/$GL_VOL-client-$2/private"
}

# The number of entries the bricks list as still to heal.
gl_pending_heals() {
  gl_cli volume heal "$GL_VOL" info 2>/dev/null | awk '/Number of entries:/{s+=$4} END{print s+0}'
}

# Waits up to SECONDS for the self-heal to leave nothing pending; fails when something is left.
gl_wait_healed() { # SECONDS
  local pending
  for _ in $(seq 1 "$1"); do
    pending=$(gl_pending_heals)
    [ "$pending" = 0 ] && return 0
    sleep 1
  done
  echo "$pending entries still to heal after $1 s" >&2
  return 1
}

# Every node's FUSE client connected to every brick again (after bricks restart or resume). Until
# then clients see different subsets of bricks, and concurrent creates of one directory name from
# several nodes were seen to end in a GFID split-brain (EIO) on GlusterFS 10.3.
gl_wait_connected() { # [NODE...] (default: all three)
  local i n ok nodes=("$@")
  [ ${#nodes[@]} -gt 0 ] || nodes=(1 2 3)
  for _ in $(seq 1 120); do
    ok=1
    for i in "${nodes[@]}"; do
      for n in 0 1 2; do
        gl_link_is "$GL/mnt/n$i" "$n" 1 || ok=0
      done
    done
    [ "$ok" = 1 ] && return 0
    sleep 0.5
  done
  return 1
}

gl_wait_ready() { # N: /readyz answers 200
  for _ in $(seq 1 150); do
    [ "$(gl_curl "$1" -o /dev/null -w '%{http_code}' https://registry.home:8443/readyz 2>/dev/null)" = 200 ] && return 0
    sleep 0.1
  done
  tail -20 "$WORK/node$1.log" >&2
  return 1
}

gl_brick_pid() { # B: the PID of brick B as glusterd reports it
  gl_cli volume status "$GL_VOL" "$GL_HOST:$GL/bricks/b$1" --xml | sed -n 's#.*<pid>\([0-9]*\)</pid>.*#\1#p' | head -1
}

gl_brick_online() { # B: whether glusterd counts brick B as running
  gl_cli volume status "$GL_VOL" "$GL_HOST:$GL/bricks/b$1" --xml 2>/dev/null | has "<status>1</status>"
}

# Restarts the killed bricks B... with `volume start force`, repeated (3 times at most) until glusterd
# counts every one as running: with two bricks dead, GlusterFS 10.3 here restarts only the first on
# each `start force` (every time, in a bare experiment too). Prints how many it took; fails if they
# are still down.
gl_start_force() { # B...
  local b n=0 up
  for _ in $(seq 1 50); do
    up=0
    for b in "$@"; do gl_brick_online "$b" && up=1; done
    [ "$up" = 0 ] && break
    sleep 0.2
  done
  while [ "$n" -lt 3 ]; do
    gl_cli volume start "$GL_VOL" force >/dev/null
    n=$((n + 1))
    for _ in $(seq 1 25); do
      up=1
      for b in "$@"; do gl_brick_online "$b" || up=0; done
      [ "$up" = 1 ] && { echo "$n"; return 0; }
      sleep 0.2
    done
  done
  echo "$n"
  return 1
}

# The storage root as seen from the root namespace (node 1's FUSE mount).
gl_root() { echo "$GL/mnt/n1/$GL_ROOT_REL"; }
