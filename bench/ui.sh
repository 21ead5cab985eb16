#!/usr/bin/env bash
# The web UI's pages beside the catalog's first page, at 1,000 / 10,000 / 100,000 repositories.
# A benchmark, not a test: it prints medians and ratios, asserts no time. Not run by CI.
#
#   bench/ui.sh [--runs N] [--sizes 1000,10000,100000] [--keep]
#
# The repositories are written directly on disk in Distribution's layout (as bench/bench.py does
# for its catalog scenario): the first 1,000 (`a/svc0000`...) are small images with three tags,
# two manifests, a layer shared by all of them and layers of their own; `a/svc0000`, the
# repository page measured, has 30 tags on 30 manifests and 10 untagged ones; the rest up to each
# size are `gen/rNNNNNN`, one manifest revision each (cheap to make, and never on the first page).
#
# Two measurements per size:
# 1. Storage calls (bench/summary_bench.rs, on the same root): the catalog's first 100 names;
#    those names with their summaries (the repositories page's facts); a repository page's facts
#    (tags with digests and push times, untagged manifests classified); a census (unique sizes).
# 2. Time to first byte over HTTP (curl, new connection each, registryd serve --dev on
#    127.0.0.1): `/v2/_catalog?n=100`, `/ui/` and `/ui/r/a/svc0000`, once the daemon's census
#    is done. The UI pages are measured when the daemon serves them (`<table id="repositories">`).
# Each figure: the first request after start (registryd's caches empty, the kernel's warm from
# generation), then the median of N more. Binaries: the `quick` profile (opt-level 3, no LTO).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=15
SIZES=1000,10000,100000
KEEP=false
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --sizes) SIZES=$2; shift 2 ;;
    --keep) KEEP=true; shift ;;
    *) echo "usage: $0 [--runs N] [--sizes 1000,10000,100000] [--keep]" >&2; exit 2 ;;
  esac
done
command -v curl >/dev/null || { echo "curl missing: apt-get install curl" >&2; exit 1; }
cargo build --profile quick --quiet --bin registryd --example summary_bench
BIN=$PWD/target/quick/registryd
EX=$PWD/target/quick/examples/summary_bench
WORK=$(mktemp -d /var/tmp/registryd-ui-bench.XXXXXX)
ROOT=$WORK/root
DAEMON=
cleanup() {
  [ -n "$DAEMON" ] && { kill "$DAEMON" 2>/dev/null || true; wait "$DAEMON" 2>/dev/null || true; }
  if $KEEP; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# gen FROM TO: repositories FROM..TO-1 (the first 1,000 are the images, the rest filler).
gen() {
  python3 - "$ROOT" "$1" "$2" <<'PY'
import hashlib, json, os, sys
root, start, end = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
v2 = os.path.join(root, "docker/registry/v2")
def blob(data):
    d = hashlib.sha256(data).hexdigest()
    p = os.path.join(v2, "blobs/sha256", d[:2], d)
    if not os.path.exists(p):
        os.makedirs(p, exist_ok=True)
        open(os.path.join(p, "data"), "wb").write(data)
    return d
def link(path, d):
    os.makedirs(path, exist_ok=True)
    open(os.path.join(path, "link"), "w").write("sha256:" + d)
MT = "application/vnd.oci.image.manifest.v1+json"
base = b"B" * (3 << 20)   # one base layer every image shares, 3 MiB
base_d = blob(base)
def image(repo, n):
    """An image manifest of its own config and layer over the shared base; its digest."""
    r = os.path.join(v2, "repositories", repo)
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "repo": repo, "n": n}).encode()
    layer = (repo + str(n)).encode() * 1000
    cd, ld = blob(cfg), blob(layer)
    m = json.dumps({"schemaVersion": 2, "mediaType": MT,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cd, "size": len(cfg)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + d, "size": s}
                   for d, s in ((base_d, len(base)), (ld, len(layer)))]}).encode()
    md = blob(m)
    for d in (base_d, cd, ld):
        link(os.path.join(r, "_layers/sha256", d), d)
    link(os.path.join(r, "_manifests/revisions/sha256", md), md)
    return md
def tag(repo, t, md):
    r = os.path.join(v2, "repositories", repo, "_manifests/tags", t)
    link(os.path.join(r, "index/sha256", md), md)
    link(os.path.join(r, "current"), md)
filler = json.dumps({"schemaVersion": 2, "mediaType": MT, "config": {"mediaType":
    "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest(),
    "size": 2}, "layers": []}).encode()
