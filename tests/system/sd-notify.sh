#!/usr/bin/env bash
# sd_notify: on its own NOTIFY_SOCKET, registryd says READY (with STATUS), RELOADING and READY around
# a SIGHUP, STOPPING on SIGTERM, and pings WATCHDOG at half of the WATCHDOG_USEC the test sets.
# The listener serves node.address (127.0.0.1/32 here), so the daemon keeps the hostnames in its
# (scratch) hosts file and the reload changes them live; a BEGIN marker left without its END above
# them stays, with the user's line after it, through the start and the reload, and is reported.
source "$(dirname "$0")/lib/common.sh"

SOCK=$WORK/notify.sock
python3 "$SYS_DIR/lib/notify_listen.py" "$SOCK" "$WORK/notify.log" &
PIDS+=("$!")
wait_file "$SOCK.bound" || fail "test listener did not start"
PORT=$(free_port)
BEGIN='# BEGIN registryd managed block (do not edit; see node.hostnames)'
printf '127.0.0.1\tlocalhost\n%s\n10.1.2.3\tmine.home\n' "$BEGIN" >"$WORK/hosts"
cp "$WORK/hosts" "$WORK/hosts.orig"
NOTIFY_SOCKET=$SOCK WATCHDOG_USEC=2000000 start_registryd reg "$PORT" "$WORK/data" - <<TOML
[node]
address = "127.0.0.1/32"
create_interface = false
hostnames = ["before.home"]
hosts_file = "$WORK/hosts"
TOML
sleep 4.5
grep -qP "^127\.0\.0\.1\tbefore\.home$" "$WORK/hosts" || fail "hosts entry from the config missing"
# Reload: hostnames change live; a listener change is reported as needing a restart.
sed -i 's/before.home/after.home/; s/listen = .*/listen = ["127.0.0.1:1"]/' "$REG_CONFIG"
kill -HUP "$REG_PID"
sleep 1
grep -q "after.home" "$WORK/hosts" && ! grep -q "before.home" "$WORK/hosts" || fail "reload did not update the hosts entries"
# The orphan BEGIN and the user's line after it are where they were, and there is one block after them.
head -3 "$WORK/hosts" | cmp -s - "$WORK/hosts.orig" || { cat "$WORK/hosts"; fail "the user's lines around an orphan BEGIN changed"; }
[ "$(grep -cxF "$BEGIN" "$WORK/hosts")" = 2 ] || { cat "$WORK/hosts"; fail "not exactly one block after the orphan BEGIN"; }
[ "$(grep -c 'holds a damaged registryd block.*line 2: BEGIN marker without its END' "$WORK/reg.log")" = 2 ] \
  || { cat "$WORK/reg.log"; fail "the damaged block was not reported at start and at reload"; }
"$TEST_REGISTRYD_BIN" hosts --remove --config "$REG_CONFIG" >/dev/null 2>&1 || fail "hosts --remove"
cmp -s "$WORK/hosts" "$WORK/hosts.orig" || { cat "$WORK/hosts"; fail "hosts --remove did not give the file back"; }
grep -q 'only take effect after a restart keys=\["server.listen"\]' "$WORK/reg.log" || fail "reload did not report the listener change"
curl -fs -o /dev/null "http://127.0.0.1:$PORT/v2/" || fail "listener changed live (it must wait for a restart)"
kill -TERM "$REG_PID"
wait "$REG_PID" || fail "registryd exited non-zero after SIGTERM"

log=$WORK/notify.log
order=$(grep -oE 'READY=1|RELOADING=1|STOPPING=1' "$log" | tr '\n' ' ')
[ "$order" = "READY=1 RELOADING=1 READY=1 STOPPING=1 " ] || { cat "$log"; fail "notification order: $order"; }
grep -q 'READY=1|STATUS=serving on 127.0.0.1:'"$PORT"'; TLS OFF; storage ok' "$log" || { cat "$log"; fail "READY without the STATUS line"; }
grep -qE 'RELOADING=1\|MONOTONIC_USEC=[0-9]+' "$log" || fail "RELOADING without MONOTONIC_USEC"
grep -q 'STOPPING=1|STATUS=draining' "$log" || fail "STOPPING without status"
# Watchdog: about every second (half of 2 s), never as slow as the full interval.
python3 - "$log" <<'PY' || fail "watchdog interval"
import sys
t = [float(l.split()[0]) for l in open(sys.argv[1]) if "WATCHDOG=1" in l]
assert len(t) >= 4, f"only {len(t)} watchdog pings in ~5.5 s"
gaps = [b - a for a, b in zip(t, t[1:])]
mean = sum(gaps) / len(gaps)
assert 0.7 <= mean <= 1.3 and max(gaps) < 2.0, f"watchdog gaps {gaps}"
print(f"watchdog: {len(t)} pings, mean gap {mean:.2f} s (WATCHDOG_USEC=2 s)")
PY
pass "sd_notify: READY, STATUS, RELOADING(+MONOTONIC_USEC), READY, STOPPING in order; watchdog at half the interval; reload applied hostnames live (a damaged block above kept and reported) and reported the listener change"
