#!/usr/bin/env bash
# Builds target/debian/registryd_<version>_amd64.deb (the dist-profile binary, man page rendered from the
# CLI definition, unit, conffile) and checks it with lintian.
set -euo pipefail
cd "$(dirname "$0")/.."
# cargo-deb pinned (a new release may change what goes into the package). `--install-tools` installs
# it and stops: tests/run-all.sh does that in its first stage, before the network may be gone.
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
  cargo install --locked --quiet --version "=$CARGO_DEB_VERSION" cargo-deb
fi
[ "${1:-}" = --install-tools ] && exit 0
cargo build --profile dist
mkdir -p target/man
./target/dist/registryd man | gzip -9n >target/man/registryd.8.gz
cargo deb --no-build --quiet >/dev/null
deb=$(ls -t target/debian/registryd_*_amd64.deb | head -1)
echo "$deb"
if command -v lintian >/dev/null; then
  lintian --fail-on error "$deb" >&2 || { echo "lintian found errors" >&2; exit 1; }
fi
