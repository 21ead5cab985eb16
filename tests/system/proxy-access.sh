#!/usr/bin/env bash
# Access rules hold for every name the pull-through cache answers to. An upstream (CNCF
# Distribution 2.8.2 on 127.0.0.1, with its access log) holds private/app and public/app; registryd
# names it `up` (prefixes `up` and `u2`) and sends bare names under private/* and public/* to it by
# default. One rule limits the cached repository up/private to the user `owner`. Every naming form
# (the prefix, a second prefix, containerd's ?ns=, a bare default-pattern name) is tried for
# manifests, blobs, tags and referrers, as an anonymous client, a read-only user and the owner: only
# the owner reads, and the upstream sees no request for private/app until the owner's first one.
source "$(dirname "$0")/lib/common.sh"

command -v docker-registry >/dev/null || fail "docker-registry missing: apt-get install docker-registry"
command -v htpasswd >/dev/null || fail "htpasswd missing: apt-get install apache2-utils"
SK="skopeo --insecure-policy"

# --- The upstream, plain HTTP on loopback, with every request in its log.
PU=$(free_port)
cat >"$WORK/up.yml" <<YML
version: 0.1
log: {level: info, accesslog: {disabled: false}}
storage: {filesystem: {rootdirectory: $WORK/up-data}}
http: {addr: 127.0.0.1:$PU}
YML
docker-registry serve "$WORK/up.yml" >"$WORK/up.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$PU/v2/" || { cat "$WORK/up.log"; fail "upstream did not start"; }
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/private" v1 --layer-bytes 50000 --seed private >/dev/null
python3 "$SYS_DIR/lib/mkimage.py" "$WORK/public" v1 --layer-bytes 50000 --seed public >/dev/null
$SK copy -q --dest-tls-verify=false "oci:$WORK/private:v1" "docker://127.0.0.1:$PU/private/app:v1" || fail "push to the upstream"
$SK copy -q --dest-tls-verify=false "oci:$WORK/public:v1" "docker://127.0.0.1:$PU/public/app:v1" || fail "push to the upstream"
manifest_of() { jq -r '.manifests[0].digest' "$1/index.json"; }
PRIV_MANIFEST=$(manifest_of "$WORK/private")
PRIV_LAYER=$(jq -r '.layers[0].digest' "$WORK/private/blobs/sha256/${PRIV_MANIFEST#sha256:}")

# --- registryd: TLS on loopback (anonymous pull, Bearer tokens), logins, one private rule.
loopback_cert
htpasswd -Bbc "$WORK/htpasswd" owner owner-pass 2>/dev/null
htpasswd -Bb "$WORK/htpasswd" reader reader-pass 2>/dev/null
PR=$(free_port)
R=127.0.0.1:$PR
start_registryd --tls reg "$PR" "$WORK/data" - <<EOF
[auth]
htpasswd = "$WORK/htpasswd"
max_failures_per_minute = 0
[proxy]
default_upstream = "up"
default_patterns = ["private/*", "public/*"]
upstream_timeout_secs = 5
[[upstream]]
name = "up"
url = "http://127.0.0.1:$PU"
prefixes = ["up", "u2"]
[[access]]
prefix = ""
pull = ["*", "anonymous"]
push = ["owner"]
[[access]]
prefix = "up/private"
pull = ["owner"]
push = ["owner"]
EOF

code() { curl -sk -o /dev/null -w '%{http_code}' -H 'Accept: application/vnd.oci.image.manifest.v1+json' "$@"; }
# as METHOD [curl args]: GET, or HEAD with -I (curl -X HEAD would wait for a body).
as() { local m=$1; shift; if [ "$m" = HEAD ]; then code -I "$@"; else code "$@"; fi; }
ANON_TOKEN=$(curl -sfk "https://$R/auth/token" | jq -r .token)
[ -n "$ANON_TOKEN" ] && [ "$ANON_TOKEN" != null ] || fail "no anonymous token"
# Requests for private/app the upstream logged after the test's own pushes to it.
UP_MARK=$(wc -l <"$WORK/up.log")
upstream_saw_private() { tail -n +"$((UP_MARK + 1))" "$WORK/up.log" | grep -c '/v2/private/app' || true; }

# Each naming form of the private image, as path + query.
FORMS=(
  "up/private/app|"
  "u2/private/app|"
  "private/app|?ns=up"
  "private/app|?ns=u2"
  "private/app|"
)
paths() { # NAME QUERY: one line per endpoint
  echo "/v2/$1/manifests/v1$2"
  echo "/v2/$1/manifests/$PRIV_MANIFEST$2"
  echo "/v2/$1/blobs/$PRIV_LAYER$2"
  echo "/v2/$1/tags/list$2"
  echo "/v2/$1/referrers/$PRIV_MANIFEST$2"
}

