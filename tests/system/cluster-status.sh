#!/usr/bin/env bash
# The cluster as the nodes see it through their heartbeats on one shared storage directory: two
# daemons (one with TLS) beating every second each list the other; a node killed with -9 goes
# stale in the other's view and comes back when restarted; a stopped node's last beat says it is
# not ready; a second process beating under a taken node name is noticed by both; a beat silent
# for a week is removed, and a file that is not a beat is listed, not hidden.
source "$(dirname "$0")/lib/common.sh"

DATA=$WORK/data
NODES=$DATA/registryd/nodes
PA=$(free_port); PB=$(free_port)

# beat NODE FIELD: one field of NODE's heartbeat file, as JSON.
beat() { python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))[sys.argv[2]]))' "$NODES/$1.json" "$2"; }
# wait_log LOG PATTERN [SECONDS]: until LOG has a line matching PATTERN (grep -E).
wait_log() {
  for _ in $(seq 1 $((${3:-10} * 10))); do grep -qE "$2" "$1" && return 0; sleep 0.1; done
  return 1
}
# start_node NAME PORT [--tls]: a daemon named NAME in the cluster, beating every second.
start_node() {
  local name=$1 port=$2 tls=()
  [ "${3:-}" = --tls ] && tls=(--tls)
  start_registryd "${tls[@]}" "$name" "$port" "$DATA" - <<EOF
[node]
name = "$(echo "$name" | cut -d- -f1)"
heartbeat_secs = 1
EOF
}

loopback_cert
start_node a "$PA" --tls; A=$REG_PID
start_node b "$PB"; B=$REG_PID

# --- Each lists the other, from the files on the shared storage.
wait_log "$WORK/a.log" "cluster node beating node=b .*addresses=127.0.0.1:$PB" \
  || { cat "$WORK/a.log"; fail "a does not see b beating"; }
wait_log "$WORK/b.log" "cluster node beating node=a .*addresses=127.0.0.1:$PA" \
  || { cat "$WORK/b.log"; fail "b does not see a beating"; }
[ "$(ls "$NODES")" = "$(printf 'a.json\nb.json')" ] || { ls -la "$NODES"; fail "expected one beat per node, nothing else"; }
version=$("$TEST_REGISTRYD_BIN" --version | awk '{print $2}')
[ "$(beat a version)" = "\"$version\"" ] || fail "a's beat has version $(beat a version), not $version"
[ "$(beat a ready)" = true ] && [ "$(beat b ready)" = true ] || fail "a node beats not ready"
[ "$(beat a period_secs)" = 1 ] || fail "a's beat does not carry its period"
[ "$(beat a addresses)" = "[\"127.0.0.1:$PA\"]" ] || fail "a's beat has addresses $(beat a addresses)"
# a serves the test certificate (2 days): its expiry is in a's beat; b has no TLS.
expires=$(openssl x509 -enddate -noout -in "$WORK/tls.crt" | cut -d= -f2)
[ "$(beat a certificate_not_after)" = "\"$(date -u -d "$expires" +%Y-%m-%dT%H:%M:%SZ)\"" ] \
  || fail "a's beat says its certificate expires $(beat a certificate_not_after), openssl says $expires"
[ "$(beat b certificate_not_after)" = null ] || fail "b (no TLS) reports a certificate"
s1=$(beat b seen); sleep 1.5; s2=$(beat b seen)
[ "$s1" != "$s2" ] || fail "b's beat is not rewritten every second ($s1)"
pass "two nodes beat on one storage and list each other (version, addresses, certificate expiry, period)"

# --- kill -9: b goes stale in a's view (3 periods), and beats again when restarted.
kill -9 "$B"; wait "$B" 2>/dev/null || true
last=$(beat b seen)
wait_log "$WORK/a.log" "cluster node stopped beating \(stale\) node=b" 8 \
  || { tail -5 "$WORK/a.log"; fail "a does not flag the killed b as stale"; }
