#!/usr/bin/env bash
# One command: installs what the benchmark needs, builds registryd, and runs bench/bench.py (registryd
# vs Distribution 2.8.2, same machine, same run, same TLS certificate, local-disk storage).
# Results: bench/results/latest.json and latest.png. Arguments go to bench.py (--rounds, --blob-mib).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
had_nginx=$(command -v nginx || true)
# nginx-light: the TLS download ceiling; apache2-utils (ab): HTTP/1.1 HEAD load; skopeo: the image scenario.
apt-get install -y -qq --no-install-recommends docker-registry nghttp2-client curl openssl python3-venv \
    apache2-utils nginx-light skopeo >/dev/null
# The bench runs its own nginx on a loopback port; the packaged service it may have started is not wanted.
[ -n "$had_nginx" ] || { systemctl disable --now nginx >/dev/null 2>&1 || true; }
VENV=${TEST_VENV:-/var/cache/registryd-tests/venv}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -c 'import matplotlib' 2>/dev/null || "$VENV/bin/pip" install -q matplotlib
cargo build --release
exec "$VENV/bin/python" bench/bench.py "$@"