checked=0
for form in "${FORMS[@]}"; do
  name=${form%%|*} query=${form#*|}
  while read -r p; do
    for method in GET HEAD; do
      c=$(as "$method" "https://$R$p")
      [ "$c" = 401 ] || fail "anonymous $method $p: $c, want 401"
      c=$(as "$method" -H "Authorization: Bearer $ANON_TOKEN" "https://$R$p")
      [ "$c" = 401 ] || fail "anonymous (token) $method $p: $c, want 401"
      c=$(as "$method" -u reader:reader-pass "https://$R$p")
      [ "$c" = 403 ] || fail "reader $method $p: $c, want 403"
      checked=$((checked + 3))
    done
  done < <(paths "$name" "$query")
done
curl -sk -u reader:reader-pass "https://$R/v2/private/app/manifests/v1?ns=up" | jq -r '.errors[0].message' \
  | has 'up/private/app' || fail "the refusal does not name the repository it protects"
[ "$(upstream_saw_private)" = 0 ] || { tail -n +"$((UP_MARK + 1))" "$WORK/up.log" | grep private/app; fail "the upstream was asked for private/app on a refused request"; }
pass "$checked refused reads (5 naming forms x manifests, blobs, tags, referrers x GET/HEAD): 401 anonymous, 403 reader; the upstream saw none"

# A real client gets the same answer.
$SK inspect --raw --tls-verify=false "docker://$R/private/app:v1" >/dev/null 2>"$WORK/sk.err" && fail "skopeo read private/app anonymously"
$SK inspect --raw --tls-verify=false --creds reader:reader-pass "docker://$R/u2/private/app:v1" >/dev/null 2>>"$WORK/sk.err" \
  && fail "skopeo read u2/private/app as reader"
[ "$(upstream_saw_private)" = 0 ] || fail "the upstream was asked for private/app by a refused skopeo"
pass "skopeo: refused anonymously and as reader"

# The public image through the same forms is served to anonymous clients (the cache works).
for p in "/v2/public/app/manifests/v1" "/v2/public/app/manifests/v1?ns=up" "/v2/up/public/app/manifests/v1" "/v2/u2/public/app/tags/list"; do
  c=$(code "https://$R$p")
  [ "$c" = 200 ] || fail "anonymous GET $p: $c, want 200"
done
pass "public/app: served to anonymous clients in every form"

# The owner reads the private image in every form, byte-identical, and only then does the
# upstream see it.
for form in "${FORMS[@]}"; do
  name=${form%%|*} query=${form#*|}
  while read -r p; do
    c=$(code -u owner:owner-pass "https://$R$p")
    [ "$c" = 200 ] || { tail -5 "$WORK/reg.log"; fail "owner GET $p: $c, want 200"; }
  done < <(paths "$name" "$query")
done
got=$(curl -sk -u owner:owner-pass "https://$R/v2/private/app/blobs/$PRIV_LAYER?ns=up" | sha256sum | cut -d' ' -f1)
[ "sha256:$got" = "$PRIV_LAYER" ] || fail "owner got other bytes for the private layer"
rm -rf "$WORK/pulled"
$SK copy -q --src-tls-verify=false --src-creds owner:owner-pass "docker://$R/private/app:v1" "oci:$WORK/pulled:v1" \
  || fail "skopeo pull of private/app as owner"
[ "$(upstream_saw_private)" -gt 0 ] || fail "the upstream log shows no request for private/app even for the owner (is the log check blind?)"
pass "owner reads private/app in every form (skopeo pull, byte-exact layer); the upstream saw it only then"

# Once cached, the refusals still hold (nothing reaches the cached copy by another name).
for form in "${FORMS[@]}"; do
  name=${form%%|*} query=${form#*|}
  while read -r p; do
    [ "$(code "https://$R$p")" = 401 ] || fail "anonymous $p after caching"
    [ "$(code -u reader:reader-pass "https://$R$p")" = 403 ] || fail "reader $p after caching"
  done < <(paths "$name" "$query")
done
pass "after caching: still 401 anonymous and 403 reader in every form"

# check-config shows no secret: a password in an upstream URL, or on a line with a TOML syntax error.
sed 's|url = "http://127.0.0.1:'"$PU"'"|url = "http://u:S3CRET-in-url@127.0.0.1:'"$PU"'"|' "$WORK/reg.toml" >"$WORK/url.toml"
"$TEST_REGISTRYD_BIN" check-config --config "$WORK/url.toml" >"$WORK/cc.out" 2>&1 || { cat "$WORK/cc.out"; fail "check-config refused the URL config"; }
has 'u:REDACTED@127.0.0.1' <"$WORK/cc.out" || { cat "$WORK/cc.out"; fail "check-config did not show the redacted URL"; }
printf '[[upstream]]\nname = "x"\npassword = "S3CRET-pw\n' >"$WORK/broken.toml"
"$TEST_REGISTRYD_BIN" check-config --config "$WORK/broken.toml" >"$WORK/cc2.out" 2>&1 && fail "check-config accepted broken TOML"
has 'line 3' <"$WORK/cc2.out" || { cat "$WORK/cc2.out"; fail "the syntax error does not say where"; }
cat "$WORK/cc.out" "$WORK/cc2.out" | has S3CRET && fail "check-config printed a secret"
pass "check-config: URL password and the line of a syntax error are not printed"
