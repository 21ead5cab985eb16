#!/bin/bash
# The previous release's .deb, for the VM test's upgrade and downgrade (issue 26): built from the
# repository's own history (`git archive` of a pinned commit, never the network) by that commit's
# own packaging/build-deb.sh, so it is the package as it was built then.
# Usage: prev-release.sh unpack | fetch | build
#   unpack  the commit's sources from this checkout's history, no network (a checkout without that
#           commit fails here at once, in one line: no retrying helps a shallow clone)
#   fetch   unpack, then `cargo fetch` the commit's lockfile (run-all.sh's first stage, with
#           retries; the network is needed only here)
#   build   build the .deb offline unless cached, print its path as the last line. One build at a
#           time (run-all.sh starts one in the background at nice 19; vm-deb.sh then waits here).
# Cached by commit in $C: the .deb only (the source tree and its release target, about 1.5 GB, are
# removed after the build). Moving PREV_COMMIT costs one cold build (minutes of both cores).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
# The previous release. There are no release tags yet, so it is the head of main when the upgrade
# test was written (a 0.1.0 build). Once the project tags releases, pin the last tag's commit here
# (git rev-parse vX.Y.Z^{commit}); the test then upgrades from the release operators run.
PREV_COMMIT=ed1721a9a6090415d3ccba026d0919f67890fcde
C=${PREV_RELEASE_CACHE:-/var/cache/registryd-tests/prev-release}
DEB=$C/registryd-$PREV_COMMIT.deb
SRC=$C/src-$PREV_COMMIT
mkdir -p "$C"

# The sources, from this checkout's history: a shallow clone lacks the commit, and that is said in
# one line rather than fetched.
unpack() {
  [ -f "$DEB" ] || [ -f "$SRC/.unpacked" ] && return 0
  git -C "$REPO" cat-file -e "$PREV_COMMIT^{commit}" 2>/dev/null || {
    echo "prev-release.sh: this checkout lacks $PREV_COMMIT (the previous release the upgrade test installs); a shallow clone? git fetch --unshallow" >&2
    return 1
  }
  rm -rf "$SRC" && mkdir -p "$SRC" || return 1
  git -C "$REPO" archive --format=tar "$PREV_COMMIT" | tar -x -C "$SRC" || return 1
  touch "$SRC/.unpacked"
}

# One try (run-all.sh retries it with deps_get; every step checks itself for that). Also the
# commit's cargo-deb: the same pinned version as today's build-deb.sh, so a no-op until they differ.
fetch() {
  [ -f "$DEB" ] && return 0
  unpack || return 1
  [ -f "$SRC/.fetched" ] && return 0
  cargo fetch --locked --quiet --manifest-path "$SRC/Cargo.toml" || return 1
  bash "$SRC/packaging/build-deb.sh" --install-tools || return 1
  touch "$SRC/.fetched"
}

build() {
  local lock rc=0 t0=$SECONDS
  exec {lock}>"$C/.build.lock"
  flock "$lock"
  if [ ! -f "$DEB" ]; then
    fetch || rc=$?
    if [ "$rc" = 0 ]; then
      echo "building the previous release's .deb ($PREV_COMMIT; offline, minutes; cached in $C)" >&2
      local out
      # build-deb.sh names its .deb relative to the tree it built
      # Without the shipped profile's fat LTO and single codegen unit: the upgrade is about the
      # package (files, conffiles, maintainer scripts, the unit, data on disk), which they do not
      # change, and they more than double a build that may run in CI's background lane.
      out=$(CARGO_NET_OFFLINE=true CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
        bash "$SRC/packaging/build-deb.sh" | tail -1) || rc=$?
      case $out in /*) ;; *) out=$SRC/$out ;; esac
      if [ "$rc" = 0 ] && [ -f "$out" ]; then
        cp "$out" "$DEB.part" && mv "$DEB.part" "$DEB" || rc=1
      else
        echo "prev-release.sh: building $PREV_COMMIT's .deb failed" >&2
        rc=1
      fi
      echo "previous release built in $((SECONDS - t0))s" >&2
    fi
    # Only the pinned commit's package is kept: an earlier pin's is never installed again.
    [ "$rc" = 0 ] && rm -rf "$SRC" && find "$C" -maxdepth 1 -name 'registryd-*.deb' ! -name "${DEB##*/}" -delete
  fi
  flock -u "$lock"
  exec {lock}>&-
  [ "$rc" = 0 ] || return "$rc"
  echo "$DEB"
}

case "${1:-}" in
  unpack) unpack ;; fetch) fetch ;; build) build ;;
  *) echo "usage: $0 unpack | fetch | build" >&2; exit 2 ;;
esac
