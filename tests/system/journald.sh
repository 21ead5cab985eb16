#!/usr/bin/env bash
# When JOURNAL_STREAM says stderr is the journal, registryd logs to journald natively with
# structured, unprefixed fields (METHOD, STATUS, REPOSITORY, DIGEST, ...): checked against a stand-in
# journald socket bind-mounted over /run/systemd/journal in a private mount namespace, so the
# machine's real journal (if any) is never touched.
source "$(dirname "$0")/lib/common.sh"

J=$WORK/journal
mkdir -p "$J"
python3 "$SYS_DIR/lib/journal_listen.py" "$J/socket" "$WORK/entries.jsonl" &
PIDS+=("$!")
wait_file "$J/socket.bound" || fail "test listener did not start"
PORT=$(free_port)
# Started by hand, not by start_registryd: stderr must be the file JOURNAL_STREAM names, in a mount
# namespace with the stand-in journal socket, from the start.
cat >"$WORK/run.sh" <<SH
mkdir -p /run/systemd/journal
mount --bind "$J" /run/systemd/journal
exec 2>"$WORK/stderr"
export JOURNAL_STREAM=\$(stat -L -c '%d:%i' /proc/self/fd/2)
exec "$TEST_REGISTRYD_BIN" serve --plain-http --listen 127.0.0.1:$PORT --storage "$WORK/data"
SH
unshare -m --propagation private bash "$WORK/run.sh" &
REG_PID=$!
PIDS+=("$REG_PID")
wait_http "http://127.0.0.1:$PORT/v2/" || { cat "$WORK/stderr"; fail "registryd did not start"; }
b="journald test blob"
D=sha256:$(printf '%s' "$b" | sha256sum | cut -d' ' -f1)
curl -fs -X POST --data-binary "$b" "http://127.0.0.1:$PORT/v2/jtest/app/blobs/uploads/?digest=$D" >/dev/null
curl -fs "http://127.0.0.1:$PORT/v2/jtest/app/blobs/$D" >/dev/null
# Pushes name what they stored (the path holds a tag or an upload id, not the digest): an upload
# finished by PUT, and a manifest pushed by tag.
b2="journald test blob 2"
D2=sha256:$(printf '%s' "$b2" | sha256sum | cut -d' ' -f1)
loc=$(curl -fsi -X POST "http://127.0.0.1:$PORT/v2/jtest/app/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
curl -fs -X PATCH --data-binary "$b2" -H 'Content-Type: application/octet-stream' "http://127.0.0.1:$PORT$loc" >/dev/null
sep='?'; case $loc in *\?*) sep='&' ;; esac
curl -fs -X PUT "http://127.0.0.1:$PORT$loc${sep}digest=$D2" >/dev/null
printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}' >"$WORK/config.json"
DC=sha256:$(sha256sum <"$WORK/config.json" | cut -d' ' -f1)
curl -fs -X POST --data-binary @"$WORK/config.json" "http://127.0.0.1:$PORT/v2/jtest/app/blobs/uploads/?digest=$DC" >/dev/null
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[]}' \
  "$DC" "$(stat -c %s "$WORK/config.json")" >"$WORK/manifest.json"
DM=sha256:$(sha256sum <"$WORK/manifest.json" | cut -d' ' -f1)
curl -fs -X PUT -H 'Content-Type: application/vnd.oci.image.manifest.v1+json' --data-binary @"$WORK/manifest.json" \
  "http://127.0.0.1:$PORT/v2/jtest/app/manifests/v1" >/dev/null
sleep 0.5
kill "$REG_PID"; wait "$REG_PID" 2>/dev/null || true

python3 - "$WORK/entries.jsonl" "$D" "$D2" "$DM" <<'PY' || fail "journal entries"
import json, sys
entries = [json.loads(l) for l in open(sys.argv[1])]
assert entries, "nothing reached the journal socket"
reqs = [e for e in entries if e.get("MESSAGE") == "request" and e.get("METHOD") == "GET" and e.get("REPOSITORY") == "jtest/app"]
assert reqs, f"no access-log entry with structured fields: {entries[-3:]}"
r = reqs[-1]
for k in ("METHOD", "STATUS", "BYTES", "DURATION_MS", "CLIENT", "REPOSITORY", "DIGEST", "PRIORITY"):
    assert k in r, f"field {k} missing: {r}"
assert r["STATUS"] == "200" and r["DIGEST"] == sys.argv[2], r
def pushed(method, path_part):
    return [e for e in entries if e.get("MESSAGE") == "request" and e.get("METHOD") == method
            and path_part in e.get("PATH", "") and e.get("STATUS") == "201"]
for method, part, digest in (("POST", "/blobs/uploads/", sys.argv[2]), ("PUT", "/blobs/uploads/", sys.argv[3]),
                             ("PUT", "/manifests/v1", sys.argv[4])):
    got = pushed(method, part)
    assert got, f"no 201 entry for {method} {part}"
    assert got[0].get("DIGEST") == digest, f"{method} {part}: DIGEST={got[0].get('DIGEST')!r}, stored {digest}"
assert not any(k.startswith("F_") for e in entries for k in e), "F_ field prefix present"
print(f"{len(entries)} journal entries; access log: " + " ".join(f"{k}={r[k]}" for k in ("METHOD","STATUS","REPOSITORY","BYTES")))
PY
[ ! -s "$WORK/stderr" ] || ! grep -q "request" "$WORK/stderr" || fail "logs went to stderr as well as the journal"
pass "journald: native entries with unprefixed structured fields; pushes log the stored digest"
