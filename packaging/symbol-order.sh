#!/usr/bin/env bash
# Regenerates packaging/symbol-order.txt: the functions a serving registryd runs, which the linker
# places side by side at the front of the binary's code (packaging/link-gcc passes them to lld).
#
# Why: the kernel maps a program's code 64 KiB at a time around each page it touches, and a program
# linked in the compiler's own order has its start-up and request code spread over the whole text, so
# nearly all of it ended up resident (6 MiB of 7.7) in an idle daemon that had answered one request.
# Packed together, the code that runs is a fraction of that. A function missing from the list (new
# code, a renamed dependency) only lands after the listed ones: the file can go stale without harm;
# run this again after large changes, and when the idle RSS in bench/ drifts up.
#
# How: builds the dist profile with symbols, runs it under callgrind through what a node does (start,
# TLS handshakes, a skopeo push and pull, HTTP/1.1 and HTTP/2 GETs and HEADs of manifests and blobs,
# chunked upload, tags list, catalog, delete, SIGHUP reload, SIGTERM drain), and writes every function
# that executed, most executed first. Needs root for nothing; needs valgrind, skopeo, curl, python3, nm.
# Usage: packaging/symbol-order.sh [BINARY]  (BINARY: a dist build with symbols; default: build one)
set -euo pipefail
cd "$(dirname "$0")/.."
out=packaging/symbol-order.txt
for tool in valgrind skopeo curl python3 nm; do
  command -v "$tool" >/dev/null || { echo "symbol-order.sh: $tool is missing (apt-get install $tool)" >&2; exit 1; }
done
work=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

