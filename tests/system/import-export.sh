#!/usr/bin/env bash
# registryd import / export with real archives: `docker save` of the Docker engine (legacy layout),
# skopeo's oci-archive (multi-platform, gzip'ed too), an OCI layout directory, skopeo's
# docker-archive, and Docker 25+'s layout (OCI layout plus manifest.json, assembled here: the
# engine on this machine is 20.10). Imported while registryd runs; served digests equal the
# archive's; docker pulls the imported docker save. Export goes back through import, skopeo and
# docker load. Bad archives get a clear error and leave nothing visible.
source "$(dirname "$0")/lib/common.sh"

P=$(free_port)
R=127.0.0.1:$P
DATA=$WORK/data
start_registryd reg "$P" "$DATA"
imp() { "$TEST_REGISTRYD_BIN" import --storage "$DATA" "$@"; }
SK="skopeo --insecure-policy"
raw_digest() { $SK inspect --tls-verify=false --raw "docker://$R/$1" | sha256sum | cut -d' ' -f1; }

python3 "$SYS_DIR/lib/mkimage.py" "$WORK/multi" v1 --arch amd64 --arch arm64 --layer-bytes 300000 --seed multi >/dev/null
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/single" v1 --layer-bytes 200000 --seed single >/dev/null
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/tool" v2 --layer-bytes 100000 --seed tool >/dev/null
MULTI=$(jq -r '.manifests[0].digest' "$WORK/multi/index.json")

# --- OCI layout directory, oci-archive tarball, gzip'ed tarball.
out=$(imp --repo oci/dir "$WORK/multi") || fail "import of an OCI layout directory"
grep -q "^oci/dir:v1 $MULTI$" <<<"$out" || fail "import printed: $out"
[ "sha256:$(raw_digest oci/dir:v1)" = "$MULTI" ] || fail "served index digest differs from the archive's"
$SK copy -q --all oci:"$WORK/multi":v1 oci-archive:"$WORK/multi.tar":v1
gzip -k "$WORK/multi.tar"
imp --repo oci/tar "$WORK/multi.tar" >/dev/null || fail "import of an oci-archive"
imp --repo oci/targz "$WORK/multi.tar.gz" >/dev/null || fail "import of a gzip'ed oci-archive"
for r in oci/tar oci/targz; do
  [ "sha256:$(raw_digest "$r:v1")" = "$MULTI" ] || fail "$r: digest changed"
