#!/usr/bin/env bash
# The node agent in network namespaces this test creates: registryd validates 169.254.254.254/32 put
# on lo or on a veth beforehand, keeps registry.home in the namespace's hosts file, and clients in the
# namespace reach https://registry.home:8443 by name. Where it must create the address itself it
# either creates a dummy link (kernels with dummy) or exits with one clear line (this kernel), and
# without CAP_NET_ADMIN it says so.
source "$(dirname "$0")/lib/common.sh"

ADDR=169.254.254.254
TAG=rdt$$
NSES=()
mkns() { # NAME: a namespace with lo up and its own hosts file
  ip netns add "$1"
  NSES+=("$1")
  CLEANUPS+=("ip netns del '$1' 2>/dev/null; rm -rf '/etc/netns/$1'")
  ip -n "$1" link set lo up
  mkdir -p "/etc/netns/$1"
  printf '127.0.0.1\tlocalhost\n# kept as is\n' >"/etc/netns/$1/hosts"
}
# Not start_registryd: what is under test is serve on the defaults, node address and link included.
serve_in() { # NS LOG [env...]: registryd on the defaults (TLS on 169.254.254.254:8443) inside NS
  local ns=$1 log=$2; shift 2
  ip netns exec "$ns" env REGISTRYD_TLS_CERTIFICATE="$WORK/tls/tls.crt" REGISTRYD_TLS_KEY="$WORK/tls/tls.key" \
    REGISTRYD_NODE_HOSTS_FILE="/etc/netns/$ns/hosts" REGISTRYD_STORAGE_ROOT="$WORK/data-$ns" "$@" \
    "$TEST_REGISTRYD_BIN" serve >"$log" 2>&1 &
  REG_PID=$!
  PIDS+=("$REG_PID")
}
wait_tls() { # NS
  for _ in $(seq 1 100); do
    ip netns exec "$1" curl -fs --cacert "$WORK/ca/ca.crt" https://registry.home:8443/v2/ >/dev/null && return 0
    sleep 0.1
  done
  return 1
}

REGISTRYD_TLS_CERTIFICATE=$WORK/tls/tls.crt REGISTRYD_TLS_KEY=$WORK/tls/tls.key \
  "$TEST_REGISTRYD_BIN" cert init --ca-dir "$WORK/ca" --hosts registry.home >"$WORK/certinit.out"
grep -q "/etc/docker/certs.d/registry.home:8443/ca.crt" "$WORK/certinit.out" || fail "cert init did not explain how to trust the CA"

# 1. Address on lo.
NS=${TAG}a
mkns "$NS"
ip -n "$NS" addr add "$ADDR/32" dev lo
serve_in "$NS" "$WORK/lo.log"
wait_tls "$NS" || { cat "$WORK/lo.log"; fail "registry.home:8443 not reachable by name in $NS"; }
grep -q "already present, using it.*interface=lo" "$WORK/lo.log" || fail "did not log the interface it validated"
grep -qP "^$ADDR\tregistry.home$" "/etc/netns/$NS/hosts" || fail "hosts entry missing"
head -2 "/etc/netns/$NS/hosts" | cmp -s - <(printf '127.0.0.1\tlocalhost\n# kept as is\n') || fail "other hosts lines changed"
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/img" v1 >/dev/null
mkdir -p "$WORK/certs.d" && cp "$WORK/ca/ca.crt" "$WORK/certs.d/ca.crt"
ip netns exec "$NS" skopeo --insecure-policy copy --quiet --dest-cert-dir "$WORK/certs.d" "oci:$WORK/img:v1" docker://registry.home:8443/netns/img:v1 \
  || fail "skopeo push over TLS by name"
ip netns exec "$NS" skopeo --insecure-policy inspect --cert-dir "$WORK/certs.d" docker://registry.home:8443/netns/img:v1 >/dev/null || fail "skopeo inspect"
proto=$(ip netns exec "$NS" curl -s -o /dev/null -w '%{http_version}' --cacert "$WORK/ca/ca.crt" https://registry.home:8443/v2/)
[ "$proto" = 2 ] || fail "HTTP/2 not negotiated in the namespace ($proto)"
stop_pid "$REG_PID"
pass "address on lo validated; skopeo pushed to https://registry.home:8443 by name over HTTP/2"

# 2. Address on a veth.
NS=${TAG}b
mkns "$NS"
ip -n "$NS" link add va type veth peer name vb
ip -n "$NS" link set va up; ip -n "$NS" link set vb up
ip -n "$NS" addr add "$ADDR/32" dev va
serve_in "$NS" "$WORK/veth.log"
wait_tls "$NS" || { cat "$WORK/veth.log"; fail "not reachable with the address on a veth"; }
grep -q "already present, using it.*interface=va" "$WORK/veth.log" || fail "did not validate the veth"
stop_pid "$REG_PID"
pass "address on a veth validated"

# 3. No address anywhere: create a dummy link, or say clearly why not.
NS=${TAG}c
mkns "$NS"
serve_in "$NS" "$WORK/create.log"
if wait_tls "$NS"; then
  ip -n "$NS" -o addr show dev registry0 | has "$ADDR/32" || fail "dummy registry0 without the address"
  stop_pid "$REG_PID"
  pass "created dummy registry0 with $ADDR/32 (kernel has dummy)"
else
  wait "$REG_PID" && fail "registryd kept running without the address"
  grep -q "no dummy link support.*modprobe dummy" "$WORK/create.log" || { cat "$WORK/create.log"; fail "no clear line about the missing dummy support"; }
  [ "$(grep -c "cannot create dummy interface" "$WORK/create.log")" = 1 ] || fail "not exactly one error line"
  pass "no dummy support in this kernel: one clear line: $(grep -o 'cannot create dummy.*' "$WORK/create.log" | cut -c1-100)..."
fi

# 4. No address and creation not allowed.
serve_in "$NS" "$WORK/nocreate.log" REGISTRYD_NODE_CREATE_INTERFACE=false
wait "$REG_PID" && fail "registryd started without the address and without permission to create it"
grep -q "no interface holds $ADDR/32 and node.create_interface = false" "$WORK/nocreate.log" || fail "unclear error: $(cat "$WORK/nocreate.log")"

# 5. Without CAP_NET_ADMIN.
serve_in "$NS" "$WORK/nocap.log" setpriv --inh-caps=-net_admin --bounding-set=-net_admin
wait "$REG_PID" && fail "registryd started without CAP_NET_ADMIN"
grep -q "needs CAP_NET_ADMIN" "$WORK/nocap.log" || { cat "$WORK/nocap.log"; fail "no clear line about CAP_NET_ADMIN"; }
pass "missing address / CAP_NET_ADMIN: clear one-line errors"
