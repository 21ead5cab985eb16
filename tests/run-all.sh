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
# Everything the run fetches, fetched here before any test: apt packages, the Rust toolchain and
# crates, cargo-deb, cargo-fuzz and the fuzz crate's crates, the Python packages, the UI test's npm
# packages, the VM's tools and rootfs, Garage's sources and crates.
# Each with deps.sh's retries (ten minutes: this machine kind loses name resolution for minutes at
# times); one that still cannot be had ends the run here, with one line naming it.
# shellcheck source=system/lib/deps.sh
source tests/system/lib/deps.sh
# shellcheck source=system/lib/garage.sh
source tests/system/lib/garage.sh
export DEBIAN_FRONTEND=noninteractive
# took NAME CMD...: CMD (which retries by itself), timed for the log; the run ends here if it fails.
took() { local t=$SECONDS; "${@:2}" || exit 1; echo "   $1 ($((SECONDS - t))s)"; }
# need NAME CMD...: CMD with deps.sh's retries.
need() { took "$1" deps_get "$@"; }
# logged LOG CMD...: CMD's long output (debootstrap, apt in the VM's rootfs) to LOG; its tail if it fails.
logged() { local log=$1; shift; "$@" >"$log" 2>&1 || { tail -n 5 "$log" >&2; return 1; }; }
# python3-requests, -cryptography, -h2, -jsonschema: Debian's, for the tests' venv (deps.sh).
# dpkg-dev: dpkg-shlibdeps, which cargo-deb runs; binutils: readelf, for the package's checks.
took "apt packages" deps_apt \
  skopeo docker-registry docker.io strace curl jq ca-certificates openssl \
  iproute2 util-linux e2fsprogs bindfs fuse3 lintian debootstrap glusterfs-server glusterfs-client \
  apache2-utils containerd podman chromium firefox-esr socat python3-prometheus-client time dpkg-dev binutils \
  python3 "${DEPS_PY_APT[@]}"
if ! command -v cargo >/dev/null; then
  rustup_once() {
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal -c clippy,rustfmt
  }
  need "the Rust toolchain (rustup)" rustup_once
  # shellcheck disable=SC1091
  . "$HOME/.cargo/env"
fi
need "registryd's crates" cargo fetch --locked --quiet
need "cargo-deb" ./packaging/build-deb.sh --install-tools
took "cargo-fuzz and the fuzz crate's crates" deps_fuzz
took "the tests' Python venv" deps_venv
took "the UI test's npm packages (playwright-core, axe-core, puppeteer-core)" deps_ui_node
need "the VM's tools (user-mode-linux, QEMU)" logged /tmp/registryd-vm-tools.log bash tests/vm/vm.sh tools
need "the VM's rootfs (debootstrap)" logged /tmp/registryd-vm-rootfs.log bash tests/vm/vm.sh rootfs
took "garage's sources and crates" garage_fetch
took "the previous release's sources (VM upgrade test; git history)" bash tests/vm/prev-release.sh unpack
need "the previous release's crates" bash tests/vm/prev-release.sh fetch
# From here on nothing is fetched: cargo stays offline, and a fallback install that still runs
# fails at once naming what the first stage missed.
export CARGO_NET_OFFLINE=true DEPS_OFFLINE=1
if [ "${REGISTRYD_TEST_ONLY_DEPS:-}" = 1 ]; then
  stage "dependencies installed (REGISTRYD_TEST_ONLY_DEPS=1: stopping here)"
  exit 0
fi

stage "cargo fmt / clippy"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

stage "cargo test"
cargo test --profile quick

stage "system tests"
# The daemon the system tests run is the one `cargo test` built for the integration tests (with
# the test build's features unified in: another `cargo build --profile quick` would build the
# crate again, a minute and a half here).
export TEST_REGISTRYD_BIN="$PWD/target/quick/registryd"
[ "$TEST_REGISTRYD_BIN" -nt src/main.rs ] || { echo "cargo test did not build $TEST_REGISTRYD_BIN" >&2; exit 1; }
failed=0
# Builds that take minutes, one after another at low priority while the system tests wait on their
# daemons (offline: the first stage fetched their sources), each one's test waiting for it: the
# fuzz targets (fuzz.sh, early in the order: mostly registryd's own crate once the machine's cache
# is warm), the Garage binary for the S3 tests (s3.sh), and the previous release's .deb for the VM
# test's upgrade (a release build of an old commit, cached by commit; vm-deb.sh).
# shellcheck disable=SC2016
nice -n 19 bash -c 'bash tests/system/fuzz.sh --build-only >/tmp/registryd-fuzz-build.log 2>&1
  (fail() { echo "garage build: $*" >&2; exit 1; }
  source tests/system/lib/deps.sh; source tests/system/lib/garage.sh; garage_install) >/tmp/registryd-garage-build.log 2>&1
  bash tests/vm/prev-release.sh build >/tmp/registryd-prev-release-build.log 2>&1' &
garage_build=$!
# Tests must never touch the machine's real /etc/hosts (they use a scratch file, lib/common.sh).
hosts_before=$(sha256sum /etc/hosts)
# fuzz.sh last: its targets are the background lane's first build (about two minutes of
# registryd's crate instrumented), which it would otherwise wait for; by then that build is done.
mapfile -t system_tests < <(printf '%s\n' tests/system/*.sh | grep -v '^tests/system/fuzz\.sh$')
system_tests+=(tests/system/fuzz.sh)
for t in "${system_tests[@]}"; do
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
