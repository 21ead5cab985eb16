#!/bin/bash
# A throwaway Debian bookworm VM with real systemd, to test the .deb end to end (issue 5).
# Usage: vm.sh tools | rootfs | image | run SHARE_DIR [uml|qemu]
#   tools   what the VM needs on the host (user-mode-linux and QEMU unpacked with dpkg -x, debootstrap)
#   rootfs  debootstrap + configure + the guest's test packages, cached in $V (about 5 minutes once)
#   image   an ext4 image from the rootfs, without mounting (seconds)
#   run     boot; the guest runs SHARE_DIR/run.sh as root after multi-user.target, writes
#           SHARE_DIR/out/run.log and SHARE_DIR/out/rc, then powers off. The image stays clean.
# The VM has no network device: everything the guest needs is in the rootfs or the share.
# It boots under user-mode-linux, and under QEMU (TCG) where user-mode-linux cannot run: Debian 12's
# UML kernel dies at once on hosts whose CPUs have AMX ("ptrace set fp regs failed", seen on an Intel
# Xeon here), because the host's FPU state no longer fits what that kernel hands to ptrace.
set -euo pipefail
V=${V:-/var/cache/registryd-tests/vm}; mkdir -p "$V"
GUEST_PKGS="docker.io skopeo curl jq ca-certificates iproute2 procps"
MIRROR=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$MIRROR" ] || MIRROR=$(awk '/^deb /{print $2; exit}' /etc/apt/sources.list)

tools() {
  [ -x "$V/uml/usr/bin/linux.uml" ] && [ -x "$V/qemu/usr/bin/qemu-system-x86_64" ] \
    && command -v debootstrap >/dev/null && return 0
  # qemu-system-x86 from apt conflicts with a preinstalled backports qemu-utils: unpack it, with its
  # libraries installed. (--error-on=any: apt-get update exits 0 when the mirror's name cannot be
  # resolved, and run-all.sh's retries must see that.)
  apt-get update -qq --error-on=any
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q -o DPkg::Lock::Timeout=300 --no-install-recommends \
    debootstrap qemu-system-data seabios ipxe-qemu libaio1 libbpf1 libcapstone4 libfdt1 libfuse3-3 \
    libibverbs1 libjpeg62-turbo libnuma1 libpixman-1-0 libpmem1 libpng16-16 librdmacm1 libsasl2-2 \
    libseccomp2 libslirp0 liburing2 libvdeplug2 libasound2 libbrlapi0.8 libcacard0 libcap-ng0 libepoxy0 \
    libgbm1 libsndio7.0 libspice-server1 libusb-1.0-0 libusbredirparser1
  rm -rf "$V/debs" "$V/uml" "$V/qemu" "$V/fw"
  mkdir -p "$V/debs" "$V/uml" "$V/qemu" "$V/fw"
  (cd "$V/debs" && apt-get download user-mode-linux qemu-system-x86 qemu-system-common)
  dpkg -x "$V"/debs/user-mode-linux_*.deb "$V/uml"
  for d in "$V"/debs/qemu-system-*.deb; do dpkg -x "$d" "$V/qemu"; done
  for f in /usr/share/qemu/* /usr/share/seabios/* /usr/lib/ipxe/qemu/*; do ln -sf "$f" "$V/fw/"; done
}

rootfs() {
  local R=$V/rootfs stamp="$V/rootfs.stamp" want
  want=$(sed -n '/^rootfs()/,/^}/p' "$0" | sha256sum | cut -c1-16)
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$R/bin/systemctl" ] && return 0
  # A try cut short by the network (run-all.sh retries this) may have left /proc mounted inside.
  umount "$R/proc" 2>/dev/null || true
  rm -rf --one-file-system "$R"
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,udev,dbus,iproute2,kmod,ca-certificates,curl,zstd,linux-image-amd64,initramfs-tools \
    bookworm "$R" "$MIRROR"
  echo vmtest >"$R/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\tvmtest\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$R/etc/hosts"
  printf 'LABEL=root / ext4 rw,errors=remount-ro 0 1\n' >"$R/etc/fstab" # /dev/ubda (UML), /dev/vda (QEMU)
  printf '9p\n9pnet_virtio\n' >"$R/etc/modules-load.d/9p.conf"
  echo "deb $MIRROR bookworm main" >"$R/etc/apt/sources.list"
  chroot "$R" passwd -d root >/dev/null
  chroot "$R" systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer \
    getty@tty1.service e2scrub_reap.service systemd-networkd-wait-online.service >/dev/null 2>&1 || true
  # The guest's test tools, installed once into the cached rootfs (the VM has no network).
  cp /etc/resolv.conf "$R/etc/resolv.conf"
  mount --bind /proc "$R/proc"
  # On EXIT too: a failed apt-get (set -e) leaves the script without returning.
  trap "umount '$R/proc' 2>/dev/null || true" RETURN EXIT
  chroot "$R" apt-get update -q --error-on=any
  DEBIAN_FRONTEND=noninteractive chroot "$R" apt-get install -y -q --no-install-recommends $GUEST_PKGS
  umount "$R/proc"
  # Docker in a VM without network and without iptables: as on this host's tests.
  mkdir -p "$R/etc/docker"
  echo '{"iptables": false, "ip-masq": false, "bridge": "none", "storage-driver": "vfs"}' >"$R/etc/docker/daemon.json"
  rm -f "$R"/var/cache/apt/archives/*.deb "$R/etc/resolv.conf"
  # For QEMU: the Debian kernel and a small initrd (virtio + ext4 only; boots faster under TCG).
  mkdir -p "$R/etc/initramfs-min"
  cp -a "$R/etc/initramfs-tools/." "$R/etc/initramfs-min/"
  sed -i 's/^MODULES=.*/MODULES=list/; s/^COMPRESS=.*/COMPRESS=gzip/' "$R/etc/initramfs-min/initramfs.conf"
  printf 'virtio_pci\nvirtio_blk\next4\n' >"$R/etc/initramfs-min/modules"
  local kv
  kv=$(ls "$R/lib/modules" | head -1)
  chroot "$R" mkinitramfs -d /etc/initramfs-min -o /boot/initrd-min.img "$kv" 2>/dev/null
  cp "$R/boot/vmlinuz-$kv" "$V/vmlinuz"
  cp "$R/boot/initrd-min.img" "$V/initrd.img"
  echo "$want" >"$stamp"
}

