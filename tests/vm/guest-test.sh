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

# Upgrade and downgrade (issue 26): the previous release ($S/old.deb, built by the host from the
# pinned commit in tests/vm/prev-release.sh) and this build ($S/registryd.deb), each `apt-get
# install`ed over the other with images stored and a chunked upload half done. $S/versions holds
# both package versions, $S/old.sha256 and $S/new.sha256 their /usr/bin/registryd.
read -r OLD_VERSION NEW_VERSION <"$S/versions"
R=https://registry.home:8443
version() { dpkg-query -W -f='${Version}' registryd; }
# up_start REPO FILE BYTES: POST, then one PATCH of FILE's first BYTES; prints the upload's URL.
up_start() {
  local loc code
  loc=$(curl -sS -D - -o /dev/null -X POST "$R/v2/$1/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
  [ -n "$loc" ] || fail "POST $1: no Location"
  case $loc in /*) loc=$R$loc ;; esac
  code=$(head -c "$3" "$2" | curl -sS -o /dev/null -w '%{http_code}' -X PATCH -H "Content-Type: application/octet-stream" \
    -H "Content-Range: 0-$(($3 - 1))" --data-binary @- "$loc")
  [ "$code" = 202 ] || fail "first PATCH of $1's upload: $code"
  echo "$loc"
}
# up_finish URL FILE DONE MID DIGEST: the upload holds FILE's first DONE bytes (GET: 204 and its
# Range, so the state outlived the restart); PATCH bytes DONE..MID-1, PUT the rest with ?digest=,
# then the blob reads back with that digest.
up_finish() {
  local loc=$1 file=$2 done=$3 mid=$4 digest=$5 size range code sep='?' repo
  size=$(stat -c %s "$file")
  range=$(curl -sS -D - -o /dev/null -w 'status %{http_code}\n' "$loc" | tr -d '\r' \
    | awk 'tolower($1)=="range:"{r=$2} $1=="status"{s=$2} END{print s, r}')
  [ "$range" = "204 0-$((done - 1))" ] || fail "upload after the restart: GET answers $range, expected 204 0-$((done - 1))"
  # (tail's stderr: head stops reading at the chunk's end, and tail says so)
  code=$(tail -c +$((done + 1)) "$file" 2>/dev/null | head -c $((mid - done)) | curl -sS -o /dev/null -w '%{http_code}' -X PATCH \
    -H "Content-Type: application/octet-stream" -H "Content-Range: $done-$((mid - 1))" --data-binary @- "$loc")
  [ "$code" = 202 ] || fail "PATCH after the restart: $code"
  case $loc in *\?*) sep='&' ;; esac
  code=$(tail -c +$((mid + 1)) "$file" | curl -sS -o "$S/out/put.txt" -w '%{http_code}' -X PUT \
    -H "Content-Type: application/octet-stream" -H "Content-Range: $mid-$((size - 1))" --data-binary @- "$loc${sep}digest=$digest")
  [ "$code" = 201 ] || fail "PUT after the restart: $code $(cat "$S/out/put.txt")"
  repo=${loc#"$R/v2/"}; repo=${repo%%/blobs/uploads/*}
  [ "sha256:$(curl -fsS "$R/v2/$repo/blobs/$digest" | sha256sum | cut -d' ' -f1)" = "$digest" ] || fail "resumed blob reads back wrong"
}
# pulls REF=LAYOUT...: each image pulls digest-exact with skopeo (manifest digest as pushed, every
# blob of every platform hashing to its name); the single-platform ones by digest with docker too.
pulls() {
  local pair ref src want got b n
  for pair in "$@"; do
    ref=${pair%%=*} src=${pair#*=}
    want=sha256:$(skopeo inspect --raw "oci:$src" | sha256sum | cut -d' ' -f1)
    got=sha256:$(skopeo inspect --raw "docker://registry.home:8443/$ref" | sha256sum | cut -d' ' -f1)
    [ "$got" = "$want" ] || fail "$ref: manifest $got, pushed $want"
    rm -rf /tmp/pull
    skopeo --insecure-policy copy --quiet --all "docker://registry.home:8443/$ref" dir:/tmp/pull || fail "skopeo pull $ref"
    n=0
    for b in /tmp/pull/*; do
      [[ $(basename "$b") =~ ^[0-9a-f]{64}$ ]] || continue
      [ "$(sha256sum <"$b" | cut -d' ' -f1)" = "$(basename "$b")" ] || fail "$ref: blob $(basename "$b") pulled wrong"
      n=$((n + 1))
    done
    [ "$n" -ge 2 ] || fail "$ref: pulled $n blobs"
    if ! skopeo inspect --raw "oci:$src" | grep -q '"manifests"'; then
      # nothing cached: the pull has to come from the registry
      docker image rm -f $(docker images -aq) >/dev/null 2>&1
      docker pull -q "registry.home:8443/${ref%%:*}@$want" >/dev/null || fail "docker pull $ref by digest"
    fi
  done
}
# installed_over FILE VERSION SHA256 PID [apt-get options]: apt-get install FILE over the running
# service, then: that version is installed, the service restarted (a new main PID) from the new
# binary (its /proc/PID/exe is the installed file, hashing as the package's, not the replaced
# one), it serves, and the operator's configuration and certificate are untouched.
installed_over() {
  local deb=$1 want=$2 sha=$3 before=$4 out pid conf
  shift 4
  conf=$(sha256sum /etc/registryd/config.toml /etc/registryd/tls/tls.crt /etc/registryd/tls/tls.key)
  # stdin closed: a conffile prompt fails the install instead of hanging (both packages ship the
  # same config.toml today; once they differ, dpkg asks about an operator-edited one).
  out=$(apt-get install -y "$@" "$deb" </dev/null 2>&1) || { echo "$out"; fail "apt-get install $deb"; }
  [ "$(version)" = "$want" ] || fail "installed $(version), expected $want"
  poll '[ "$(systemctl is-active registryd)" = active ] && pid=$(systemctl show -p MainPID --value registryd) && [ "$pid" != "$before" ] && [ "$pid" != 0 ]' \
    || fail "the service did not restart (MainPID $before, now $(systemctl show -p MainPID --value registryd), $(systemctl is-active registryd))"
  [ "$(readlink "/proc/$pid/exe")" = /usr/bin/registryd ] || fail "the service runs $(readlink "/proc/$pid/exe")"
  [ "$(sha256sum <"/proc/$pid/exe" | cut -d' ' -f1)" = "$sha" ] || fail "the running binary is not $want's"
  poll 'curl -fsS -o /dev/null "$R/v2/"' || fail "not serving after installing $want"
  [ "$(sha256sum /etc/registryd/config.toml /etc/registryd/tls/tls.crt /etc/registryd/tls/tls.key)" = "$conf" ] \
    || fail "installing $want changed the configuration or certificate"
  [ -z "$(find /etc/registryd -name '*.dpkg-*')" ] || fail "dpkg left $(find /etc/registryd -name '*.dpkg-*')"
  grep -qP "^169\.254\.254\.254\tmirror\.home$" /etc/hosts || fail "hosts entries lost: $(cat /etc/hosts)"
}

stage "8. previous release $OLD_VERSION: fresh install, configure, push, half a chunked upload"
rm -rf /var/lib/registryd
out=$(apt-get install -y "$S/old.deb" 2>&1) || { echo "$out"; fail "apt-get install of the previous release"; }
[ "$(version)" = "$OLD_VERSION" ] || fail "installed $(version), expected $OLD_VERSION"
install -m 0644 "$S/tls1/tls.crt" /etc/registryd/tls/tls.crt
install -m 0600 "$S/tls1/tls.key" /etc/registryd/tls/tls.key
sed -i 's/^hostnames = .*/hostnames = ["registry.home", "mirror.home"]/' /etc/registryd/config.toml
systemctl start registryd || fail "start of the previous release"
poll 'curl -fsS -o /dev/null "$R/v2/"' || fail "the previous release does not serve"
skopeo --insecure-policy copy --quiet "oci:$S/img:v1" docker://registry.home:8443/vm/img:v1 || fail "skopeo push to $OLD_VERSION"
skopeo --insecure-policy copy --quiet --all "oci:$S/multi:v1" docker://registry.home:8443/vm/multi:v1 || fail "skopeo push of the index to $OLD_VERSION"
read -r BLOB1 BLOB2 <"$S/blob.digests"
loc=$(up_start vm/up1 "$S/blob1" 1048576) || { echo "$loc"; exit 1; }

stage "9. upgrade to $NEW_VERSION (apt-get install): restart, resume the upload, pull"
installed_over "$S/registryd.deb" "$NEW_VERSION" "$(cat "$S/new.sha256")" "$(systemctl show -p MainPID --value registryd)"
up_finish "$loc" "$S/blob1" 1048576 2097152 "$BLOB1"
pulls vm/img:v1="$S/img:v1" vm/multi:v1="$S/multi:v1"
skopeo --insecure-policy copy --quiet "oci:$S/img2:v2" docker://registry.home:8443/vm/img2:v2 || fail "skopeo push to $NEW_VERSION"
loc=$(up_start vm/up2 "$S/blob2" 1048576) || { echo "$loc"; exit 1; }

stage "10. downgrade to $OLD_VERSION (apt-get install --allow-downgrades): restart, resume, pull"
installed_over "$S/old.deb" "$OLD_VERSION" "$(cat "$S/old.sha256")" "$(systemctl show -p MainPID --value registryd)" --allow-downgrades
up_finish "$loc" "$S/blob2" 1048576 2097152 "$BLOB2"
pulls vm/img:v1="$S/img:v1" vm/multi:v1="$S/multi:v1" vm/img2:v2="$S/img2:v2"
[ "sha256:$(curl -fsS "$R/v2/vm/up1/blobs/$BLOB1" | sha256sum | cut -d' ' -f1)" = "$BLOB1" ] || fail "the blob uploaded across the upgrade, after the downgrade"
stage "all stages passed"
