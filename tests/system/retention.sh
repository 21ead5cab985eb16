#!/usr/bin/env bash
# Retention rules and immutable tags with real clients: skopeo pushes a series of CI tags whose push
# and pull times are then set through the timestamps storage keeps (link and stamp mtimes, never by
# sleeping); `registryd gc --dry-run --json` names what goes and why, and the real pass removes
# exactly that. The Docker engine pushes a release tag twice (fine), then a moved one (refused with
# the rule's message); deleting it is refused; `registryd untag --force` removes it, logged.
source "$(dirname "$0")/lib/common.sh"

command -v skopeo >/dev/null || fail "skopeo missing: apt-get install skopeo"
command -v dockerd >/dev/null || fail "dockerd missing: apt-get install docker.io"
PORT=$(free_port)
DATA=$WORK/data
start_registryd retention "$PORT" "$DATA" - <<'EOF'
[gc]
interval_secs = 0
grace_secs = 600
[[retention]]
repositories = "ci/**"
keep_tags = ["latest"]
keep_last = 2
keep_pushed_within_days = 30
keep_pulled_within_days = 14
untagged_after_days = 2
[[immutable]]
repositories = "**"
tags = ["v*", "release-*"]
EOF
R=127.0.0.1:$PORT
REPOS=$DATA/docker/registry/v2/repositories

# tag, days since pushed
series="latest:400 c1:3 c2:5 c3:40 c4:50 c5:60 c6:70"
for entry in $series; do
  tag=${entry%%:*}
  python3 "$SYS_DIR/lib/mkimage.py" "$WORK/img-$tag" "$tag" --seed "$tag" --layer-bytes 5000 >/dev/null
  skopeo --insecure-policy copy --quiet --dest-tls-verify=false "oci:$WORK/img-$tag:$tag" "docker://$R/ci/app:$tag" \
    || fail "skopeo push ci/app:$tag"
