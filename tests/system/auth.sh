#!/usr/bin/env bash
# Logins and access rules with real clients. htpasswd -B makes the users; registryd listens with
# TLS on a loopback address (anonymous pull, Bearer tokens: the node-local listener) and on 0.0.0.0
# (everyone must log in: Basic). skopeo, podman and the Docker engine log in, push and pull;
# anonymous clients pull but cannot push (401); a read-only user gets 403; per-repository rules
# hide a private prefix from the catalog, from blob reads through other repositories and from
# cross-repository mounts; the htpasswd file is re-read when it changes; failed logins are logged
# without the password and throttled.
source "$(dirname "$0")/lib/common.sh"

for c in htpasswd skopeo podman dockerd; do
  command -v $c >/dev/null || fail "$c missing: apt-get install apache2-utils skopeo podman docker.io"
done
SK="skopeo --insecure-policy"
export REGISTRY_AUTH_FILE=$WORK/auth.json

# --- Certificate for 127.0.0.1, users, config.
loopback_cert
htpasswd -Bbc "$WORK/htpasswd" ci ci-pass 2>/dev/null
htpasswd -Bb "$WORK/htpasswd" reader reader-pass 2>/dev/null
htpasswd -Bb "$WORK/htpasswd" tm tm-pass 2>/dev/null
htpasswd -Bb "$WORK/htpasswd" dev dev-pass 2>/dev/null
P1=$(free_port) P2=$(free_port)
L=127.0.0.1:$P1   # node-local listener: anonymous pull ("auto")
A=127.0.0.1:$P2   # reaches the 0.0.0.0 listener: logins only ("auto")
start_registryd --tls reg "$P1" "$WORK/data" - <<EOF
[server]
listen = ["127.0.0.1:$P1", "0.0.0.0:$P2"]
[auth]
htpasswd = "$WORK/htpasswd"
# Every client here is 127.0.0.1: leave room for the failures the steps before the throttle test make.
max_failures_per_minute = 40
[[access]]
prefix = ""
pull = ["*", "anonymous"]
push = ["ci"]
[[access]]
prefix = "team"
pull = ["@team"]
push = ["ci"]
[[access]]
prefix = "dev"
pull = ["dev"]
push = ["dev"]
[[group]]
name = "team"
members = ["tm"]
EOF
REG=$REG_PID
CONFIG=$REG_CONFIG

code() { curl -sk -o /dev/null -w '%{http_code}' "$@"; }
challenge() { curl -sk -D- -o /dev/null "$1" | tr -d '\r' | awk -F': ' 'tolower($1)=="www-authenticate"{print $2}'; }

