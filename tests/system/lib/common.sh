# Shared helpers for system tests. Source it; it sets up a temp dir and a cleanup trap that stops
# every process the test started (by PID) and removes what it made.
set -euo pipefail

SYS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPO_DIR=$(cd "$SYS_DIR/../.." && pwd)
# shellcheck source=deps.sh
source "$SYS_DIR/lib/deps.sh"
TEST_REGISTRYD_BIN=${TEST_REGISTRYD_BIN:-$REPO_DIR/target/quick/registryd}
[ -x "$TEST_REGISTRYD_BIN" ] || { echo "build first: cargo build --profile quick (TEST_REGISTRYD_BIN=$TEST_REGISTRYD_BIN)" >&2; exit 1; }
WORK=$(mktemp -d /tmp/registryd-test.XXXXXX)
# Every daemon a test starts keeps its hosts entries here, never in the machine's /etc/hosts.
export REGISTRYD_NODE_HOSTS_FILE=$WORK/hosts
: >"$REGISTRYD_NODE_HOSTS_FILE"
PIDS=()
CLEANUPS=()

cleanup() {
  local rc=$?
  local _c
  for ((_c=${#CLEANUPS[@]}-1; _c>=0; _c--)); do eval "${CLEANUPS[$_c]}" || true; done
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
pass() { echo "ok: $*"; }

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_registryd [--tls] NAME PORT STORAGE [FRAGMENT [serve args...]]: the one way a test starts a
# registryd daemon. Its config, $WORK/NAME.toml (set in REG_CONFIG, for the test's gc, fsck or
# reload), is the default test config below with FRAGMENT merged over it: TOML text for the sections
# the test cares about (`-` reads it from stdin, for a heredoc), key by key within a table (see
# lib/test_config.py). The default: one listener on 127.0.0.1:PORT, plain HTTP (with --tls, the
# loopback_cert pair at $WORK/tls.crt and tls.key), storage under STORAGE, and the scratch hosts file
# (REGISTRYD_NODE_HOSTS_FILE above names it too, and wins over a fragment's). Extra serve arguments
# and VAR=value before the call (the daemon's environment) come on top. Runs in the background,
# logging to $WORK/NAME.log; sets REG_PID and returns once /healthz answers.
start_registryd() {
  local tls=false
  if [ "${1:-}" = --tls ]; then tls=true; shift; fi
  local name=$1 port=$2 storage=$3 fragment=${4:-}
  shift $(($# < 4 ? $# : 4))
  [ "$fragment" = - ] && fragment=$(cat)
  local defaults scheme=http curl_tls=()
  defaults=$(printf '[server]\nlisten = ["127.0.0.1:%s"]\n[storage]\nroot = "%s"\n[node]\nhosts_file = "%s"\n' \
    "$port" "$storage" "$WORK/hosts")
  if $tls; then
    defaults+=$(printf '\n[tls]\ncertificate = "%s"\nkey = "%s"' "$WORK/tls.crt" "$WORK/tls.key")
    scheme=https curl_tls=(-k)
  else
    defaults+=$'\n[tls]\nenabled = false'
  fi
  REG_CONFIG=$WORK/$name.toml
  python3 "$SYS_DIR/lib/test_config.py" "$defaults" "$fragment" >"$REG_CONFIG" \
    || fail "config of registryd $name: $fragment"
  "$TEST_REGISTRYD_BIN" serve --config "$REG_CONFIG" "$@" >"$WORK/$name.log" 2>&1 &
  REG_PID=$!
  PIDS+=("$REG_PID")
  for _ in $(seq 1 100); do
    curl -fs "${curl_tls[@]}" -o /dev/null "$scheme://127.0.0.1:$port/healthz" && return 0
    kill -0 "$REG_PID" 2>/dev/null || break
    sleep 0.1
  done
  cat "$REG_CONFIG" "$WORK/$name.log"
  fail "registryd $name did not start"
}

wait_http() {
  for _ in $(seq 1 100); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.1
  done
  return 1
}

# loopback_cert: a certificate for 127.0.0.1 at $WORK/tls.crt and $WORK/tls.key, issued by a test
# CA at $WORK/ca.crt (a client that verifies, such as registryd's upstream client, trusts that CA;
# webpki refuses a self-signed CA certificate used as a server's own).
loopback_cert() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=registryd test CA" \
    -keyout "$WORK/ca.key" -out "$WORK/ca.crt" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$WORK/tls.key" -out "$WORK/tls.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$WORK/tls.ext"
  openssl x509 -req -in "$WORK/tls.csr" -CA "$WORK/ca.crt" -CAkey "$WORK/ca.key" -CAcreateserial \
    -days 2 -extfile "$WORK/tls.ext" -out "$WORK/tls.crt" 2>/dev/null
}

# start_dockerd [dockerd args]: a Docker engine of the test's own (no iptables, no bridge, vfs, all
# under $WORK, client config in $WORK/dockercfg), stopped at cleanup; sets DOCKER to its client.
start_dockerd() {
  local d=$WORK/d
  mkdir -p "$d/root" "$d/exec"
  export DOCKER_CONFIG=$WORK/dockercfg
  dockerd --iptables=false --ip-masq=false --bridge=none --storage-driver=vfs "$@" \
    --data-root "$d/root" --exec-root "$d/exec" -H "unix://$d/docker.sock" --pidfile "$d/docker.pid" \
    >"$WORK/dockerd.log" 2>&1 &
  local pid=$!
  CLEANUPS+=("kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf '$d'")
  DOCKER="/usr/bin/docker -H unix://$d/docker.sock"
  for _ in $(seq 1 100); do $DOCKER info >/dev/null 2>&1 && break; sleep 0.2; done
  $DOCKER info >/dev/null 2>&1 || { tail -20 "$WORK/dockerd.log"; fail "dockerd did not start"; }
}

# `... | has PATTERN`: grep -q that reads to the end. Under pipefail, `grep -q` leaves at its first
# match, and a command still writing after it dies of SIGPIPE and fails the whole pipeline (a docker
# save listing did, once in CI).
has() { grep "$@" >/dev/null; }

wait_file() { for _ in $(seq 1 50); do [ -e "$1" ] && return 0; sleep 0.1; done; return 1; }

stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# The Python venv with the test-side libraries (oras SDK, requests, cryptography for test
# certificates, h2): made by run-all.sh's first stage; made here when a test runs alone (lib/deps.sh).
ensure_venv() {
  deps_venv || fail "the tests' Python packages could not be installed"
  VENV=$TEST_VENV
  PY=$VENV/bin/python
}
