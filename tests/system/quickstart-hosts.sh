#!/usr/bin/env bash
# A first try changes no system file: the README's quickstart command (`registryd serve --dev`, what
# packaging/quickstart.sh runs once it has built) serves and takes a push, and leaves /etc/hosts byte
# for byte as it was and the node's addresses as they were. So does any serve whose listeners all miss
# node.address; a serve whose listener is node.address keeps its names in the hosts file.
#
# Everything runs in a mount and network namespace of the test's own, with a scratch copy of the
# machine's hosts file bound over /etc/hosts there: the machine's real /etc/hosts and its addresses
# are never touched, whatever the daemon does. Traffic stays on the namespace's 127.0.0.1.
source "$(dirname "$0")/lib/common.sh"
command -v unshare >/dev/null || fail "unshare missing: apt-get install util-linux"
command -v skopeo >/dev/null || fail "skopeo missing: apt-get install skopeo"
# The daemons below must use their default hosts file, /etc/hosts, which is the scratch copy in there.
unset REGISTRYD_NODE_HOSTS_FILE

# The command under test is the quickstart's own; if it changes, this test must follow it.
grep -qF 'exec ./target/release/registryd serve --dev "$@"' "$REPO_DIR/packaging/quickstart.sh" \
  || fail "packaging/quickstart.sh no longer runs 'registryd serve --dev': update this test"
grep -qF './packaging/quickstart.sh' "$REPO_DIR/README.md" || fail "the README's quickstart moved: update this test"

SCRATCH=$WORK/etc-hosts
# The machine's file, without a registryd block it may already hold (a node that runs registryd,
# or a try of an older one): `hosts --remove` below would rightly take that one away too.
awk '$0 == "# BEGIN registryd managed block (do not edit; see node.hostnames)" { skip = 1; next }
     skip && $0 == "# END registryd managed block" { skip = 0; next }
     !skip' /etc/hosts >"$SCRATCH"
cp "$SCRATCH" "$WORK/etc-hosts.orig"
real_before=$(sha256sum </etc/hosts)
mkdir -p "$WORK/empty" "$WORK/checkout"
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/img" v1 --seed quickstart >/dev/null

# Runs in the namespaces. A daemon it starts is stopped by PID by its own trap (the namespace lives
# as long as a process in it does).
inside() {
  set -euo pipefail
  PIDS=()
  trap 'for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done' EXIT
  ip link set lo up
  mount --bind "$SCRATCH" /etc/hosts
  [ "$(stat -c %d:%i /etc/hosts)" = "$(stat -c %d:%i "$SCRATCH")" ] \
    || fail "/etc/hosts in the namespace is not the scratch copy; stopping before any daemon runs"
  # A fresh machine has no /etc/registryd/config.toml (serve reads it when present).
  if [ -e /etc/registryd ]; then mount --bind "$WORK/empty" /etc/registryd; fi
  ip -o addr >"$WORK/addr.before"
  unchanged() { # WHAT: the hosts file and the addresses are as they were
    cmp -s "$SCRATCH" "$WORK/etc-hosts.orig" || { diff "$WORK/etc-hosts.orig" "$SCRATCH" || true; fail "$1 changed /etc/hosts"; }
    ip -o addr | diff "$WORK/addr.before" - || fail "$1 changed the node's addresses"
    ! ip link show registry0 >/dev/null 2>&1 || fail "$1 created the registry0 link"
  }

  # 1. The quickstart: serve --dev from a checkout, push, pull back, stop. Started by hand, not by
  # start_registryd: what is under test is this exact command with no config of the test's.
  (cd "$WORK/checkout" && exec "$TEST_REGISTRYD_BIN" serve --dev) >"$WORK/dev.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  wait_http http://127.0.0.1:5000/v2/ || { cat "$WORK/dev.log"; fail "serve --dev did not answer on 127.0.0.1:5000"; }
  skopeo --insecure-policy copy --quiet --dest-tls-verify=false "oci:$WORK/img:v1" \
    docker://127.0.0.1:5000/quickstart/img:v1 || fail "skopeo push to serve --dev"
  skopeo --insecure-policy inspect --tls-verify=false docker://127.0.0.1:5000/quickstart/img:v1 >/dev/null \
    || fail "skopeo inspect on serve --dev"
  [ -d "$WORK/checkout/registry-data/docker/registry/v2/blobs" ] || fail "serve --dev did not store under ./registry-data"
  kill -TERM "$pid"
  wait "$pid" || { cat "$WORK/dev.log"; fail "serve --dev exited non-zero on SIGTERM"; }
  unchanged "serve --dev"
  grep -q "hosts file and the link-local address are left alone" "$WORK/dev.log" \
    || { cat "$WORK/dev.log"; fail "serve --dev did not say it leaves the hosts file alone"; }
  pass "serve --dev served a push and left /etc/hosts byte-identical and the addresses as they were"

  # 2. Listeners that all miss node.address (169.254.254.254, the default), with every node setting
  # that could change the system on.
  # Its hosts file is the default, /etc/hosts, said here over the test config's scratch one.
  start_registryd miss 5001 "$WORK/data-miss" - <<TOML
[node]
create_interface = true
hostnames = ["registry.home"]
hosts_file = "/etc/hosts"
TOML
  pid=$REG_PID
  kill -HUP "$pid"
  for _ in $(seq 1 50); do grep -q "configuration reloaded" "$WORK/miss.log" && break; sleep 0.1; done
  grep -q "configuration reloaded" "$WORK/miss.log" || fail "no reload"
  kill -TERM "$pid"
  wait "$pid" || { cat "$WORK/miss.log"; fail "serve exited non-zero on SIGTERM"; }
  unchanged "a serve whose listeners miss node.address (start and reload)"
  "$TEST_REGISTRYD_BIN" setup --config "$WORK/miss.toml" >"$WORK/setup.log" 2>&1 || { cat "$WORK/setup.log"; fail "setup"; }
  unchanged "registryd setup with listeners that miss node.address"
  pass "listeners that miss node.address: start, reload and setup touched neither /etc/hosts nor the addresses"

  # 3. The control: a listener on node.address (here 127.0.0.1/32, which lo holds) keeps the names
  # in the hosts file, and `registryd hosts --remove` gives the file back byte for byte.
  start_registryd serves 5002 "$WORK/data-serves" - <<TOML
[node]
address = "127.0.0.1/32"
create_interface = false
hostnames = ["quickstart.test"]
hosts_file = "/etc/hosts"
TOML
  pid=$REG_PID
  grep -qP '^127\.0\.0\.1\tquickstart\.test\r?$' /etc/hosts || { cat "$WORK/serves.log"; fail "a serve on node.address did not write its hostname"; }
  curl -fs -o /dev/null http://quickstart.test:5002/v2/ || fail "quickstart.test does not resolve through the hosts entry"
  kill -TERM "$pid"
  wait "$pid" || fail "serve on node.address exited non-zero on SIGTERM"
  "$TEST_REGISTRYD_BIN" hosts --remove --config "$WORK/serves.toml" >/dev/null || fail "hosts --remove"
  unchanged "a serve on node.address, then hosts --remove,"
  pass "a listener on node.address keeps its hostname in /etc/hosts; hosts --remove gives the file back byte for byte"
}

export WORK SCRATCH TEST_REGISTRYD_BIN SYS_DIR
unshare -m -n --propagation private bash -c "$(declare -f inside fail pass wait_http start_registryd); inside" \
  || fail "in the namespaces (above)"
[ "$(sha256sum </etc/hosts)" = "$real_before" ] || fail "the machine's /etc/hosts changed"
pass "quickstart: no system file changed"
