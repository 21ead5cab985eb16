#!/usr/bin/env bash
# registryd doctor on a node this test builds in network and mount namespaces of its own
# (169.254.254.254/32 on lo, a scratch hosts file, a cluster CA from `registryd cert init`, storage
# on a tmpfs): every check passes on a good node (exit 0), and each broken piece is named with its
# fix (exit 1): hosts entry, untrusted CA, hostname not covered, expired certificate, certificate
# not valid yet (clock), storage not mounted, storage read-only, address gone, daemon stopped.
# The systemd check runs in the VM test (vm-deb.sh).
if [ -z "${DOCTOR_IN_NS:-}" ]; then
  # The venv first, out here: the namespace below has no network to install it from when this test
  # runs alone (run-all.sh made it already).
  set -euo pipefail
  source "$(dirname "$0")/lib/deps.sh"
  deps_venv || exit 1
  exec env DOCTOR_IN_NS=1 unshare --net --mount --propagation private bash "$0" "$@"
fi
ip link set lo up
ip addr add 169.254.254.254/32 dev lo
source "$(dirname "$0")/lib/common.sh"
ensure_venv

mkdir -p "$WORK/mnt"
mount -t tmpfs -o size=64m tmpfs "$WORK/mnt"
CLEANUPS+=("umount -l '$WORK/mnt'")
mkdir -p "$WORK/mnt/registry"
export REGISTRYD_STORAGE_ROOT=$WORK/mnt/registry REGISTRYD_STORAGE_REQUIRE_MOUNT=$WORK/mnt \
  REGISTRYD_TLS_CERTIFICATE=$WORK/tls/tls.crt REGISTRYD_TLS_KEY=$WORK/tls/tls.key
"$TEST_REGISTRYD_BIN" cert init --ca-dir "$WORK/ca" --hosts registry.home >/dev/null
"$TEST_REGISTRYD_BIN" hosts >/dev/null
# Started by hand, not by start_registryd: doctor checks a daemon on the defaults (node address, TLS).
"$TEST_REGISTRYD_BIN" serve >"$WORK/reg.log" 2>&1 &
REG=$!
PIDS+=("$REG")
for _ in $(seq 1 100); do curl -fs --cacert "$WORK/ca/ca.crt" --resolve registry.home:8443:169.254.254.254 \
  https://registry.home:8443/v2/ >/dev/null && break; sleep 0.1; done

doc() { local rc=0; "$TEST_REGISTRYD_BIN" doctor "$@" >"$WORK/doc.out" 2>&1 || rc=$?; echo "$rc" >"$WORK/doc.rc"; }
expect() { # CHECK VERDICT PATTERN: the report has that line, and a fix under a failure
  grep -qE "^$2 +$1 +.*$3" "$WORK/doc.out" || { cat "$WORK/doc.out"; fail "doctor: no '$2 $1 ... $3' line"; }
  if [ "$2" = FAIL ]; then
    grep -A1 -E "^FAIL +$1 " "$WORK/doc.out" | has "fix: " || { cat "$WORK/doc.out"; fail "doctor: $1 fails without a fix"; }
    [ "$(cat "$WORK/doc.rc")" = 1 ] || fail "doctor exit code $(cat "$WORK/doc.rc") with a failure"
  fi
}

# A good node.
doc --ca "$WORK/ca/ca.crt"
[ "$(cat "$WORK/doc.rc")" = 0 ] || { cat "$WORK/doc.out"; fail "doctor failed on a good node"; }
expect address ok "169.254.254.254 is on lo"
expect hosts ok "maps registry.home to 169.254.254.254"
expect certificate ok "for registry.home.*key matches"
expect clock ok "started"
expect storage ok "on $WORK/mnt \\(tmpfs\\): writable"
expect listener ok "https://registry.home:8443/v2/ answers 200 \\(HTTP/2"
expect systemd skip "does not run systemd"
"$TEST_REGISTRYD_BIN" doctor --json --ca "$WORK/ca/ca.crt" | jq -e 'length >= 7 and all(.[]; .verdict != "fail")' >/dev/null \
  || fail "doctor --json"
