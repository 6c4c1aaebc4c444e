#!/usr/bin/env bash
# Boot the podctl test VM (built by build.sh) under QEMU/TCG, run one command
# in it and hand back its output and exit code.
#
#   run.sh [--share DIR] [--env NAME=VALUE]... -- COMMAND [ARG]...
#
# DIR (default: the repo root) is shared read-write through virtiofs and
# mounted at /mnt/host in the guest and again at DIR itself (unless DIR is a
# system path such as /usr), so absolute paths baked into host builds work.
# COMMAND runs from DIR as root, in a booted system (systemd PID 1, cgroup
# v2), with stdout and stderr merged and streamed to this script's stdout. The guest disk is a throw-away snapshot of
# the cached image, so every run starts from the same state. COMMAND sees
# PODCTL_VM_BOOT=1; exiting with 194 reboots the guest (its disk kept for
# this run) and runs COMMAND again with PODCTL_VM_BOOT=2 (up to 4 boots).
#
# Environment:
#   PODCTL_VM_CACHE        image cache (default /var/cache/podctl-vm)
#   PODCTL_VM_TIMEOUT      whole-run limit in seconds, boot included (600)
#   PODCTL_VM_MEM          guest memory in MiB (2048)
#   PODCTL_VM_CPUS         guest vCPUs (2)
#   PODCTL_VM_CONSOLE_LOG  where to keep the serial console log
#                          (default: a file in the run's temp dir, which is
#                          copied to /tmp/podctl-vm-console.log on failure)
#   PODCTL_VM_QUIET=1      no [vm] progress lines on stderr
#
# Exit code: the command's; 124 if it timed out; 125 if the harness failed
# (no result came back).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${PODCTL_VM_CACHE:-/var/cache/podctl-vm}
TIMEOUT=${PODCTL_VM_TIMEOUT:-600}
MEM=${PODCTL_VM_MEM:-2048}
CPUS=${PODCTL_VM_CPUS:-2}
VIRTIOFSD=${PODCTL_VM_VIRTIOFSD:-/usr/lib/qemu/virtiofsd}
SHARE=$(cd "$HERE/../.." && pwd)
ENVS=()

log() { [ "${PODCTL_VM_QUIET:-0}" = 1 ] || echo "[vm] $*" >&2; }
die() { echo "[vm] error: $*" >&2; exit 125; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 125; }

while [ $# -gt 0 ]; do
	case "$1" in
	--share) SHARE=$(cd "$2" && pwd) || die "no such directory: $2"; shift 2 ;;
	--share=*) SHARE=$(cd "${1#*=}" && pwd) || die "no such directory: ${1#*=}"; shift ;;
	--env) ENVS+=("$2"); shift 2 ;;
	--env=*) ENVS+=("${1#*=}"); shift ;;
	-h | --help) usage ;;
	--) shift; break ;;
	*) break ;;
	esac