if [ $# -gt 0 ]; then
  # A binary built before, with symbols (what the build below makes).
  cp "$1" "$work/registryd"
else
  # Symbols kept, and the order file left out so the profile sees the compiler's own names.
  REGISTRYD_SYMBOL_ORDER=none cargo rustc -q --profile dist --bin registryd -- -C strip=none
  cp target/dist/registryd "$work/registryd"
  # The shipped binary must not keep the symbols: rebuild it as configured on the way out.
  trap 'cleanup; cargo build -q --profile dist' EXIT
fi

export REGISTRYD_TLS_CERTIFICATE=$work/tls.crt REGISTRYD_TLS_KEY=$work/tls.key
"$work/registryd" cert init --ca-dir "$work/ca" --hosts localhost >/dev/null
mkdir -p "$work/certs.d" && cp "$work/ca/ca.crt" "$work/certs.d/ca.crt"
: >"$work/hosts"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

REGISTRYD_NODE_HOSTS_FILE=$work/hosts REGISTRYD_LOG_LEVEL=warn \
  valgrind --tool=callgrind --demangle=no --dump-instr=no --callgrind-out-file="$work/cg.out" \
  "$work/registryd" serve --listen "127.0.0.1:$port" --storage "$work/data" >"$work/log" 2>&1 &
pid=$!
url=https://localhost:$port
c() { curl -fsS --cacert "$work/ca/ca.crt" "$@"; }
for _ in $(seq 300); do c -o /dev/null "$url/v2/" 2>/dev/null && break; sleep 0.2; done
c -o /dev/null "$url/v2/" || { cat "$work/log"; echo "symbol-order.sh: registryd did not start" >&2; exit 1; }

python3 tests/system/lib/mkimage.py "$work/img" v1 --layer-bytes 2000000 >/dev/null
skopeo --insecure-policy copy -q --dest-cert-dir "$work/certs.d" "oci:$work/img:v1" "docker://localhost:$port/app/one:v1"
skopeo --insecure-policy copy -q --src-cert-dir "$work/certs.d" "docker://localhost:$port/app/one:v1" "dir:$work/pulled"
accept='Accept: application/vnd.oci.image.manifest.v1+json'
for proto in --http1.1 --http2; do
  c "$proto" -o /dev/null -H "$accept" "$url/v2/app/one/manifests/v1"
  c "$proto" -o /dev/null -I -H "$accept" "$url/v2/app/one/manifests/v1"
  for b in "$work/img/blobs/sha256/"*; do
    c "$proto" -o /dev/null "$url/v2/app/one/blobs/sha256:$(basename "$b")"
    c "$proto" -o /dev/null -I "$url/v2/app/one/blobs/sha256:$(basename "$b")"
    c "$proto" -o /dev/null -r 0-99 "$url/v2/app/one/blobs/sha256:$(basename "$b")"
  done
  c "$proto" -o /dev/null "$url/v2/app/one/tags/list"
  c "$proto" -o /dev/null "$url/v2/_catalog?n=10"
  c "$proto" -o /dev/null "$url/v2/app/one/referrers/sha256:$(printf x | sha256sum | cut -d' ' -f1)" || true
  c "$proto" -o /dev/null "$url/v2/app/none/manifests/v1" 2>/dev/null || true
done
# A chunked upload and a delete, through the API.
head -c 300000 /dev/urandom >"$work/blob"
d=sha256:$(sha256sum <"$work/blob" | cut -d' ' -f1)
loc=$(c -X POST -D - -o /dev/null "$url/v2/app/two/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
loc=$(head -c 150000 "$work/blob" | c -X PATCH -D - -o /dev/null -H 'Content-Type: application/octet-stream' \
  -H 'Content-Range: 0-149999' --data-binary @- "$url$loc" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
tail -c 150000 "$work/blob" | c -X PATCH -o /dev/null -H 'Content-Type: application/octet-stream' \
  -H 'Content-Range: 150000-299999' --data-binary @- "$url$loc"
case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
c -X PUT -o /dev/null "$url$loc${sep}digest=$d"
c -X DELETE -o /dev/null "$url/v2/app/two/blobs/$d" || true
kill -HUP "$pid"; sleep 3
c -o /dev/null "$url/v2/"
kill -TERM "$pid"; wait "$pid" || true; pid=""

# callgrind names an object or function once in full ("ob=(N) path", "fn=(N) name"), then by
# number. Self cost lines ("LINE COST", LINE maybe +N, -N or *) follow a fn line; the line after a
# "calls=" line is the callee's inclusive cost, not the caller's own, and is skipped.
python3 - "$work/cg.out" "$out" "$work/registryd" <<'EOF'
import re, sys, collections
cg, out, binary = sys.argv[1:4]
names, objs, cost = {}, {}, collections.Counter()
cur, ours, skip = None, False, False
for line in open(cg, errors="replace"):
    m = re.match(r"(c?)(ob|fn)=\((\d+)\)(?: (.*))?", line)
    if m:
        table = objs if m.group(2) == "ob" else names
        if m.group(4):
            table[m.group(3)] = m.group(4).strip()
        if not m.group(1):
            if m.group(2) == "ob":
                ours = objs.get(m.group(3)) == binary
            else:
                cur = names.get(m.group(3)) if ours else None
        continue
    if line.startswith("calls="):
        skip = True
        continue
    if line[:1] in "0123456789+-*":
        if skip:
            skip = False
        elif cur:
            parts = line.split()
            if len(parts) >= 2:
                cost[cur] += int(parts[1])
order = [n for n, c in cost.most_common() if c > 0 and not n.startswith("0x")]
with open(out, "w") as f:
    f.write("\n".join(order) + "\n")
EOF
# valgrind has no AVX-512, so the profile ran aws-lc's AVX2 code where AVX-512 machines run the
# AVX-512 variants (AES-GCM's are 340 KB each): list those too, after the rest.
nm --defined-only "$work/registryd" | awk '$3 ~ /avx512/ {print $3}' | sort >>"$out"
# Names without their build-specific hashes (packaging/symbol-key.awk), each once.
awk -f packaging/symbol-key.awk -v mode=key "$out" | awk '!seen[$0]++' >"$work/keys"
mv "$work/keys" "$out"
echo "symbol-order.sh: $(wc -l <"$out") functions listed in $out"