# --- What each listener asks of anonymous clients.
[ "$(code "https://$A/v2/")" = 401 ] || fail "/v2/ on the 0.0.0.0 listener must be 401 to anonymous"
case "$(challenge "https://$A/v2/")" in Basic\ realm=*) ;; *) fail "0.0.0.0 listener challenge: $(challenge "https://$A/v2/")";; esac
[ "$(code "https://$A/v2/_catalog")" = 401 ] || fail "anonymous catalog on the 0.0.0.0 listener"
case "$(challenge "https://$L/v2/")" in Bearer\ realm=\"https://$L/auth/token\"*) ;; *) fail "node listener challenge: $(challenge "https://$L/v2/")";; esac
[ "$(code "https://$L/v2/_catalog")" = 200 ] || fail "anonymous catalog on the node listener"
[ "$(code "https://$A/healthz")" = 200 ] || fail "/healthz must not need a login"
# Access is judged before anything else is said about a request: a manifest reference that can
# name nothing is still 401 to an anonymous client where pulls need a login.
[ "$(code "https://$A/v2/any/img/manifests/.INVALID")" = 401 ] || fail "bad reference answered before the login check"
[ "$(code -X PUT "https://$L/v2/any/img/manifests/.INVALID")" = 401 ] || fail "anonymous push to a bad reference not 401"
pass "0.0.0.0 listener: Basic 401 for anonymous; node listener: Bearer challenge, anonymous pull allowed"

# --- Logins: wrong password, then skopeo, podman and docker push.
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/img" v1 --layer-bytes 200000 >/dev/null
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/secret" v1 --layer-bytes 150000 >/dev/null
for r in $L $A; do
  if skopeo login --tls-verify=false -u ci -p Wr0ngPassw0rd "$r" >"$WORK/login.out" 2>&1; then fail "wrong password accepted on $r"; fi
  grep -q "invalid username/password" "$WORK/login.out" || { cat "$WORK/login.out"; fail "wrong password: unexpected message"; }
done
[ "$(code -u ci:Wr0ngPassw0rd "https://$A/v2/")" = 401 ] || fail "wrong password must be 401"
pass "wrong password: 401 on both listeners (skopeo login refuses it)"

$SK copy -q --dest-tls-verify=false "oci:$WORK/img:v1" "docker://$L/anon/img:v1" 2>"$WORK/anon-push.err" \
  && fail "anonymous push accepted"
grep -q "unauthorized" "$WORK/anon-push.err" || { cat "$WORK/anon-push.err"; fail "anonymous push: expected 401 unauthorized"; }
[ "$(code -X POST "https://$L/v2/anon/img/blobs/uploads/")" = 401 ] || fail "anonymous upload must be 401"
pass "anonymous push: 401"

skopeo login --tls-verify=false -u ci -p ci-pass "$L" >/dev/null || fail "skopeo login on node listener"
$SK copy -q --dest-tls-verify=false "oci:$WORK/img:v1" "docker://$L/app/img:v1" || fail "skopeo push after login (node listener, tokens)"
$SK copy -q --dest-tls-verify=false "oci:$WORK/secret:v1" "docker://$L/team/private:v1" || fail "ci push to team/"
skopeo login --tls-verify=false -u ci -p ci-pass "$A" >/dev/null || fail "skopeo login on 0.0.0.0 listener"
$SK copy -q --dest-tls-verify=false "oci:$WORK/img:v1" "docker://$A/app/img:v2" || fail "skopeo push after login (Basic)"
pass "skopeo login + push on both listeners"

PODMAN="podman --root $WORK/podman/root --runroot $WORK/podman/run --storage-driver vfs --cgroup-manager cgroupfs --events-backend none"
CLEANUPS+=("$PODMAN system reset -f >/dev/null 2>&1; rm -rf '$WORK/podman'")
$PODMAN login --tls-verify=false -u ci -p Wr0ngPassw0rd "$A" >/dev/null 2>&1 && fail "podman login with a wrong password"
$PODMAN login --tls-verify=false -u ci -p ci-pass "$A" >/dev/null || fail "podman login"
$PODMAN pull -q --tls-verify=false "$A/app/img:v1" >/dev/null || fail "podman pull after login"
$PODMAN tag "$A/app/img:v1" "$A/podman/img:v1"
$PODMAN push -q --tls-verify=false "$A/podman/img:v1" || fail "podman push after login"
pass "podman login, pull and push through the 0.0.0.0 listener"

skopeo logout --all >/dev/null
got=$($SK inspect --raw --tls-verify=false "docker://$L/app/img:v1" | sha256sum | cut -d' ' -f1)
[ -n "$got" ] || fail "anonymous pull on the node listener"
$SK inspect --raw --tls-verify=false "docker://$A/app/img:v1" >/dev/null 2>&1 && fail "anonymous pull on the 0.0.0.0 listener"
pass "anonymous pull: allowed on the node listener, refused on 0.0.0.0"

start_dockerd --insecure-registry "$L" --insecure-registry "$A"
$DOCKER pull -q "$L/app/img:v1" >/dev/null || fail "anonymous docker pull on the node listener"
$DOCKER tag "$L/app/img:v1" "$L/docker/img:v1"
$DOCKER push -q "$L/docker/img:v1" >/dev/null 2>&1 && fail "anonymous docker push accepted"
echo ci-pass | $DOCKER login -u ci --password-stdin "$L" >/dev/null 2>&1 || fail "docker login (node listener, tokens)"
$DOCKER push -q "$L/docker/img:v1" >/dev/null || fail "docker push after login (node listener)"
echo Wr0ngPassw0rd | $DOCKER login -u ci --password-stdin "$A" >/dev/null 2>&1 && fail "docker login with a wrong password"
echo ci-pass | $DOCKER login -u ci --password-stdin "$A" >/dev/null 2>&1 || fail "docker login (0.0.0.0 listener, Basic)"
$DOCKER tag "$L/app/img:v1" "$A/docker/img:v2"
$DOCKER push -q "$A/docker/img:v2" >/dev/null || fail "docker push after login (0.0.0.0 listener)"
pass "docker: anonymous pull, login, push on both listeners"

# --- A read-only user: 403.
[ "$(code -u reader:reader-pass "https://$A/v2/")" = 200 ] || fail "reader /v2/"
skopeo login --tls-verify=false -u reader -p reader-pass "$A" >/dev/null || fail "reader login"
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/new" v1 --layer-bytes 100000 >/dev/null
$SK copy -q --dest-tls-verify=false "oci:$WORK/new:v1" "docker://$A/app/img:reader" 2>"$WORK/reader.err" && fail "reader push accepted"
grep -q "denied" "$WORK/reader.err" || { cat "$WORK/reader.err"; fail "reader push: expected 403 denied"; }
[ "$(code -u reader:reader-pass -X DELETE "https://$A/v2/app/img/manifests/v1")" = 403 ] || fail "reader delete must be 403"
pass "read-only user: push and delete get 403 DENIED"

# --- Per-repository rules: team/ is private.
[ "$(code -u reader:reader-pass "https://$A/v2/team/private/manifests/v1")" = 403 ] || fail "reader must not read team/"
[ "$(code "https://$L/v2/team/private/manifests/v1")" = 401 ] || fail "anonymous must not read team/"
[ "$(code -u tm:tm-pass -H 'Accept: application/vnd.oci.image.manifest.v1+json' "https://$A/v2/team/private/manifests/v1")" = 200 ] || fail "tm reads team/"
cat_anon=$(curl -sk "https://$L/v2/_catalog" | jq -c .repositories)
cat_tm=$(curl -sk -u tm:tm-pass "https://$A/v2/_catalog" | jq -c .repositories)
echo "$cat_anon" | has team/private && fail "anonymous catalog lists team/private: $cat_anon"
echo "$cat_anon" | has app/img || fail "anonymous catalog lacks app/img: $cat_anon"
echo "$cat_tm" | has team/private || fail "tm's catalog lacks team/private: $cat_tm"
page=$(curl -sk -D "$WORK/page.h" "https://$L/v2/_catalog?n=1" | jq -c .repositories)
[ "$page" = '["app/img"]' ] || fail "first catalog page for anonymous: $page"
pass "team/ private: 403 reader, 401 anonymous, 200 member; catalog lists only what the reader may pull"

# A private layer is not readable through a public repository, nor mountable without pull on from.
secret_layer=$(jq -r '.layers[0].digest' "$WORK/secret/blobs/sha256/$(jq -r '.manifests[0].digest' "$WORK/secret/index.json" | cut -d: -f2)")
[ "$(code -u reader:reader-pass "https://$A/v2/app/img/blobs/$secret_layer")" = 404 ] || fail "private layer readable through app/img"
[ "$(code -u dev:dev-pass -X POST "https://$A/v2/dev/x/blobs/uploads/?mount=$secret_layer&from=team/private")" = 202 ] \
  || fail "dev mounted a team/ layer without pull rights on team/private"
[ "$(code -u dev:dev-pass -X POST "https://$A/v2/dev/x/blobs/uploads/?mount=$secret_layer")" = 202 ] \
  || fail "dev mounted a team/ layer by digest alone"
[ "$(code -u dev:dev-pass "https://$A/v2/dev/x/blobs/$secret_layer")" = 404 ] || fail "the team/ layer became readable in dev/x"
[ "$(code -u ci:ci-pass -X POST "https://$A/v2/app/copy/blobs/uploads/?mount=$secret_layer&from=team/private")" = 201 ] \
  || fail "ci (pull rights on team/ through push) could not mount"
pass "private layers: no read through another repository, no mount without pull rights on from"

# --- The htpasswd file is re-read when it changes; a broken file keeps the previous users.
[ "$(code -u late:late-pass "https://$A/v2/")" = 401 ] || fail "late exists before being added"
htpasswd -Bb "$WORK/htpasswd" late late-pass 2>/dev/null
ok=0
for _ in $(seq 1 50); do [ "$(code -u late:late-pass "https://$A/v2/")" = 200 ] && { ok=1; break; }; sleep 0.1; done
[ $ok = 1 ] || fail "user added to the htpasswd file not accepted without a restart"
cp "$WORK/htpasswd" "$WORK/htpasswd.good"
echo 'md5user:$apr1$abc$defghijklmnopqrstuvw' >>"$WORK/htpasswd"
for _ in $(seq 1 50); do grep -q "htpasswd file refused" "$WORK/reg.log" && break; sleep 0.1; done
grep "htpasswd file refused" "$WORK/reg.log" | has 'line 6: user .*md5user.* has a MD5' || { grep htpasswd "$WORK/reg.log"; fail "broken htpasswd not reported with its line"; }
[ "$(code -u late:late-pass "https://$A/v2/")" = 200 ] || fail "previous users lost after a broken htpasswd file"
htpasswd -D "$WORK/htpasswd" late 2>/dev/null
sed -i '/^md5user:/d' "$WORK/htpasswd"
ok=0
for _ in $(seq 1 50); do [ "$(code -u late:late-pass "https://$A/v2/")" = 401 ] && { ok=1; break; }; sleep 0.1; done
[ $ok = 1 ] || fail "removed user still accepted (login cache not cleared on reload)"
pass "htpasswd reloaded live: user added, broken file refused with its line (users kept), user removed"

# --- Tokens die with their account: a deleted user's or an old password's tokens are refused, in
# use and at /auth/token, and a refresh chain cannot outlive them.
token_for() { curl -sfk "$@" "https://$L/auth/token" | jq -r .token; }
manifest_code() { code -H 'Accept: application/vnd.oci.image.manifest.v1+json' -H "Authorization: Bearer $1" "https://$L/v2/team/private/manifests/v1"; }
htpasswd -Bb "$WORK/htpasswd" tm2 tm2-pass 2>/dev/null
sed -i 's/^members = \["tm"\]/members = ["tm", "tm2"]/' "$CONFIG"
kill -HUP "$REG"
ok=0
for _ in $(seq 1 50); do
  T1=$(token_for -u tm2:tm2-pass || true)
  [ -n "$T1" ] && [ "$T1" != null ] && [ "$(manifest_code "$T1")" = 200 ] && { ok=1; break; }
  sleep 0.1
done
[ $ok = 1 ] || fail "tm2 (new member of team) cannot read team/private with a token"
T2=$(curl -sfk -H "Authorization: Bearer $T1" "https://$L/auth/token" | jq -r .token)
[ "$(manifest_code "$T2")" = 200 ] || fail "a token traded for a fresh one does not work"
htpasswd -Bb "$WORK/htpasswd" tm2 tm2-new-pass 2>/dev/null
ok=0
for _ in $(seq 1 50); do [ "$(code -u tm2:tm2-pass "https://$A/v2/")" = 401 ] && { ok=1; break; }; sleep 0.1; done
[ $ok = 1 ] || fail "old password still accepted after the change"
for t in "$T1" "$T2"; do
  [ "$(manifest_code "$t")" = 401 ] || fail "a token from before the password change still reads team/private"
  [ "$(code -H "Authorization: Bearer $t" "https://$L/auth/token")" = 401 ] || fail "a token from before the password change was refreshed"
done
T3=$(token_for -u tm2:tm2-new-pass)
[ "$(manifest_code "$T3")" = 200 ] || fail "the new password's token does not work"
htpasswd -D "$WORK/htpasswd" tm2 2>/dev/null
ok=0
for _ in $(seq 1 50); do [ "$(manifest_code "$T3")" = 401 ] && { ok=1; break; }; sleep 0.1; done
[ $ok = 1 ] || fail "a deleted user's token still reads team/private"
[ "$(code -H "Authorization: Bearer $T3" "https://$L/auth/token")" = 401 ] || fail "a deleted user's token was refreshed"
pass "tokens end with their account: password change and htpasswd -D refuse them in use and at /auth/token"

# --- The token realm echoes only a plain host[:port] from the Host header.
realm_for() { curl -sk -D- -o /dev/null -H "Host: $1" "https://$L/v2/" | tr -d '\r' | awk -F': ' 'tolower($1)=="www-authenticate"{print $2}'; }
case "$(realm_for 'a@evil.example')" in *evil*) fail "Host with user info reached the challenge: $(realm_for 'a@evil.example')";; esac
case "$(realm_for 'a@evil.example')" in "Bearer realm=\"https://$L/auth/token\""*) ;; *) fail "realm for a bad Host: $(realm_for 'a@evil.example')";; esac
case "$(realm_for 'registry.home:8443')" in "Bearer realm=\"https://registry.home:8443/auth/token\""*) ;; *) fail "realm for a good Host: $(realm_for 'registry.home:8443')";; esac
pass "token realm: a plain Host is echoed, 'a@evil.example' gets the listener's address"

# --- Rules change with a reload (SIGHUP), no restart.
[ "$(code -u reader:reader-pass -H 'Accept: application/vnd.oci.image.manifest.v1+json' "https://$A/v2/app/img/manifests/v1")" = 200 ] || fail "reader reads app/ before the reload"
printf '[[access]]\nprefix = "app"\npull = ["ci"]\npush = ["ci"]\n' >>"$CONFIG"
kill -HUP "$REG"
ok=0
for _ in $(seq 1 50); do [ "$(code -u reader:reader-pass "https://$A/v2/app/img/manifests/v1")" = 403 ] && { ok=1; break; }; sleep 0.1; done
[ $ok = 1 ] || fail "new access rule not applied after SIGHUP"
pass "access rules reloaded with SIGHUP: app/ closed to reader"

# --- A user name a client chose cannot forge a log line or send terminal escapes.
code -u "$(printf 'evil\nFORGED-LINE login ok user=admin\033[2J')":x "https://$A/v2/" >/dev/null
for _ in $(seq 1 20); do grep -q 'FORGED-LINE' "$WORK/reg.log" && break; sleep 0.1; done
grep -q 'evil\\nFORGED-LINE' "$WORK/reg.log" || { grep -a FORGED "$WORK/reg.log" || true; fail "the user name was not logged escaped"; }
grep -q '^FORGED-LINE' "$WORK/reg.log" && fail "a user name forged a log line"
grep -q "$(printf '\033')" "$WORK/reg.log" && fail "an escape character reached the log"
pass "control characters in a user name are escaped in the text log"

# --- Failed logins: logged with client and user, never the password; throttled per client.
grep '"login failed"\|login failed' "$WORK/reg.log" | has 'user=ci' || fail "failed login not logged with the user"
grep -q 'Wr0ngPassw0rd' "$WORK/reg.log" && fail "a password appears in the log"
codes=""
for _ in $(seq 1 42); do codes="$codes $(code -u ci:nope-$RANDOM "https://$A/v2/")"; done
case "$codes" in *429*) ;; *) fail "no throttling after repeated failures: $codes";; esac
[ "$(code -u ci:ci-pass "https://$A/v2/")" = 429 ] || fail "throttled client must wait, even with the right password"
pass "failed logins logged (client, user, no password); 429 after $(echo "$codes" | tr ' ' '\n' | grep -c 401) failures"

# --- Docker before 1.6 gets a clear 404.
[ "$(code -A 'docker/1.5.0 go/go1.4.1' "https://$L/v2/")" = 404 ] || fail "docker 1.5 client not refused"
[ "$(code -A 'Go 1.1 package http' "https://$L/v2/")" = 404 ] || fail "Go 1.1 client not refused"
pass "pre-1.6 Docker clients: 404"

# --- Basic auth over plain HTTP is refused unless explicitly allowed.
if "$TEST_REGISTRYD_BIN" check-config --config "$CONFIG" --plain-http >"$WORK/plain.out" 2>&1; then
  fail "plain HTTP with logins accepted"
fi
grep -q "auth.htpasswd.*logins need TLS" "$WORK/plain.out" || { cat "$WORK/plain.out"; fail "plain HTTP refusal unclear"; }
REGISTRYD_AUTH_ALLOW_PLAIN_HTTP=true "$TEST_REGISTRYD_BIN" check-config --config "$CONFIG" --plain-http >/dev/null \
  || fail "auth.allow_plain_http = true not honoured"
pass "logins over plain HTTP refused at start unless auth.allow_plain_http"
