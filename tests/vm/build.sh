#!/usr/bin/env bash
# Build the podctl test VM (run as root): Debian's cloud kernel, a small
# busybox initramfs and an ext4 root image of Debian bookworm with systemd as
# PID 1 on the unified cgroup v2 hierarchy.
#
# Outputs in $PODCTL_VM_CACHE (default /var/cache/podctl-vm):
#   vmlinuz  initrd.img  rootfs.raw  kernel-release  stamp
# plus the caches that make rebuilds cheap: debs/ (kernel, busybox-static) and
# apt-archives/ (the guest's packages, fed to mmdebstrap).
#
# The build is skipped when the hash of its inputs (this script, packages.txt,
# guest/*, the kernel package version) equals the one in stamp.
# PODCTL_VM_REBUILD=1 forces a rebuild.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${PODCTL_VM_CACHE:-/var/cache/podctl-vm}
DISK_SIZE=${PODCTL_VM_DISK_SIZE:-8G}
SUITE=bookworm
MIRROR=${PODCTL_VM_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${PODCTL_VM_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
HOST_PKGS=(qemu-system-x86 mmdebstrap e2fsprogs cpio kmod gzip)

log() { echo "[vm-build] $*" >&2; }
die() { echo "[vm-build] error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
export DEBIAN_FRONTEND=noninteractive

apt_updated=0
apt_update() {
	[ "$apt_updated" = 1 ] && return 0
	log "apt-get update"
	apt-get update -qq
	apt_updated=1
}

# --- host tools -------------------------------------------------------------
missing=()
for p in "${HOST_PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	apt_update
	log "installing host packages: ${missing[*]}"
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- inputs and their hash --------------------------------------------------
apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1 || apt_update
KPKG=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
	awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
[ -n "$KPKG" ] || die "cannot resolve linux-image-cloud-amd64"
KREL=${KPKG#linux-image-}
KVER=$(apt-cache policy "$KPKG" | awk '$1 == "Candidate:" { print $2 }')
[ -n "$KVER" ] && [ "$KVER" != "(none)" ] || die "no candidate for $KPKG"

mapfile -t GUEST_PKGS < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$HERE/packages.txt" | grep -v '^$')

hash=$({
	echo "kernel $KPKG $KVER"
	echo "disk $DISK_SIZE mirror $MIRROR $SECURITY_MIRROR"
	cd "$HERE" && sha256sum build.sh packages.txt guest/*
} | sha256sum | cut -d' ' -f1)

up_to_date() {
	[ "${PODCTL_VM_REBUILD:-0}" != 1 ] && [ -f "$CACHE/stamp" ] &&
		[ "$(cat "$CACHE/stamp")" = "$hash" ] &&
		[ -f "$CACHE/vmlinuz" ] && [ -f "$CACHE/initrd.img" ] && [ -f "$CACHE/rootfs.raw" ]
}
if up_to_date; then
	log "up to date ($CACHE, kernel $KREL)"
	exit 0
fi

mkdir -p "$CACHE/debs" "$CACHE/apt-archives"
exec 9> "$CACHE/.lock"
flock 9
if [ "${PODCTL_VM_REBUILD:-0}" != 1 ] && up_to_date; then # built while we waited
	log "up to date ($CACHE, kernel $KREL)"
	exit 0
fi

W="$CACHE/build.tmp"
rm -rf "$W"
mkdir -p "$W"
trap 'rm -rf "$W"' EXIT
start=$SECONDS

# --- kernel and busybox-static ----------------------------------------------
fetch_deb() { # name version -> $DEB, the path of the .deb in $CACHE/debs
	local name=$1 ver=$2 f
	f=$(ls "$CACHE/debs/${name}_${ver/:/%3a}_"*.deb 2>/dev/null | head -n1 || true)
	if [ -z "$f" ]; then
		if ! (cd "$CACHE/debs" && apt-get download -q -o APT::Sandbox::User=root "$name=$ver" >&2); then
			# stale package lists name a version the mirror no longer has:
			# refresh them and start over (the kernel version may change)
			[ "${PODCTL_VM_LISTS_REFRESHED:-0}" = 0 ] || die "cannot download $name=$ver"
			log "download failed; refreshing package lists and retrying"
			rm -rf "$W"
			exec 9>&-
			apt-get update -qq
			PODCTL_VM_LISTS_REFRESHED=1 exec bash "$HERE/build.sh"
		fi
		f=$(ls "$CACHE/debs/${name}_${ver/:/%3a}_"*.deb | head -n1)
	fi
	DEB=$f
}

log "kernel $KPKG $KVER"
fetch_deb "$KPKG" "$KVER"
dpkg-deb -x "$DEB" "$W/kernel"
depmod -b "$W/kernel" "$KREL"
BBVER=$(apt-cache policy busybox-static | awk '$1 == "Candidate:" { print $2 }')
fetch_deb busybox-static "$BBVER"
dpkg-deb -x "$DEB" "$W/bbs"

# --- initramfs --------------------------------------------------------------
log "initramfs"
I="$W/initrd"
mkdir -p "$I/bin" "$I/modules" "$I/dev" "$I/proc" "$I/sys" "$I/newroot"
cp "$W/bbs/bin/busybox" "$I/bin/busybox"
for applet in $("$I/bin/busybox" --list); do
	[ "$applet" = busybox ] || ln -s busybox "$I/bin/$applet"
done
install -m 0755 "$HERE/guest/init" "$I/init"
: > "$I/modules/order"
for m in virtio_pci virtio_blk virtio_rng virtiofs; do
	modprobe -d "$W/kernel" -S "$KREL" --show-depends "$m" | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++' | while read -r ko; do
	cp "$ko" "$I/modules/"
	basename "$ko" >> "$I/modules/order"
done
log "initramfs modules: $(tr '\n' ' ' < "$I/modules/order")"
(cd "$I" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -9 > "$W/initrd.img"

# --- root filesystem ----------------------------------------------------------
log "rootfs: mmdebstrap $SUITE (${#GUEST_PKGS[@]} packages)"
R="$W/rootfs"
include=$(IFS=,; echo "${GUEST_PKGS[*]}")
mmdebstrap --variant=essential --include="$include" \
	--aptopt='Acquire::Check-Valid-Until "false"' \
	--aptopt='APT::Install-Recommends "false"' \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--dpkgopt='path-exclude=/usr/share/info/*' \
	--skip=essential/unlink \
	--setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
	--setup-hook="sync-in '$CACHE/apt-archives' /var/cache/apt/archives" \
	--customize-hook="sync-out /var/cache/apt/archives '$CACHE/apt-archives'" \
	"$SUITE" "$R" \
	"deb $MIRROR $SUITE main" \
	"deb $MIRROR $SUITE-updates main" \
	"deb $SECURITY_MIRROR $SUITE-security main" 2> "$W/mmdebstrap.log" ||
	{ tail -n 40 "$W/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
# keep only the newest version of each cached package
(cd "$CACHE/apt-archives" && ls -t ./*.deb 2>/dev/null | awk -F_ 'seen[$1]++' | xargs -r rm -f)

log "rootfs: configure"
mkdir -p "$R/usr/lib/modules"
cp -a "$W/kernel/lib/modules/$KREL" "$R/usr/lib/modules/"
depmod -b "$R" "$KREL"
echo podctl-vm > "$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tpodctl-vm\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$R/etc/hosts"
echo '/dev/vda / ext4 rw,errors=remount-ro 0 0' > "$R/etc/fstab"
# fixed machine-id: every boot of the pristine image is otherwise a "first boot"
echo 5e1f0c0a7d2b4c55a0d1c0ffee0d0d01 > "$R/etc/machine-id"
chroot "$R" passwd -dq root >/dev/null 2>&1 || chroot "$R" passwd -d root >/dev/null
install -m 0755 "$HERE/guest/podctl-vm-run" "$R/usr/local/sbin/podctl-vm-run"
install -m 0644 "$HERE/guest/podctl-vm-run.service" "$R/etc/systemd/system/podctl-vm-run.service"
mkdir -p "$R/etc/systemd/system/multi-user.target.wants"
ln -sf ../podctl-vm-run.service "$R/etc/systemd/system/multi-user.target.wants/podctl-vm-run.service"
# not wanted at boot: tests start the registry themselves; no VGA console;
# no periodic maintenance
rm -f "$R/etc/systemd/system/multi-user.target.wants/docker-registry.service"
for u in getty@tty1.service e2scrub_all.timer e2scrub_reap.service \
	systemd-timesyncd.service apt-daily.timer apt-daily-upgrade.timer; do
	ln -sf /dev/null "$R/etc/systemd/system/$u"
done
rm -rf "$R/var/cache/apt/archives/"*.deb "$R/var/lib/apt/lists/"* 2>/dev/null || true

log "rootfs: mke2fs ($DISK_SIZE, $(du -sh "$R" | cut -f1) used)"
mke2fs -q -F -t ext4 -L podctl-root -m 0 -E lazy_itable_init=0,lazy_journal_init=0 \
	-d "$R" "$W/rootfs.raw" "$DISK_SIZE"

# --- publish ----------------------------------------------------------------
cp "$W/kernel/boot/vmlinuz-$KREL" "$CACHE/vmlinuz.new"
mv "$CACHE/vmlinuz.new" "$CACHE/vmlinuz"
mv "$W/initrd.img" "$CACHE/initrd.img"
mv "$W/rootfs.raw" "$CACHE/rootfs.raw"
echo "$KREL" > "$CACHE/kernel-release"
echo "$hash" > "$CACHE/stamp"
log "built in $((SECONDS - start))s: $CACHE"