# The guest's test hooks: written on every image build, so changing them needs no new rootfs.
configure() {
  local R=$V/rootfs
  mkdir -p "$R/mnt/host"
  cat >"$R/usr/local/sbin/vmtest-mount" <<SH
#!/bin/sh
# host share: hostfs under user-mode-linux (with its kernel modules), virtio-9p under QEMU
if grep -qw hostfs /proc/filesystems; then
  mount -t hostfs -o \$(tr ' ' '\n' </proc/cmdline | sed -n 's/^share=//p') none /mnt/host
  mkdir -p /lib/modules
  mount -t hostfs -o $V/uml/usr/lib/uml/modules none /lib/modules
else
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 host0 /mnt/host
fi
SH
  chmod 755 "$R/usr/local/sbin/vmtest-mount"
  cat >"$R/etc/systemd/system/vmtest.service" <<'UNIT'
[Unit]
Description=Run the host's test script, then power off
After=multi-user.target
[Service]
Type=oneshot
ExecStartPre=/usr/local/sbin/vmtest-mount
ExecStart=/bin/sh -c 'mkdir -p /mnt/host/out; /bin/bash /mnt/host/run.sh > /mnt/host/out/run.log 2>&1; echo $? > /mnt/host/out/rc'
ExecStopPost=/bin/sync
ExecStopPost=/bin/systemctl --no-block poweroff
# A ceiling for a hung guest, not a budget: the test takes 2 to 3 minutes under QEMU on an idle
# machine, but on a 2-core machine loaded about 10 deep its stages ran 10 times slower (15 minutes
# to reach the upgrade stages).
TimeoutStartSec=2400
[Install]
WantedBy=multi-user.target
UNIT
  ln -sf /etc/systemd/system/vmtest.service "$R/etc/systemd/system/multi-user.target.wants/vmtest.service"
}

image() { configure; rm -f "$V/rootfs.img"; truncate -s 4G "$V/rootfs.img"; mkfs.ext4 -q -F -L root -d "$V/rootfs" "$V/rootfs.img"; }

run() {
  local share how=${2:-${VM_HYPERVISOR:-uml}}
  share=$(realpath "$1")
  rm -rf "$share/out"; mkdir -p "$share/out"
  if [ "$how" = uml ]; then
    rm -f "$V/uml.cow"
    timeout 2700 "$V/uml/usr/bin/linux.uml" mem=2G ubd0="$V/uml.cow,$V/rootfs.img" root=/dev/ubda rw share="$share" \
      con=null con0=null,fd:1 quiet >"$V/console.log" 2>&1 </dev/null || true
    rm -f "$V/uml.cow"
    if [ ! -s "$share/out/rc" ] && grep -q "ptrace set fp regs failed" "$V/console.log"; then
      echo "vm: user-mode-linux cannot run on this CPU (ptrace set fp regs failed); booting under QEMU"
      how=qemu
    fi
  fi
  if [ "$how" = qemu ]; then
    timeout 2700 "$V/qemu/usr/bin/qemu-system-x86_64" -L "$V/fw" -accel tcg,thread=multi -cpu max -m 2048 -smp 2 \
      -kernel "$V/vmlinuz" -initrd "$V/initrd.img" -append "root=/dev/vda rw console=ttyS0 quiet panic=-1" \
      -drive "file=$V/rootfs.img,format=raw,if=virtio,snapshot=on" \
      -virtfs "local,path=$share,mount_tag=host0,security_model=none,id=host0" \
      -nic none -display none -monitor none -serial "file:$V/console.log" -no-reboot </dev/null || true
  fi
  echo "guest script exit code: $(cat "$share/out/rc" 2>/dev/null || echo none)"
}

case "${1:-}" in
  tools) tools ;; rootfs) rootfs ;; image) image ;; run) shift; run "$@" ;;
  *) echo "usage: $0 tools | rootfs | image | run SHARE_DIR [uml|qemu]" >&2; exit 2 ;;
esac