filler_d = blob(filler)
for i in range(start, end):
    if i < 1000:
        repo = f"a/svc{i:04d}"
        if i == 0:
            ms = [image(repo, n) for n in range(40)]
            for n in range(30):
                tag(repo, f"v{n + 1}", ms[n])
        else:
            m1, m2 = image(repo, 1), image(repo, 2)
            tag(repo, "v1", m1); tag(repo, "v2", m2); tag(repo, "latest", m2)
    else:
        link(os.path.join(v2, f"repositories/gen/r{i:06d}/_manifests/revisions/sha256", filler_d), filler_d)
PY
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
ttfb() { curl -s -o /dev/null -w '%{time_starttransfer}\n' "$1" | awk '{printf "%.3f\n", $1 * 1000}'; }

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
have=0
STORE_ROWS=()
HTTP_ROWS=()
UI=no
for n in ${SIZES//,/ }; do
  echo "generating up to $n repositories..." >&2
  gen "$have" "$n"
  have=$n
  sleep 3.5  # directories changed in the last 3 s are never trusted by the caches (fs/listing.rs)

  echo "storage calls at $n..." >&2
  json=$("$EX" "$ROOT" "$RUNS" a/svc0000)
  STORE_ROWS+=("$n $json")

  echo "HTTP at $n..." >&2
  REGISTRYD_NODE_HOSTS_FILE=$WORK/hosts "$BIN" serve --dev --listen "127.0.0.1:$PORT" --storage "$ROOT" \
    >"$WORK/daemon-$n.log" 2>&1 &
  DAEMON=$!
  for _ in $(seq 1 100); do curl -sf -o /dev/null "$URL/healthz" && break; sleep 0.1; done
  cat_cold=$(ttfb "$URL/v2/_catalog?n=100")
  ui_cold=$(ttfb "$URL/ui/"); repo_cold=$(ttfb "$URL/ui/r/a/svc0000")
  if curl -s "$URL/ui/" | grep -q 'id="repositories"'; then
    UI=yes
    # The first page started a census: wait for it, so it does not share the cores with the runs.
    for _ in $(seq 1 1200); do grep -q "census of repository sizes" "$WORK/daemon-$n.log" && break; sleep 0.5; done
  else
    UI=no; ui_cold=-; repo_cold=-
  fi
  cat_t=(); ui_t=(); repo_t=()
  for _ in $(seq 1 "$RUNS"); do
    cat_t+=("$(ttfb "$URL/v2/_catalog?n=100")")
    if [ "$UI" = yes ]; then
      ui_t+=("$(ttfb "$URL/ui/")")
      repo_t+=("$(ttfb "$URL/ui/r/a/svc0000")")
    fi
  done
  cat_m=$(printf '%s\n' "${cat_t[@]}" | median)
  if [ "$UI" = yes ]; then
    ui_m=$(printf '%s\n' "${ui_t[@]}" | median); repo_m=$(printf '%s\n' "${repo_t[@]}" | median)
  else
    ui_m=-; repo_m=-
  fi
  HTTP_ROWS+=("$n $cat_cold $cat_m $ui_cold $ui_m $repo_cold $repo_m")
  kill "$DAEMON"; wait "$DAEMON" 2>/dev/null || true; DAEMON=
done

echo
echo "Storage calls, ms (first call on empty caches / median of $RUNS; ratio = median / catalog median)"
python3 - "${STORE_ROWS[@]}" <<'PY'
import json, sys
print(f"{'repos':>7} {'catalog n=100':>15} {'+ 100 summaries':>17} {'ratio':>6} {'repo page facts':>17} {'ratio':>6} {'census':>9}")
for row in sys.argv[1:]:
    n, j = row.split(" ", 1); j = json.loads(j)
    c = j["catalog"]
    print(f"{int(n):>7} {j['catalog_cold']:>7.2f}/{c:<7.2f} {j['summaries_cold']:>8.2f}/{j['summaries']:<8.2f} "
          f"{j['summaries'] / c:>6.1f} {j['repo_cold']:>8.2f}/{j['repo']:<8.2f} {j['repo'] / c:>6.1f} {j['census']:>8.0f}ms")
PY
echo
echo "HTTP time to first byte, ms (first request after start / median of $RUNS; ratio = median / _catalog median)"
python3 - "$UI" "${HTTP_ROWS[@]}" <<'PY'
import sys
ui = sys.argv[1]
print(f"{'repos':>7} {'_catalog?n=100':>16} {'/ui/':>16} {'ratio':>6} {'/ui/r/a/svc0000':>16} {'ratio':>6}")
for row in sys.argv[2:]:
    n, cc, cm, uc, um, rc, rm = row.split()
    r = lambda m: f"{float(m) / float(cm):>6.1f}" if m != "-" else f"{'-':>6}"
    print(f"{int(n):>7} {cc:>7}/{cm:<8} {uc:>7}/{um:<8} {r(um)} {rc:>7}/{rm:<8} {r(rm)}")
if ui != "yes":
    print("(this registryd serves no repositories page at /ui/ yet: only _catalog was measured)")
PY
