#!/usr/bin/env bash
# The one test command (README, .ci/run): installs every test dependency, then runs formatting and
# lint checks, the cargo test suite, and the system tests against real clients. Run as root on
# Debian 12 / Ubuntu 24.04.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "run-all.sh: run as root (system tests start dockerd and mount filesystems)" >&2
  exit 1
fi

T0=$(date +%s)
stage() { echo "== [$(( $(date +%s) - T0 ))s] $*"; }

stage "installing test dependencies"
export DEBIAN_FRONTEND=noninteractive
# Every minute for six minutes: this machine kind loses name resolution for a few minutes at times.
retry() {
  local try
  for try in 1 2 3 4 5 6 7; do
    "$@" && return 0
    [ "$try" = 7 ] && { echo "run-all.sh: failed 7 times: $*" >&2; return 1; }
    echo "run-all.sh: $1 failed (try $try of 7); retrying in 60 s" >&2
    sleep 60
  done
}
retry apt-get update -qq
retry apt-get install -y -qq --no-install-recommends \
  skopeo docker-registry docker.io strace curl jq python3 python3-venv ca-certificates openssl \
  iproute2 util-linux e2fsprogs bindfs fuse3 lintian debootstrap glusterfs-server glusterfs-client \
  apache2-utils containerd podman chromium python3-prometheus-client time \
  >/dev/null
if ! command -v cargo >/dev/null; then
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi

stage "cargo fmt / clippy"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

stage "cargo test"
cargo test --release

stage "system tests"
cargo build --release
export TEST_REGISTRYD_BIN="$PWD/target/release/registryd"
# The tests' Python packages (pinned, in a venv of their own), installed once before any test.
bash -c 'source tests/system/lib/common.sh; ensure_venv'
failed=0
# The S3 tests need a Garage binary that takes minutes to build: start it now at low priority, so
# it builds while the other system tests wait on their daemons (s3.sh waits for it).
# shellcheck disable=SC2016
nice -n 19 bash -c 'fail() { echo "garage build: $*" >&2; exit 1; }
  source tests/system/lib/garage.sh; garage_install' >/tmp/registryd-garage-build.log 2>&1 &
garage_build=$!
# Tests must never touch the machine's real /etc/hosts (they use a scratch file, lib/common.sh).
hosts_before=$(sha256sum /etc/hosts)
for t in tests/system/*.sh; do
  t1=$(date +%s)
  echo "-- $t"
  if ! bash "$t"; then
    echo "FAILED: $t"
    failed=1
  fi
  echo "   ($(( $(date +%s) - t1 ))s)"
done
wait "$garage_build" 2>/dev/null || true
if [ "$(sha256sum /etc/hosts)" != "$hosts_before" ]; then
  echo "FAILED: the system tests changed the machine's /etc/hosts"
  failed=1
fi
stage "done (total under the 45-minute budget: $(( ($(date +%s) - T0) / 60 )) min)"
exit "$failed"
