#!/usr/bin/env bash
# registryd's S3 driver beside Distribution 2.8.2's, on the three-node Garage cluster of the tests
# (tests/system/lib/garage.sh: built once with cargo and cached, replication factor 3, 127.0.0.1).
# Installs what it needs, builds registryd, runs bench/s3.py (arguments go to it: --rounds,
# --blob-mib, --requests), and tears the cluster down. Results: bench/results/s3.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends docker-registry nghttp2-client curl openssl python3 skopeo >/dev/null
cargo build --release -q
export TEST_REGISTRYD_BIN=$PWD/target/release/registryd
source tests/system/lib/common.sh
source tests/system/lib/garage.sh
garage_up
export GARAGE_ENDPOINT GARAGE_KEY_ID GARAGE_SECRET GARAGE_BUCKET
python3 bench/s3.py "$@"