[ "$(beat b seen)" = "$last" ] || fail "a killed node's beat changed"
# How long after b's last beat a flagged it: three periods, and not much more.
flagged=$(grep -m1 'cluster node stopped beating (stale) node=b' "$WORK/a.log" | cut -d' ' -f1)
age=$(python3 -c 'import datetime as d,json,re,sys
t=lambda s: d.datetime.fromisoformat(re.sub(r"(\.\d{1,6})\d*", r"\1", s).replace("Z", "+00:00"))
print(round((t(sys.argv[2]) - t(json.loads(sys.argv[1]))).total_seconds(), 1))' "$last" "$flagged")
python3 -c 'import sys; sys.exit(not 3 <= float(sys.argv[1]) <= 6)' "$age" \
  || fail "a flagged b stale $age s after its last beat, not after three periods of 1 s"
pass "a node killed with -9 goes stale in the other's view after three periods ($age s)"
start_node b "$PB"; B=$REG_PID
for _ in $(seq 1 50); do
  [ "$(grep -c 'cluster node beating node=b' "$WORK/a.log")" = 2 ] && break; sleep 0.1
done
[ "$(grep -c 'cluster node beating node=b' "$WORK/a.log")" = 2 ] \
  || { tail -5 "$WORK/a.log"; fail "a does not see the restarted b beating again"; }
pass "a restarted node beats again and is listed alive"

# --- A second process under b's name: both notice (each finds the other's beat in its file).
PC=$(free_port)
start_node b-twin "$PC"; C=$REG_PID
wait_log "$WORK/b-twin.log" "writes heartbeats as b: give each node its own node.name" 5 \
  || { tail -5 "$WORK/b-twin.log"; fail "the twin does not notice b"; }
wait_log "$WORK/b.log" "addresses 127.0.0.1:$PC\) writes heartbeats as b" 5 \
  || { tail -5 "$WORK/b.log"; fail "b does not notice its twin"; }
kill -9 "$C"; wait "$C" 2>/dev/null || true
wait_log "$WORK/b.log" "heartbeat written and the cluster read again" 5 \
  || { tail -5 "$WORK/b.log"; fail "b does not recover once its twin is gone"; }
pass "two processes beating under one node name are both told, and it clears when one goes"

# --- A beat silent for eight days is removed; a file that is not a beat is listed, not hidden.
python3 - "$NODES/retired.json" <<'PY'
import datetime, json, sys
old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=8)
json.dump({"node": "retired", "version": "0.0.1", "addresses": [], "ready": True,
           "seen": old.strftime("%Y-%m-%dT%H:%M:%SZ"), "period_secs": 30}, open(sys.argv[1], "w"))
PY
echo 'not a heartbeat' >"$NODES/junk.json"
for _ in $(seq 1 30); do [ -e "$NODES/retired.json" ] || break; sleep 0.1; done
[ -e "$NODES/retired.json" ] && fail "a week-old beat was not removed"
wait_log "$WORK/a.log" "removed the heartbeat of a node silent for a week node=retired" 2 \
  || wait_log "$WORK/b.log" "removed the heartbeat of a node silent for a week node=retired" 2 \
  || fail "the removal of a week-old beat was not logged"
wait_log "$WORK/b.log" "cluster node beating node=junk version= ready=false" 3 \
  || { tail -5 "$WORK/b.log"; fail "an unreadable beat file is not listed"; }
[ -e "$NODES/junk.json" ] || fail "an unreadable beat file was removed"
rm "$NODES/junk.json"
pass "a beat silent for a week is removed, an unreadable one listed not ready"

# --- SIGTERM: a's last beat says it is not ready and why; b then sees it go stale.
kill -TERM "$A"; wait "$A" 2>/dev/null || true
[ "$(beat a ready)" = false ] || fail "a's last beat still says ready"
[ "$(beat a reason)" = '"stopped: the daemon is shutting down"' ] || fail "a's last beat gives reason $(beat a reason)"
wait_log "$WORK/b.log" "cluster node stopped beating \(stale\) node=a" 8 \
  || { tail -5 "$WORK/b.log"; fail "b does not flag the stopped a as stale"; }
pass "a stopped node's last beat is not ready, and it goes stale"
