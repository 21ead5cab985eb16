# A three-node Garage cluster (a replicated S3 store written in Rust) on 127.0.0.1, replication
# factor 3, for the S3 driver's tests. Source after common.sh; call garage_up. It sets:
#   GARAGE_ENDPOINT (node 1's S3 API), GARAGE_ENDPOINTS (all three), GARAGE_KEY_ID, GARAGE_SECRET,
#   GARAGE_BUCKET, GARAGE_PIDS (by node, 1-based: ${GARAGE_PIDS[1]}).
# Every node is stopped by PID and its directories removed by common.sh's cleanup.
#
# The binary: garage 2.5.0 from its crates.io sources with their own Cargo.lock (as `cargo install
# --locked`), only the sqlite metadata engine, at opt-level 1 (minutes on two cores), kept in
# /var/cache/registryd-test/garage between runs on one machine (GARAGE_ROOT overrides the place).
# Fetching and building are apart: run-all.sh's first stage downloads the sources and every crate
# they lock (garage_fetch, with deps.sh's retries), and the build runs offline in the background
# while the other system tests run, so a lost network mid-run cannot fail it.

GARAGE_VERSION=2.5.0
# sha256 of garage-2.5.0.crate, as the crates.io index lists it: checked after every download.
GARAGE_CRATE_SHA256=e1752af176a3cd84e9afd6edf30df594db92b7730cc67bddcd74769841b3f3f5
GARAGE_ROOT=${GARAGE_ROOT:-/var/cache/registryd-test/garage}
GARAGE_BIN=$GARAGE_ROOT/bin/garage
GARAGE_SRC=$GARAGE_ROOT/src/garage-$GARAGE_VERSION

garage_built() { [ -x "$GARAGE_BIN" ] && "$GARAGE_BIN" --version 2>/dev/null | grep -q "cargo:$GARAGE_VERSION"; }

# _garage_fetch_once: one try at the sources and their crates (deps_get retries it; it is a
# condition there, so each step checks itself). The .fetched stamp lets the build skip the network.
_garage_fetch_once() {
  local dl crate=$GARAGE_ROOT/src/garage-$GARAGE_VERSION.crate
  mkdir -p "$GARAGE_ROOT/src" || return 1
  if [ ! -f "$GARAGE_SRC/.unpacked" ]; then
    # The download address as the registry's index says (crates.io's, or a mirror's in its place).
    dl=$(curl -fsS --max-time 60 https://index.crates.io/config.json \
      | sed -n 's/.*"dl" *: *"\([^"]*\)".*/\1/p') || return 1
    [ -n "$dl" ] || return 1
    case $dl in
      *'{'*) dl=$(echo "$dl" | sed "s/{crate}/garage/g; s/{version}/$GARAGE_VERSION/g") ;;
      *) dl="$dl/garage/$GARAGE_VERSION/download" ;;
    esac
    curl -fsSL --max-time 300 -o "$crate.part" "$dl" || return 1
    echo "$GARAGE_CRATE_SHA256  $crate.part" | sha256sum -c --quiet - || { rm -f "$crate.part"; return 1; }
    rm -rf "$GARAGE_SRC" && tar -xzf "$crate.part" -C "$GARAGE_ROOT/src" && rm -f "$crate.part" \
      && touch "$GARAGE_SRC/.unpacked" || return 1
  fi
  [ -f "$GARAGE_SRC/.fetched" ] && return 0
  cargo fetch --locked --quiet --manifest-path "$GARAGE_SRC/Cargo.toml" --target x86_64-unknown-linux-gnu \
    && touch "$GARAGE_SRC/.fetched"
}

# garage_fetch: the sources and crates for the build, unless the binary or they are there already.
garage_fetch() {
  garage_built && return 0
  deps_get "garage $GARAGE_VERSION sources and crates" _garage_fetch_once
}

# Builds the binary unless it is there. One build at a time (run-all.sh starts one in the
# background while other tests run; s3.sh then waits for it here).
garage_install() {
  local lock rc=0
  mkdir -p "$GARAGE_ROOT"
  exec {lock}>"$GARAGE_ROOT/.install.lock"
  flock "$lock"
  if ! garage_built; then
    garage_fetch || rc=$?
    if [ "$rc" = 0 ]; then
      echo "building garage $GARAGE_VERSION (offline, minutes; cached in $GARAGE_ROOT)"
      # opt-level 1: a test store needs no more, and it builds in less of CI's time.
      CARGO_PROFILE_RELEASE_OPT_LEVEL=1 \
        cargo install --path "$GARAGE_SRC" --offline --locked --root "$GARAGE_ROOT" \
        --target-dir "$GARAGE_ROOT/build" --quiet --no-default-features --features bundled-libs,sqlite || rc=$?
      rm -rf "$GARAGE_ROOT/build"
    fi
  fi
  flock -u "$lock"
  exec {lock}>&-
  [ "$rc" = 0 ] || fail "building garage $GARAGE_VERSION failed"
}

