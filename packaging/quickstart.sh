#!/usr/bin/env bash
# Quickstart: on a fresh Debian 12 / Ubuntu 24.04 machine, build registryd and start it in
# development mode (plain HTTP on 127.0.0.1:5000, storage in ./registry-data).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
  if [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  else
    [ "$(id -u)" -eq 0 ] && { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl gcc >/dev/null; }
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
  fi
fi
cargo build --release
exec ./target/release/registryd serve --dev "$@"
