#!/usr/bin/env bash
# The .deb on a real Debian node: a bookworm VM with systemd under user-mode-linux, or under QEMU
# where user-mode-linux cannot run (tests/vm/vm.sh; no network device), installs the package, runs
# registryd from its unit, and goes through install, enable, push/pull by docker and skopeo,
# certificate rotation, reload, SIGKILL restart, stop and purge, then from a fresh install of the
# previous release an upgrade to this build and a downgrade back, each with a chunked upload held
# across it (tests/vm/guest-test.sh). The rootfs is cached in /var/cache/registryd-tests/vm, the
# previous release's .deb in /var/cache/registryd-tests/prev-release (tests/vm/prev-release.sh).
source "$(dirname "$0")/lib/common.sh"
VM=$REPO_DIR/tests/vm/vm.sh
PREV=$REPO_DIR/tests/vm/prev-release.sh
t0=$(date +%s)
# Both fetched by run-all.sh's first stage (cached, so no-ops here); fetched here, with deps.sh's
# retries, when this test runs alone.
deps_get "the VM's tools" bash "$VM" tools >"$WORK/vm-tools.log" 2>&1 || { tail -20 "$WORK/vm-tools.log"; fail "vm tools"; }
deps_get "the VM's rootfs" bash "$VM" rootfs >"$WORK/vm-rootfs.log" 2>&1 || { tail -20 "$WORK/vm-rootfs.log"; fail "vm rootfs"; }
bash "$PREV" unpack || fail "the previous release's sources (git history)"
deps_get "the previous release's crates" bash "$PREV" fetch >"$WORK/prev-fetch.log" 2>&1 || { tail -5 "$WORK/prev-fetch.log"; fail "previous release's sources"; }
bash "$VM" image || fail "vm image"
echo "vm: tools, rootfs, image in $(( $(date +%s) - t0 ))s"

deb=$(bash "$REPO_DIR/packaging/build-deb.sh" | tail -1) || fail "building the .deb"
# The previous release's .deb, for the upgrade and downgrade: cached by commit; on a cold cache
# run-all.sh has been building it in the background (this waits for it), or it is built here.
t2=$(date +%s)
old_deb=$(bash "$PREV" build 2>"$WORK/prev-build.log" | tail -1) || { tail -20 "$WORK/prev-build.log"; fail "building the previous release's .deb"; }
echo "vm: previous release's .deb ready in $(( $(date +%s) - t2 ))s"

# The package's libc6 bound covers every glibc version the packaged binary needs. dpkg-shlibdeps
# goes by the symbols a binary imports and missed one with no symbol (GLIBC_ABI_DT_RELR): the
# package installed on glibc 2.35, where the daemon could not start. Read here on its own terms
# (readelf), not with build-deb.sh's code, and for every need rather than one known name.
dpkg-deb -x "$deb" "$WORK/pkg"
depends=$(dpkg-deb -f "$deb" Depends)
libc_bound=$(echo "$depends" | tr ',' '\n' | sed -n 's/^ *libc6 (>= \([^)]*\)) *$/\1/p' | sort -V | tail -1)
[ -n "$libc_bound" ] || fail "no libc6 (>= ...) in the package's Depends: $depends"
glibc_needs=$(readelf -V --wide "$WORK/pkg/usr/bin/registryd" \
  | sed -n '/^Version needs section/,/^$/s/.*Name: \(GLIBC_[^ ]*\).*/\1/p' | sort -u)
[ -n "$glibc_needs" ] || fail "readelf shows no GLIBC version need in the packaged binary"
for need in $glibc_needs; do
  case $need in
    GLIBC_ABI_DT_RELR) release=2.36 ;; # glibc 2.36 brought DT_RELR (packed relative relocations)
    GLIBC_[0-9]*) release=${need#GLIBC_} ;;
    *) fail "the packaged binary needs $need: which glibc release brought it? (teach this test)" ;;
  esac
  dpkg --compare-versions "$libc_bound" ge "$release" \
    || fail "Depends says libc6 (>= $libc_bound), but the binary needs $need (glibc $release): $depends"
done
pass "Depends: $depends covers the binary's glibc needs ($(echo $glibc_needs))"
SHARE=$WORK/share
mkdir -p "$SHARE"
cp "$deb" "$SHARE/registryd.deb"
cp "$old_deb" "$SHARE/old.deb"
old_version=$(dpkg-deb -f "$old_deb" Version) new_version=$(dpkg-deb -f "$deb" Version)
dpkg --compare-versions "$new_version" gt "$old_version" \
  || fail "this build's package ($new_version) is not newer than the previous release's ($old_version): apt would not upgrade"
echo "$old_version $new_version" >"$SHARE/versions"
for p in old:"$old_deb" new:"$deb"; do
  dpkg-deb --fsys-tarfile "${p#*:}" | tar -xO ./usr/bin/registryd | sha256sum | cut -d' ' -f1 >"$SHARE/${p%%:*}.sha256"
done
cmp -s "$SHARE/old.sha256" "$SHARE/new.sha256" \
  && echo "vm: note: the previous release's registryd binary is byte-identical to this build's"
# Blobs for the two chunked uploads held across the upgrade and the downgrade.
for n in 1 2; do head -c 3145728 /dev/urandom >"$SHARE/blob$n"; done
echo "sha256:$(sha256sum <"$SHARE/blob1" | cut -d' ' -f1) sha256:$(sha256sum <"$SHARE/blob2" | cut -d' ' -f1)" >"$SHARE/blob.digests"
cp "$REPO_DIR/tests/vm/guest-test.sh" "$SHARE/run.sh"
# a wildcard certificate for *.home signed by a test CA, and a second one for the rotation
for n in 1 2; do
  REGISTRYD_TLS_CERTIFICATE=$SHARE/tls$n/tls.crt REGISTRYD_TLS_KEY=$SHARE/tls$n/tls.key \
    "$TEST_REGISTRYD_BIN" cert init --ca-dir "$SHARE/ca" --hosts '*.home,registry.home' >/dev/null
done
python3 "$SYS_DIR/lib/mkimage.py" "$SHARE/img" v1 --layer-bytes 100000 >/dev/null
python3 "$SYS_DIR/lib/mkimage.py" "$SHARE/multi" v1 --arch amd64 --arch arm64 --layer-bytes 50000 >/dev/null
python3 "$SYS_DIR/lib/mkimage.py" "$SHARE/img2" v2 --layer-bytes 50000 >/dev/null
openssl x509 -noout -serial -in "$SHARE/tls2/tls.crt" | sed 's/^serial=//' | tr 'A-F' 'a-f' >"$SHARE/tls2/serial"
t1=$(date +%s)
bash "$VM" run "$SHARE"
echo "vm: boot + guest test in $(( $(date +%s) - t1 ))s"
cp "$SHARE/out/run.log" /var/cache/registryd-tests/vm/last-guest.log 2>/dev/null || true
grep -E "^(==|FAIL)" "$SHARE/out/run.log" 2>/dev/null || true
[ "$(cat "$SHARE/out/rc" 2>/dev/null)" = 0 ] || { cat "$SHARE/out/run.log" 2>/dev/null | tail -40; tail -30 /var/cache/registryd-tests/vm/console.log; fail "guest test"; }
pass "VM: .deb install, unit, link, hosts, skopeo+docker, rotation, reload, SIGKILL restart, purge, doctor ($(cat "$SHARE/out/security.txt" 2>/dev/null))"
pass "VM: upgrade $old_version -> $new_version and downgrade back with apt-get: service restarted on the installed binary, chunked uploads resumed across both, every image pulled digest-exact (skopeo, docker), config and certificate kept"
