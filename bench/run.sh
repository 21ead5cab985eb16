#!/usr/bin/env bash
# One command: installs what the benchmark needs, builds registryd, and runs bench/bench.py (registryd
# vs Distribution 2.8.2, same machine, same run, same TLS certificate, local-disk storage).
# Results: bench/results/latest.json and latest.png. Arguments go to bench.py (--rounds, --blob-mib).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends docker-registry nghttp2-client curl openssl python3-venv >/dev/null
VENV=${TEST_VENV:-/var/cache/registryd-tests/venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import matplotlib' 2>/dev/null || "$VENV/bin/pip" install -q matplotlib
cargo build --release
exec "$VENV/bin/python" bench/bench.py "$@"
