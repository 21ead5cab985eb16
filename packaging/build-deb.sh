#!/usr/bin/env bash
# Builds target/debian/registryd_<version>_amd64.deb (the dist-profile binary, man page rendered from the
# CLI definition, unit, conffile; Depends with a libc6 bound from the glibc versions the binary needs)
# and checks it with lintian.
set -euo pipefail
cd "$(dirname "$0")/.."
# cargo-deb pinned (a new release may change what goes into the package). `--install-tools` installs
# it and stops: tests/run-all.sh does that in its first stage, before the network may be gone.
CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -qx "cargo-deb $CARGO_DEB_VERSION"; then
  cargo install --locked --quiet --version "=$CARGO_DEB_VERSION" cargo-deb
fi
[ "${1:-}" = --install-tools ] && exit 0
cargo build --release
mkdir -p target/man
./target/release/registryd man | gzip -9n >target/man/registryd.8.gz

# The package's version. Cargo.toml's version names the last release (bumped when release X.Y.Z is
# tagged vX.Y.Z); that tag, or sources without their git history (a release tarball, `git
# archive`), is packaged as X.Y.Z-1. Any other commit is a snapshot after that release,
# X.Y.Z+git<commit time, UTC>.<short hash>-1: dpkg orders it after X.Y.Z-1 and after every earlier
# commit's snapshot, so `apt install ./registryd_*.deb` of a newer build upgrades a node (postinst
# restarts the daemon) instead of taking the same version twice, and a downgrade needs apt's
# --allow-downgrades, as it should.
version=$(awk -F'"' '/^version *=/ {print $2; exit}' Cargo.toml)
[ -n "$version" ] || { echo "build-deb.sh: no version in Cargo.toml" >&2; exit 1; }
if [ "$(git rev-parse --show-toplevel 2>/dev/null)" = "$(pwd -P)" ] \
  && ! git tag --points-at HEAD | grep -qx "v$version"; then
  version="$version+git$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y%m%d%H%M%S).$(git rev-parse --short=7 HEAD)"
fi
cargo deb --no-build --quiet --deb-version "$version-1" >/dev/null
deb=target/debian/registryd_${version}-1_amd64.deb
[ -f "$deb" ] || { echo "build-deb.sh: cargo deb did not write $deb" >&2; exit 1; }

# glibc_needed BINARY: the newest glibc release among the binary's version needs (readelf -V).
# GLIBC_x.y names its release; GLIBC_ABI_DT_RELR (packed relative relocations) came with 2.36. An
# unknown GLIBC_* name stops the build rather than be left out of the bound.
glibc_needed() {
  local names v max=0
  names=$(readelf -V --wide "$1" | sed -n '/^Version needs section/,/^$/s/.*Name: \(GLIBC_[^ ]*\).*/\1/p' \
    | sort -u) || return 1
  [ -n "$names" ] || { echo "build-deb.sh: readelf shows no GLIBC version need in $1" >&2; return 1; }
  for v in $names; do
    case $v in
      GLIBC_ABI_DT_RELR) v=2.36 ;;
      GLIBC_[0-9]*) v=${v#GLIBC_} ;;
      *) echo "build-deb.sh: $1 needs $v; which glibc release brought it? (add it to glibc_needed)" >&2; return 1 ;;
    esac
    if dpkg --compare-versions "$v" gt "$max"; then max=$v; fi
  done
  echo "$max"
}
# The libc6 bound. cargo-deb's `$auto` is what dpkg-shlibdeps computes, and that reads the versioned
# symbols the binary imports: a version need with no symbol behind it escapes it. GLIBC_ABI_DT_RELR
# (-z pack-relative-relocs, packaging/link-gcc) did: the package said libc6 (>= 2.34), installed on
# Ubuntu 22.04's glibc 2.35, and the daemon could not start there. So the bound is raised to the
# newest glibc any version need names, repacking the control file (cargo-deb takes no Depends from
# its command line).
glibc=$(glibc_needed target/release/registryd)
bound=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed -n 's/^ *libc6 (>= \([^)]*\)) *$/\1/p')
[ -n "$bound" ] || { echo "build-deb.sh: no libc6 (>= ...) in $deb's Depends" >&2; exit 1; }
if dpkg --compare-versions "$glibc" gt "$bound"; then
  unpacked=$(mktemp -d)
  trap 'rm -rf "$unpacked"' EXIT
  dpkg-deb -R "$deb" "$unpacked/pkg"
  sed -i "/^Depends:/ s/libc6 (>= [^)]*)/libc6 (>= $glibc)/" "$unpacked/pkg/DEBIAN/control"
  # The files keep cargo-deb's timestamps; directories dpkg-deb -R made are clamped to them.
  SOURCE_DATE_EPOCH=$(stat -c %Y "$unpacked/pkg/usr/bin/registryd") \
    dpkg-deb --root-owner-group -b "$unpacked/pkg" "$deb" >/dev/null
fi
echo "$deb"
if command -v lintian >/dev/null; then
  lintian --fail-on error "$deb" >&2 || { echo "lintian found errors" >&2; exit 1; }
fi