done
[ $# -gt 0 ] || usage

[ "$(id -u)" = 0 ] || die "must run as root (virtiofsd needs it)"
for f in vmlinuz initrd.img rootfs.raw; do
	[ -f "$CACHE/$f" ] || die "$CACHE/$f missing: run tests/vm/build.sh first"
done
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing: run tests/vm/build.sh"
[ -x "$VIRTIOFSD" ] || die "$VIRTIOFSD missing"

RUN=$(mktemp -d "${TMPDIR:-/tmp}/podctl-vm.XXXXXX")
CTL="$RUN/ctl"
mkdir -p "$CTL"
CONSOLE=${PODCTL_VM_CONSOLE_LOG:-$RUN/console.log}
: > "$CONSOLE"

# The command, as a script the guest runs with bash from /mnt/host.
{
	echo '#!/bin/bash'
	for e in "${ENVS[@]}"; do printf 'export %q\n' "$e"; done
	printf 'exec'
	printf ' %q' "$@"
	echo
} > "$CTL/cmd"
# the guest gives the command what is left after a generous boot allowance
guest_limit=$((TIMEOUT - 90))
[ "$guest_limit" -ge 30 ] || guest_limit=30
echo "$guest_limit" > "$CTL/timeout"
echo "$SHARE" > "$CTL/hostpath"

PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_virtiofsd() { # tag dir
	"$VIRTIOFSD" --socket-path="$RUN/$1.sock" -o source="$2" -o cache=auto \
		-o log_level=warn > "$RUN/virtiofsd-$1.log" 2>&1 &
	PIDS+=($!)
}
start_virtiofsd host "$SHARE"
start_virtiofsd ctl "$CTL"
for _ in $(seq 100); do
	[ -S "$RUN/host.sock" ] && [ -S "$RUN/ctl.sock" ] && break
	sleep 0.05
done
[ -S "$RUN/host.sock" ] && [ -S "$RUN/ctl.sock" ] ||
	{ cat "$RUN"/virtiofsd-*.log >&2; die "virtiofsd did not start"; }

t0=$(date +%s.%N)
log "booting (share $SHARE, ${CPUS} vCPU, ${MEM} MiB, timeout ${TIMEOUT}s)"
# snapshot=on: writes go to a temp overlay (in $TMPDIR) dropped at exit
TMPDIR="$RUN" qemu-system-x86_64 \
	-name podctl-vm -machine q35 -accel tcg,thread=multi -cpu max \
	-smp "$CPUS" -m "$MEM" \
	-object memory-backend-memfd,id=mem,size="${MEM}M",share=on -numa node,memdev=mem \
	-kernel "$CACHE/vmlinuz" -initrd "$CACHE/initrd.img" \
	-append "console=ttyS0 root=/dev/vda rw panic=-1 systemd.unified_cgroup_hierarchy=1 systemd.show_status=auto apparmor=1 security=apparmor" \
	-drive file="$CACHE/rootfs.raw",format=raw,if=virtio,snapshot=on,cache=unsafe \
	-chardev socket,id=vfs-host,path="$RUN/host.sock" \
	-device vhost-user-fs-pci,chardev=vfs-host,tag=host \
	-chardev socket,id=vfs-ctl,path="$RUN/ctl.sock" \
	-device vhost-user-fs-pci,chardev=vfs-ctl,tag=ctl \
	-device virtio-rng-pci \
	-nic none -display none -monitor none -serial file:"$CONSOLE" \
	< /dev/null > "$RUN/qemu.log" 2>&1 &
QEMU=$!
PIDS+=("$QEMU")

# Stream the command's output while it runs.
tail -n +1 -F --pid="$QEMU" "$CTL/out" 2>/dev/null &
TAIL=$!
PIDS+=("$TAIL")

deadline=$((SECONDS + TIMEOUT))
rc_seen_at=
started=
while kill -0 "$QEMU" 2>/dev/null; do
	if [ -z "$started" ] && [ -s "$CTL/started" ]; then
		started=1
		log "command started $(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", t1 - t0 }')s after boot began ($(cat "$CTL/started"))"
	fi
	if [ -f "$CTL/rc" ] && [ -z "$rc_seen_at" ]; then rc_seen_at=$SECONDS; fi
	if [ -n "$rc_seen_at" ] && [ $((SECONDS - rc_seen_at)) -ge 30 ]; then
		log "guest did not power off within 30s of finishing; killing qemu"
		kill "$QEMU" 2>/dev/null || true
		break
	fi
	if [ "$SECONDS" -ge "$deadline" ]; then
		log "timeout: ${TIMEOUT}s elapsed; killing qemu"
		kill "$QEMU" 2>/dev/null || true
		break
	fi
	sleep 0.5
done
wait "$QEMU" 2>/dev/null || true
wait "$TAIL" 2>/dev/null || true

elapsed=$(awk -v t0="$t0" -v t1="$(date +%s.%N)" 'BEGIN { printf "%.1f", t1 - t0 }')
if [ -f "$CTL/rc" ]; then
	rc=$(cat "$CTL/rc")
	log "guest command exited $rc; VM ran ${elapsed}s"
else
	rc=125
	[ "$SECONDS" -ge "$deadline" ] && rc=124
	echo "[vm] no result from the guest after ${elapsed}s; qemu said:" >&2
	sed 's/^/[vm]   /' "$RUN/qemu.log" >&2
	grep -hv 'fv_remove_watch\|Unexpected poll revents' "$RUN"/virtiofsd-*.log >&2 || true
fi
if [ "$rc" != 0 ]; then
	echo "[vm] --- serial console (last 60 lines) ---" >&2
	tail -n 60 "$CONSOLE" >&2
	if [ -z "${PODCTL_VM_CONSOLE_LOG:-}" ]; then
		cp "$CONSOLE" /tmp/podctl-vm-console.log
		echo "[vm] full console log: /tmp/podctl-vm-console.log" >&2
	fi
fi
exit "$rc"