pass "good node: $(grep -c '^ok' "$WORK/doc.out") checks ok, exit 0 (and --json)"

# Broken pieces, one at a time.
cp "$REGISTRYD_NODE_HOSTS_FILE" "$WORK/hosts.good"
: >"$REGISTRYD_NODE_HOSTS_FILE"
doc --ca "$WORK/ca/ca.crt"; expect hosts FAIL "does not map registry.home"
cp "$WORK/hosts.good" "$REGISTRYD_NODE_HOSTS_FILE"
doc; expect listener FAIL "certificate|UnknownIssuer"
grep -q "install the CA" "$WORK/doc.out" || fail "no CA hint"
REGISTRYD_NODE_HOSTNAMES=other.home doc --ca "$WORK/ca/ca.crt"; expect certificate FAIL "does not cover other.home"
pass "hosts entry missing, CA not trusted, hostname not covered: each FAIL with its fix, exit 1"

# Certificates from the same CA, expired and not valid yet (a node clock behind).
"$VENV/bin/python" - "$WORK" <<'PYEOF'
import datetime, sys
from cryptography import x509
from cryptography.x509.oid import NameOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
w = sys.argv[1]
ca_key = serialization.load_pem_private_key(open(f"{w}/ca/ca.key", "rb").read(), None)
ca = x509.load_pem_x509_certificate(open(f"{w}/ca/ca.crt", "rb").read())
now = datetime.datetime.now(datetime.timezone.utc)
for name, nb, na in [("expired", now - datetime.timedelta(days=10), now - datetime.timedelta(days=1)),
                     ("future", now + datetime.timedelta(days=2), now + datetime.timedelta(days=30))]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "registry.home")]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(nb).not_valid_after(na)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("registry.home")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    open(f"{w}/{name}.crt", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
    open(f"{w}/{name}.key", "wb").write(key.private_bytes(serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
PYEOF
REGISTRYD_TLS_CERTIFICATE=$WORK/expired.crt REGISTRYD_TLS_KEY=$WORK/expired.key doc --ca "$WORK/ca/ca.crt"
expect certificate FAIL "expire"
REGISTRYD_TLS_CERTIFICATE=$WORK/future.crt REGISTRYD_TLS_KEY=$WORK/future.key doc --ca "$WORK/ca/ca.crt"
grep -qE "^FAIL +(clock|certificate) " "$WORK/doc.out" || { cat "$WORK/doc.out"; fail "a certificate not valid yet passed"; }
pass "expired certificate and one not valid yet: FAIL ($(grep -E '^FAIL +(clock|certificate)' "$WORK/doc.out" | head -1 | cut -c1-90)...)"

# Storage: read-only, then not mounted.
mount -o remount,ro "$WORK/mnt"
doc --ca "$WORK/ca/ca.crt"; expect storage FAIL "cannot write"
mount -o remount,rw "$WORK/mnt"
REGISTRYD_STORAGE_REQUIRE_MOUNT=$WORK/not-a-mount doc --ca "$WORK/ca/ca.crt"; expect storage FAIL "mount"
pass "storage read-only and storage not mounted: FAIL with the fix"

# The daemon stopped, then the address gone (nothing probed off the node).
stop_pid "$REG"
doc --ca "$WORK/ca/ca.crt"; expect listener FAIL "169.254.254.254|registry.home"
grep -q "is registryd running" "$WORK/doc.out" || { cat "$WORK/doc.out"; fail "no hint that the daemon is down"; }
ip addr del 169.254.254.254/32 dev lo
doc --ca "$WORK/ca/ca.crt"; expect address FAIL "on no interface"
expect listener FAIL "not an address of this node"
pass "daemon stopped and address gone: FAIL with 'is registryd running?' and 'registryd setup'"
