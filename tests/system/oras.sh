#!/usr/bin/env bash
# The oras SDK (PyPI) pushes artifacts with a subject; the referrers endpoint lists them.
source "$(dirname "$0")/lib/common.sh"

ensure_venv
PORT=$(free_port)
start_registryd oras "$PORT" "$WORK/data"
"$PY" "$SYS_DIR/lib/oras_referrers.py" "127.0.0.1:$PORT" "$WORK" || { tail -20 "$WORK/oras.log"; fail "oras"; }
pass "oras push with subject, referrers listed and filtered"
