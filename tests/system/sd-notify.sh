#!/usr/bin/env bash
# sd_notify: on its own NOTIFY_SOCKET, registryd says READY (with STATUS), RELOADING and READY around
# a SIGHUP, STOPPING on SIGTERM, and pings WATCHDOG at half of the WATCHDOG_USEC the test sets.
source "$(dirname "$0")/lib/common.sh"

SOCK=$WORK/notify.sock
python3 "$SYS_DIR/lib/notify_listen.py" "$SOCK" "$WORK/notify.log" &
PIDS+=("$!")
wait_file "$SOCK.bound" || fail "test listener did not start"
PORT=$(free_port)
: >"$WORK/hosts"
cat >"$WORK/config.toml" <<TOML
[server]
listen = ["127.0.0.1:$PORT"]
[storage]
root = "$WORK/data"
[node]
hostnames = ["before.home"]
hosts_file = "$WORK/hosts"
TOML
NOTIFY_SOCKET=$SOCK WATCHDOG_USEC=2000000 \
  "$TEST_REGISTRYD_BIN" serve --plain-http --config "$WORK/config.toml" >"$WORK/reg.log" 2>&1 &
REG_PID=$!
PIDS+=("$REG_PID")
wait_http "http://127.0.0.1:$PORT/v2/" || { cat "$WORK/reg.log"; fail "registryd did not start"; }
sleep 4.5
grep -q "before.home" "$WORK/hosts" || fail "hosts entry from the config missing"
# Reload: hostnames change live; a listener change is reported as needing a restart.
sed -i 's/before.home/after.home/; s/listen = .*/listen = ["127.0.0.1:1"]/' "$WORK/config.toml"
kill -HUP "$REG_PID"
sleep 1
grep -q "after.home" "$WORK/hosts" && ! grep -q "before.home" "$WORK/hosts" || fail "reload did not update the hosts entries"
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
pass "sd_notify: READY, STATUS, RELOADING(+MONOTONIC_USEC), READY, STOPPING in order; watchdog at half the interval; reload applied hostnames live and reported the listener change"