done
# The digest skopeo pushed, from the layout it pushed (a HEAD by tag would count as a pull).
digest_of() { jq -r '.manifests[0].digest' "$WORK/img-$2/index.json"; }
# Everything stored a while ago (so GC's grace protects none of it), then each tag's own times.
find "$DATA/docker" -type f -exec touch -d '-100 days' {} +
for entry in $series; do
  tag=${entry%%:*} days=${entry##*:}
  d=$(digest_of ci/app "$tag")
  touch -d "-$days days" "$REPOS/ci/app/_manifests/tags/$tag/current/link" \
    "$REPOS/ci/app/_manifests/revisions/sha256/${d#sha256:}/link"
done
# c4 was pulled (by skopeo, through the daemon) and that pull dated 3 days back: kept by
# keep_pulled_within_days. c5's pull, 20 days back, does not keep it.
for tag in c4 c5; do
  skopeo --insecure-policy copy --quiet --src-tls-verify=false "docker://$R/ci/app:$tag" "oci:$WORK/pulled:$tag" \
    || fail "skopeo pull ci/app:$tag"
done
stamp() { # the pull record of repo@digest: registryd/proxy/pulled/<2 hex>/<sha256 of the key>
  local h; h=$(printf '%s' "$1@$2" | sha256sum | cut -d' ' -f1)
  echo "$DATA/registryd/proxy/pulled/${h:0:2}/$h"
}
for entry in c4:3 c5:20; do
  tag=${entry%%:*} days=${entry##*:}
  s=$(stamp ci/app "$(digest_of ci/app "$tag")")
  wait_file "$s" || fail "no pull record for ci/app:$tag at $s"
  touch -d "-$days days" "$s"
done
pass "7 tags pushed with skopeo, push and pull times set through storage's timestamps"

"$TEST_REGISTRYD_BIN" gc --config "$REG_CONFIG" --dry-run --json >"$WORK/dry.json" 2>"$WORK/dry.err" \
  || { cat "$WORK/dry.err"; fail "gc --dry-run"; }
"$TEST_REGISTRYD_BIN" gc --config "$REG_CONFIG" --dry-run >"$WORK/dry.txt" 2>&1 || fail "gc --dry-run (text)"
python3 - "$WORK/dry.json" <<'EOF' || { cat "$WORK/dry.txt"; fail "the dry run's decisions"; }
import json, sys
r = json.load(open(sys.argv[1]))
[repo] = r["retention"]
gone = sorted(t["tag"] for t in repo["removed"])
assert gone == ["c3", "c5", "c6"], gone
kept = {t["tag"]: "; ".join(t["reasons"]) for t in repo["kept"]}
assert "keep_tags \"latest\"" in kept["latest"], kept
assert "keep_last = 2" in kept["c1"] and "keep_last = 2" in kept["c2"], kept
assert "keep_pulled_within_days = 14" in kept["c4"], kept
c5 = next(t for t in repo["removed"] if t["tag"] == "c5")["reasons"][0]
assert "last pulled 20 days ago" in c5 and "retention rule 1" in c5, c5
assert r["tags_removed"] == 3 and r["manifests_removed"] == 3, r
EOF
grep -q '^  would untag c6  sha256:' "$WORK/dry.txt" || { cat "$WORK/dry.txt"; fail "dry run text names c6"; }
[ "$(curl -fs "http://$R/v2/ci/app/tags/list" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["tags"]))')" = 7 ] \
  || fail "the dry run removed something"
pass "gc --dry-run: would untag c3 c5 c6 (each with the facts), keeps latest, c1, c2, c4 (each with its rule)"

"$TEST_REGISTRYD_BIN" gc --config "$REG_CONFIG" --json >"$WORK/real.json" 2>"$WORK/real.err" \
  || { cat "$WORK/real.err"; fail "gc"; }
python3 - "$WORK/dry.json" "$WORK/real.json" <<'EOF' || fail "the real pass differs from the dry run"
import json, sys
dry, real = (json.load(open(p)) for p in sys.argv[1:3])
for k in ("tags_removed", "manifests_removed", "blobs_removed", "bytes_freed"):
    assert dry[k] == real[k], (k, dry[k], real[k])
assert dry["retention"][0]["removed"] == real["retention"][0]["removed"]
assert real["blobs_removed"] > 0, real
EOF
left=$(curl -fs "http://$R/v2/ci/app/tags/list" | python3 -c 'import json,sys; print(" ".join(sorted(json.load(sys.stdin)["tags"])))')
[ "$left" = "c1 c2 c4 latest" ] || fail "tags left: $left"
for tag in c1 c2 c4 latest; do
  skopeo --insecure-policy copy --quiet --src-tls-verify=false "docker://$R/ci/app:$tag" "oci:$WORK/after:$tag" \
    || fail "kept tag $tag does not pull"
done
freed=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["blobs_removed"], r["bytes_freed"])' "$WORK/real.json")
pass "gc: removed what the dry run named (3 tags, 3 manifests, blobs/bytes freed: $freed); kept tags pull with skopeo"

# --- Immutable tags through the Docker engine.
start_dockerd
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/rel1" v1 --seed rel-one --layer-bytes 3000 >/dev/null
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/rel2" v1 --seed rel-two --layer-bytes 3000 >/dev/null
skopeo --insecure-policy copy --quiet --dest-tls-verify=false "oci:$WORK/rel1:v1" "docker://$R/seed/one:v1"
skopeo --insecure-policy copy --quiet --dest-tls-verify=false "oci:$WORK/rel2:v1" "docker://$R/seed/two:v1"
$DOCKER pull -q "$R/seed/one:v1" >/dev/null && $DOCKER pull -q "$R/seed/two:v1" >/dev/null || fail "docker pull seeds"
$DOCKER tag "$R/seed/one:v1" "$R/rel/app:v1.0"
$DOCKER push -q "$R/rel/app:v1.0" >/dev/null || fail "first push of an immutable tag"
$DOCKER push -q "$R/rel/app:v1.0" >/dev/null || fail "the same push again (a CI retry) must succeed"
$DOCKER tag "$R/seed/two:v1" "$R/rel/app:v1.0"
if $DOCKER push "$R/rel/app:v1.0" >"$WORK/moved.out" 2>&1; then fail "docker push moved an immutable tag"; fi
grep -q 'rel/app:v1.0 is immutable (immutable rule 1' "$WORK/moved.out" || { cat "$WORK/moved.out"; fail "docker's error lacks the rule"; }
pass "docker push: an immutable tag pushes twice, and moving it fails with: $(grep -o 'tag rel/app:v1.0 is immutable[^:]*' "$WORK/moved.out" | head -1)"

code=$(curl -s -o "$WORK/del.json" -w '%{http_code}' -X DELETE "http://$R/v2/rel/app/manifests/v1.0")
[ "$code" = 409 ] && grep -q '"DENIED"' "$WORK/del.json" || fail "DELETE of an immutable tag: $code $(cat "$WORK/del.json")"
if "$TEST_REGISTRYD_BIN" untag --config "$REG_CONFIG" rel/app:v1.0 2>"$WORK/untag.err"; then fail "untag without --force"; fi
grep -q 'add --force' "$WORK/untag.err" || fail "untag refusal: $(cat "$WORK/untag.err")"
"$TEST_REGISTRYD_BIN" untag --config "$REG_CONFIG" --force rel/app:v1.0 >"$WORK/untag.out" || fail "untag --force"
grep -q 'untagged rel/app:v1.0 despite immutable rule 1' "$WORK/untag.out" || fail "untag output: $(cat "$WORK/untag.out")"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$R/v2/rel/app/manifests/v1.0")" = 404 ] || fail "tag still there"
pass "DELETE refused with 409 DENIED; registryd untag refuses without --force and removes with it"