done
$SK copy -q --all --src-tls-verify=false "docker://$R/oci/targz:v1" "oci:$WORK/back:v1" || fail "pull of the imported index"
for f in "$WORK"/multi/blobs/sha256/*; do
  cmp -s "$f" "$WORK/back/blobs/sha256/$(basename "$f")" || fail "blob $(basename "$f") differs after import"
done
pass "OCI layout directory, oci-archive and .tar.gz: index $MULTI served unchanged, both platforms pull byte-identical"

# A tag-only ref name and no --repo: told what to pass; nothing stored.
err=$(imp "$WORK/multi.tar" 2>&1) && fail "import without a repository name succeeded"
grep -q -- "--repo" <<<"$err" || fail "no hint at --repo: $err"
again=$(imp --repo oci/tar "$WORK/multi.tar") || fail "second import"
grep -q "0 blobs stored (0 bytes), [1-9][0-9]* already present" <<<"$again" || fail "re-import stored again: $again"
pass "tag-only archive without --repo: '$err'; re-import stores nothing new"

# --- Docker engine: a real `docker save` (legacy layout on Docker 20.10).
start_dockerd
$SK copy -q oci:"$WORK/single":v1 docker-archive:"$WORK/to-docker.tar":src/app:v1
$DOCKER load -q -i "$WORK/to-docker.tar" >/dev/null || fail "docker load of the fixture"
$DOCKER save -o "$WORK/saved.tar" src/app:v1 || fail "docker save"
tar -tf "$WORK/saved.tar" | has '/layer.tar$' || fail "docker save did not write the legacy layout: $(tar -tf "$WORK/saved.tar" | tr '\n' ' ')"
ID=$($DOCKER image inspect -f '{{.Id}}' src/app:v1)
out=$(imp "$WORK/saved.tar") || fail "import of docker save"
grep -q "^src/app:v1 sha256:" <<<"$out" || fail "docker save import printed: $out"
$DOCKER rmi -f src/app:v1 >/dev/null
$DOCKER pull -q "$R/src/app:v1" >/dev/null || fail "docker pull of the imported docker save"
[ "$($DOCKER image inspect -f '{{.Id}}' "$R/src/app:v1")" = "$ID" ] || fail "image ID changed through save/import/pull"
pass "docker save (legacy layout) imported; docker pull gives the same image ID $ID"

# skopeo's docker-archive (legacy layout, its own file names).
$SK copy -q oci:"$WORK/tool":v2 docker-archive:"$WORK/skopeo-legacy.tar":tools/tool:v2
imp "$WORK/skopeo-legacy.tar" >/dev/null || fail "import of skopeo's docker-archive"
$SK copy -q --src-tls-verify=false "docker://$R/tools/tool:v2" "oci:$WORK/tool-back:v2" || fail "pull of the imported docker-archive"

# Docker 25+: OCI layout with io.containerd.image.name, plus manifest.json naming blobs/.
python3 - "$WORK/tool" "$WORK/d25" <<'PYEOF'
import json, os, shutil, sys
src, out = sys.argv[1:]
shutil.copytree(src, out)
idx = json.load(open(f"{out}/index.json"))
d = idx["manifests"][0]
d["annotations"] = {"io.containerd.image.name": "docker.io/library/tool:2.0", "org.opencontainers.image.ref.name": "2.0"}
json.dump(idx, open(f"{out}/index.json", "w"))
m = json.load(open(f"{out}/blobs/sha256/{d['digest'][7:]}"))
json.dump([{"Config": "blobs/sha256/" + m["config"]["digest"][7:], "RepoTags": ["tool:2.0"],
            "Layers": ["blobs/sha256/" + l["digest"][7:] for l in m["layers"]]}], open(f"{out}/manifest.json", "w"))
json.dump({"library/tool": {"2.0": d["digest"][7:]}}, open(f"{out}/repositories", "w"))
PYEOF
tar -C "$WORK/d25" -cf "$WORK/d25.tar" .
TOOL=$(jq -r '.manifests[0].digest' "$WORK/tool/index.json")
out=$(imp "$WORK/d25.tar") || fail "import of a Docker 25+ archive"
grep -q "^library/tool:2.0 $TOOL$" <<<"$out" || fail "Docker 25+ import printed: $out"
pass "skopeo docker-archive and the Docker 25+ layout (named by io.containerd.image.name, digest $TOOL kept)"

# --- Damaged archives: a clear error, nothing visible.
head -c $(( $(stat -c %s "$WORK/multi.tar") / 2 )) "$WORK/multi.tar" >"$WORK/cut.tar"
err=$(imp --repo broken/cut "$WORK/cut.tar" 2>&1) && fail "a truncated archive imported"
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$R/v2/broken/cut/tags/list")" = 404 ] || fail "a truncated archive left a repository"
echo "not an archive" >"$WORK/junk.txt"
err2=$(imp "$WORK/junk.txt" 2>&1) && fail "a text file imported"
pass "truncated tarball refused ('$(tail -1 <<<"$err")'), nothing visible; junk refused ('$err2')"

# --- Export: back through import (fresh storage), skopeo, docker load.
EXP="$TEST_REGISTRYD_BIN export --storage $DATA"
$EXP -o "$WORK/out.tar" oci/dir:v1 src/app:v1 "library/tool@$TOOL" >"$WORK/export.out" || fail "export"
grep -q "exported 3 images" "$WORK/export.out" || fail "export printed: $(cat "$WORK/export.out")"
out=$("$TEST_REGISTRYD_BIN" import --storage "$WORK/data2" "$WORK/out.tar") || fail "import of an export"
grep -q "^oci/dir:v1 $MULTI$" <<<"$out" && grep -q "^src/app:v1 " <<<"$out" && grep -q "^library/tool@$TOOL$" <<<"$out" \
  || fail "re-import printed: $out"
$EXP -o "$WORK/out.tar.gz" oci/dir:v1 >/dev/null || fail "export .tar.gz"
gzip -t "$WORK/out.tar.gz" || fail "export .tar.gz is not gzip"
out=$("$TEST_REGISTRYD_BIN" import --storage "$WORK/data3" "$WORK/out.tar.gz") || fail "import of a gzip'ed export"
grep -q "^oci/dir:v1 $MULTI$" <<<"$out" || fail "gzip re-import printed: $out"
$DOCKER rmi -f "$R/src/app:v1" >/dev/null
$EXP -o "$WORK/app.tar" src/app:v1 >/dev/null || fail "export of src/app"
$DOCKER load -i "$WORK/app.tar" >/dev/null || fail "docker load of an export"
[ "$($DOCKER image inspect -f '{{.Id}}' src/app:v1)" = "$ID" ] || fail "docker load of the export: another image ID"
$SK copy -q "oci-archive:$WORK/app.tar:v1" "oci:$WORK/app-oci:v1" || fail "skopeo read of the export"
err=$($EXP -o "$WORK/none.tar" nothing/here:v1 2>&1) && fail "export of a missing image succeeded"
[ ! -e "$WORK/none.tar" ] || fail "a failed export left a file"
pass "export: re-imported with digests kept, docker load gives image $ID, skopeo reads it; missing ref: '$err'"
