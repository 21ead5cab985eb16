#!/usr/bin/env bash
# registryd vs Distribution 2.8.2 on three nodes sharing one GlusterFS replica-3 volume (the test
# harness, tests/system/lib/gluster.sh): a realistic image (one 50 MiB and ten 1 MiB layers) pushed
# with skopeo through node 1, then pulled through nodes 2 and 3; wall times, median of ROUNDS rounds
# in alternation, and the ratio. Both registries run in every node's namespaces on the same volume
# (separate roots), with the same certificate. Usage: bench/cluster.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-3}
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends glusterfs-server glusterfs-client skopeo docker-registry \
  python3 >/dev/null
cargo build --release -q
export TEST_REGISTRYD_BIN=$PWD/target/release/registryd
source tests/system/lib/common.sh
source tests/system/lib/gluster.sh

gl_up
for i in 1 2 3; do gl_start "$i"; done
for i in 1 2 3; do gl_wait_ready "$i"; done
for i in 1 2 3; do
  cat >"$WORK/dist$i.yml" <<EOF
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage:
  filesystem: {rootdirectory: $GL/vagabond/distribution}
  delete: {enabled: true}
http:
  addr: 169.254.254.254:5443
  tls: {certificate: $GL/tls/tls.crt, key: $GL/tls/tls.key}
EOF
  ip netns exec "$(gl_ns "$i")" unshare -m --propagation slave sh -c \
    'mount --bind "$1" "$2" && shift 2 && exec "$@"' sh "$GL/mnt/n$i" "$GL/vagabond" \
    docker-registry serve "$WORK/dist$i.yml" >"$WORK/dist$i.log" 2>&1 &
  NODE_PID+=("$!")
  PIDS+=("$!")
done
for i in 1 2 3; do
  for _ in $(seq 1 100); do gl_curl "$i" -fs -o /dev/null https://registry.home:5443/v2/ && break; sleep 0.1; done
done
python3 -c "import sys; sys.path.insert(0, 'bench'); import bench; bench.make_image(sys.argv[1])" "$WORK/image"

declare -A T
now() { date +%s.%N; }
for r in $(seq 1 "$ROUNDS"); do
  for reg in registryd:8443 distribution:5443; do
    name=${reg%%:*} port=${reg##*:}
    ref=docker://registry.home:$port/bench/app:r$r
    a=$(now)
    gl_in 1 skopeo --insecure-policy copy -q --dest-cert-dir "$GL/certs.d" "oci:$WORK/image:v1" "$ref"
    b=$(now)
    gl_in 2 skopeo --insecure-policy copy -q --src-cert-dir "$GL/certs.d" "$ref" "dir:$WORK/p2-$name-$r"
    c=$(now)
    gl_in 3 skopeo --insecure-policy copy -q --src-cert-dir "$GL/certs.d" "$ref" "dir:$WORK/p3-$name-$r"
    d=$(now)
    T[$name,push]+="$(awk "BEGIN{print $b - $a}") "
    T[$name,pull2]+="$(awk "BEGIN{print $c - $b}") "
    T[$name,pull3]+="$(awk "BEGIN{print $d - $c}") "
    rm -rf "$WORK/p2-$name-$r" "$WORK/p3-$name-$r"
  done
  echo "round $r done" >&2
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf '%-38s %12s %14s %10s\n' "GlusterFS replica 3, 3 nodes (s)" registryd Distribution advantage
for k in push pull2 pull3; do
  a=$(median <<<"${T[registryd,$k]}") b=$(median <<<"${T[distribution,$k]}")
  label=$(case $k in push) echo "skopeo push via node 1";; pull2) echo "skopeo pull via node 2";; pull3) echo "skopeo pull via node 3";; esac)
  printf '%-38s %12.2f %14.2f %9.2fx\n' "$label" "$a" "$b" "$(awk "BEGIN{print $b / $a}")"
done
