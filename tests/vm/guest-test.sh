#!/bin/bash
# Runs inside the Debian VM (real systemd) as root; the host share is /mnt/host. Exercises the .deb's
# whole life cycle. Prints one line per stage with its elapsed time; exits non-zero on the first failure.
set -u  # no pipefail: `... | grep -q` closes the pipe early by design
S=/mnt/host
T0=$(date +%s)
stage() { echo "== [$(( $(date +%s) - T0 ))s] $*"; }
fail() { echo "FAIL: $*"; systemctl status registryd --no-pager -l 2>&1 | tail -20; journalctl -u registryd --no-pager -n 30; exit 1; }
poll() { for _ in $(seq 1 100); do eval "$1" && return 0; sleep 0.2; done; return 1; }
export DEBIAN_FRONTEND=noninteractive

stage "1. fresh install without a certificate"
out=$(apt-get install -y "$S/registryd.deb" 2>&1) || { echo "$out"; fail "apt-get install"; }
echo "$out" | grep -q "will not serve yet" || { echo "$out"; fail "install did not explain why it does not serve"; }
echo "$out" | grep -q "registryd cert init" || fail "install message does not say what to do"
[ "$(systemctl is-enabled registryd)" = enabled ] || fail "not enabled"
systemctl is-failed --quiet registryd && fail "a fresh install without a certificate left a failed unit"
poll 'journalctl -u registryd --no-pager | grep -q "no usable TLS certificate"' || fail "journal does not say what to do"
systemctl status registryd --no-pager 2>&1 | grep -qE "no usable TLS certificate|start condition" || fail "systemctl status does not show why"
[ -d /var/lib/registryd ] && [ "$(stat -c %a /var/lib/registryd)" = 750 ] || fail "storage directory mode"
[ "$(stat -c %a /etc/registryd/tls)" = 750 ] || fail "tls directory mode"

stage "2. certificate, hostname, enable --now"
install -m 0644 "$S/tls1/tls.crt" /etc/registryd/tls/tls.crt
install -m 0600 "$S/tls1/tls.key" /etc/registryd/tls/tls.key
sed -i 's/^hostnames = .*/hostnames = ["registry.home"]/' /etc/registryd/config.toml
for d in /etc/docker/certs.d/registry.home:8443 /etc/containers/certs.d/registry.home:8443; do
  mkdir -p "$d"; cp "$S/ca/ca.crt" "$d/ca.crt"
done
cp "$S/ca/ca.crt" /usr/local/share/ca-certificates/registryd-test.crt && update-ca-certificates >/dev/null
systemctl enable --now registryd || fail "enable --now"
[ "$(systemctl is-active registryd)" = active ] || fail "not active after enable --now"
systemctl show -p StatusText registryd | grep -q "serving on 169.254.254.254:8443" || fail "no STATUS line: $(systemctl show -p StatusText registryd)"

stage "3. link, hosts, skopeo push, docker pull, catalog"
ip -o addr show dev registry0 | grep -q "169.254.254.254/32" || fail "registry0 with 169.254.254.254/32 missing: $(ip -o addr)"
ip -d link show registry0 | grep -q dummy || fail "registry0 is not a dummy link"
grep -qP "^169\.254\.254\.254\tregistry\.home$" /etc/hosts || fail "hosts entry missing: $(cat /etc/hosts)"
skopeo --insecure-policy copy --quiet "oci:$S/img:v1" docker://registry.home:8443/vm/img:v1 || fail "skopeo push"
systemctl is-active --quiet docker || systemctl start docker || fail "dockerd does not start in the VM"
docker pull -q registry.home:8443/vm/img:v1 >/dev/null || fail "docker pull"
curl -fsS https://registry.home:8443/v2/_catalog | grep -q '"vm/img"' || fail "catalog"
# The installed node, as registryd doctor sees it: every check passes, systemd included.
registryd doctor >"$S/out/doctor.txt" 2>&1 || { cat "$S/out/doctor.txt"; fail "registryd doctor on the installed node"; }
grep -qE "^ok +systemd +registryd.service is active and enabled" "$S/out/doctor.txt" || { cat "$S/out/doctor.txt"; fail "doctor: systemd line"; }
grep -qE "^ok +listener +https://registry.home:8443/v2/ answers 200" "$S/out/doctor.txt" || { cat "$S/out/doctor.txt"; fail "doctor: listener line"; }
systemctl stop registryd
registryd doctor >"$S/out/doctor-stopped.txt" 2>&1 && fail "doctor passed with the service stopped"
grep -qE "^FAIL +systemd +registryd.service is inactive" "$S/out/doctor-stopped.txt" || { cat "$S/out/doctor-stopped.txt"; fail "doctor: stopped service not named"; }
systemctl start registryd || fail "start after the doctor check"
poll 'curl -fsS -o /dev/null https://registry.home:8443/v2/' || fail "not serving after the restart"

stage "4. certificate rotation without systemctl, then reload with a new hostname"
cp "$S/tls2/tls.crt" /etc/registryd/tls/.tls.crt.new && cp "$S/tls2/tls.key" /etc/registryd/tls/.tls.key.new
mv /etc/registryd/tls/.tls.key.new /etc/registryd/tls/tls.key && mv /etc/registryd/tls/.tls.crt.new /etc/registryd/tls/tls.crt
want=$(cat "$S/tls2/serial")
served() { curl -s -o /dev/null -w '%{certs}' https://registry.home:8443/v2/ | sed -n 's/^Serial Number://p' | head -1 | tr -d ':' | tr 'A-F' 'a-f'; }
poll '[ "$(served)" = "$want" ]' || fail "rotated certificate not served"
sed -i 's/^hostnames = .*/hostnames = ["registry.home", "mirror.home"]/' /etc/registryd/config.toml
systemctl reload registryd || fail "reload"
poll 'grep -qP "^169\.254\.254\.254\tmirror\.home$" /etc/hosts' || fail "reload did not add mirror.home to /etc/hosts"

stage "5. journal fields"
journalctl -u registryd -o json --no-pager | grep '"MESSAGE":"request"' | grep '"REPOSITORY":"vm/img"' | grep -q '"METHOD":"PUT"' \
  || fail "no structured access-log entries in the journal"

stage "6. SIGKILL: systemd restarts it"
old=$(systemctl show -p MainPID --value registryd)
kill -9 "$old"
poll '[ "$(systemctl show -p MainPID --value registryd)" != "$old" ] && [ "$(systemctl is-active registryd)" = active ]' || fail "not restarted after SIGKILL"
poll 'curl -fsS -o /dev/null https://registry.home:8443/v2/' || fail "not serving after the restart"
skopeo --insecure-policy inspect --raw docker://registry.home:8443/vm/img:v1 >/dev/null || fail "image gone after the restart"

stage "7. hardening figure, stop, purge"
systemd-analyze security registryd.service --no-pager 2>/dev/null | tail -1 | tee "$S/out/security.txt"
systemctl stop registryd
state=$(systemctl is-active registryd); [ "$state" = inactive ] || fail "after stop: $state"
systemctl is-failed --quiet registryd && fail "stop left a failed unit"
apt-get purge -y registryd >/dev/null 2>&1 || fail "purge"
grep -q "registryd managed block" /etc/hosts && fail "purge left the hosts block"
[ -e /etc/registryd ] && fail "purge left /etc/registryd"
[ -n "$(find /var/lib/registryd -name data -path '*blobs*' | head -1)" ] || fail "purge removed the registry data"
stage "all stages passed"