# garage_cli N ARGS...: the garage CLI against node N.
garage_cli() {
  local n=$1; shift
  "$GARAGE_BIN" -c "$WORK/garage$n/garage.toml" "$@"
}

garage_start_node() {
  local n=$1
  "$GARAGE_BIN" -c "$WORK/garage$n/garage.toml" server >>"$WORK/garage$n/log" 2>&1 &
  GARAGE_PIDS[$n]=$!
  PIDS+=("$!")
}

garage_up() {
  garage_install
  local secret n rpc s3 i
  secret=$(openssl rand -hex 32)
  GARAGE_PIDS=()
  GARAGE_ENDPOINTS=()
  GARAGE_RPC=()
  for n in 1 2 3; do
    rpc=$(free_port); s3=$(free_port)
    mkdir -p "$WORK/garage$n/meta" "$WORK/garage$n/data"
    cat >"$WORK/garage$n/garage.toml" <<EOF
metadata_dir = "$WORK/garage$n/meta"
data_dir = "$WORK/garage$n/data"
db_engine = "sqlite"
replication_factor = 3
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"
bootstrap_peers = []

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
EOF
    GARAGE_ENDPOINTS[$n]="http://127.0.0.1:$s3"
    GARAGE_RPC[$n]="127.0.0.1:$rpc"
    garage_start_node "$n"
  done
  GARAGE_ENDPOINT=${GARAGE_ENDPOINTS[1]}
  local ids=()
  for n in 1 2 3; do
    for i in $(seq 1 100); do
      ids[$n]=$(garage_cli "$n" node id -q 2>/dev/null) && break
      sleep 0.1
    done
    [ -n "${ids[$n]:-}" ] || { cat "$WORK/garage$n/log"; fail "garage node $n did not start"; }
  done
  garage_cli 1 node connect "${ids[2]}" >/dev/null || fail "garage: connect node 2"
  garage_cli 1 node connect "${ids[3]}" >/dev/null || fail "garage: connect node 3"
  for n in 1 2 3; do
    garage_cli 1 layout assign -z "dc$n" -c 1G "${ids[$n]%@*}" >/dev/null || fail "garage: assign node $n"
  done
  garage_cli 1 layout apply --version 1 >/dev/null || fail "garage: layout apply"
  GARAGE_KEY_ID=GK$(openssl rand -hex 12)
  GARAGE_SECRET=$(openssl rand -hex 32)
  GARAGE_BUCKET=registry
  garage_cli 1 key import --yes -n registryd "$GARAGE_KEY_ID" "$GARAGE_SECRET" >/dev/null \
    || fail "garage: key import"
  garage_cli 1 bucket create "$GARAGE_BUCKET" >/dev/null || fail "garage: bucket create"
  garage_cli 1 bucket allow --read --write --owner "$GARAGE_BUCKET" --key registryd >/dev/null \
    || fail "garage: bucket allow"
  # Ready when every node answers S3 requests for the bucket (an unsigned request gets 403).
  for n in 1 2 3; do
    for i in $(seq 1 100); do
      code=$(curl -s -o /dev/null -w '%{http_code}' "${GARAGE_ENDPOINTS[$n]}/$GARAGE_BUCKET/") || true
      [ "$code" = 403 ] && break
      sleep 0.1
    done
  done
}

# garage_s3_env [ENDPOINT]: exports registryd's storage settings for this cluster (default: node 1).
garage_s3_env() {
  export REGISTRYD_STORAGE_DRIVER=s3 REGISTRYD_S3_ENDPOINT="${1:-$GARAGE_ENDPOINT}" \
    REGISTRYD_S3_REGION=garage REGISTRYD_S3_BUCKET=$GARAGE_BUCKET REGISTRYD_S3_PATH_STYLE=true \
    REGISTRYD_S3_ACCESS_KEY_ID=$GARAGE_KEY_ID REGISTRYD_S3_SECRET_ACCESS_KEY=$GARAGE_SECRET
}
