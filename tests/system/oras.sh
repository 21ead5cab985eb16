#!/usr/bin/env bash
# The oras SDK (PyPI) pushes artifacts with a subject; the referrers endpoint lists them.
source "$(dirname "$0")/lib/common.sh"

VENV=${ORAS_VENV:-/var/cache/registryd-tests/oras-venv}
if ! "$VENV/bin/python" -c 'import oras' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q 'oras==0.2.43' requests
fi
PORT=$(free_port)
start_registryd oras "$PORT" "$WORK/data"
"$VENV/bin/python" "$SYS_DIR/lib/oras_referrers.py" "127.0.0.1:$PORT" "$WORK" || { tail -20 "$WORK/oras.log"; fail "oras"; }
pass "oras push with subject, referrers listed and filtered"
