#!/usr/bin/env bash
# TLS hot reload: 50 rotations by each of in-place write, rename-over (certbot) and the `..data`
# symlink swap (Kubernetes/Nomad) while a client loops over handshakes: zero failed handshakes, the
# new certificate served within 2 s; a broken pair, a mismatched key and an expired certificate each
# leave the old one in service.
source "$(dirname "$0")/lib/common.sh"
ensure_venv

for mode in inplace rename symlink; do
  dir=$WORK/$mode/tls
  "$PY" "$SYS_DIR/lib/tls_rotate.py" setup "$mode" "$dir"
  PORT=$(free_port)
  # A scratch hosts file of its own: given in the environment, which wins over the config's.
  REGISTRYD_NODE_HOSTS_FILE=$WORK/hosts-$mode start_registryd --tls "$mode" "$PORT" "$WORK/data" - <<TOML
[tls]
certificate = "$dir/tls.crt"
key = "$dir/tls.key"
[node]
hostnames = ["registry.test"]
TOML
  touch "$WORK/hosts-$mode"
  curl -fs --cacert "$WORK/$mode/ca.pem" --resolve "registry.test:$PORT:127.0.0.1" "https://registry.test:$PORT/v2/" >/dev/null \
    || { cat "$WORK/$mode.log"; fail "registryd with TLS did not start"; }
  proto=$(curl -s -o /dev/null -w '%{http_version}' --http2 --cacert "$WORK/$mode/ca.pem" --resolve "registry.test:$PORT:127.0.0.1" "https://registry.test:$PORT/v2/")
  [ "$proto" = 2 ] || fail "ALPN did not negotiate HTTP/2 (got $proto)"
  if curl -s -o /dev/null --tls-max 1.1 --cacert "$WORK/$mode/ca.pem" --resolve "registry.test:$PORT:127.0.0.1" "https://registry.test:$PORT/v2/"; then
    fail "TLS 1.1 was accepted"
  fi
  "$PY" "$SYS_DIR/lib/tls_rotate.py" rotate "$mode" "$dir" "$PORT" 50 || { tail -20 "$WORK/$mode.log"; fail "$mode rotation"; }
  grep -q 'new certificate refused' "$WORK/$mode.log" || fail "$mode: refusals were not logged"
  stop_pid "$REG_PID"
done
pass "TLS: 150 rotations without a failed handshake, HTTP/2 by ALPN, TLS < 1.2 refused, bad pairs refused"
