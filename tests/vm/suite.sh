#!/usr/bin/env bash
# podctl's systemd-driver suite, run INSIDE the VM by tests/vm/test.sh:
#   suite.sh [--reboot BINARY] TEST-BINARY...
# Shows what node this is, runs smoke.sh, then each test binary's ignored
# (VM-only) tests one at a time. With --reboot, BINARY's ignored tests run
# last on boot 1 and the suite asks tests/vm/run.sh for a reboot (exit
# 194); on boot 2 (PODCTL_VM_BOOT=2) they run once more, and the suite ends
# with what both boots found. Exits non-zero if anything failed.
set -u
cd "$(dirname "$0")/../.."
reboot=
if [ "${1:-}" = --reboot ]; then
	reboot=$2
	shift 2
fi
rcfile=/var/tmp/podctl-suite-rc
boot=${PODCTL_VM_BOOT:-1}
echo "guest: boot $boot; kernel $(uname -r); PID 1 $(cat /proc/1/comm); /sys/fs/cgroup $(stat -fc %T /sys/fs/cgroup); systemd $(systemctl --version | head -1)"
if [ "$boot" = 1 ]; then
	rc=0
	bash tests/vm/smoke.sh || rc=1
	for t in "$@"; do
		echo "suite: $t"
		"$t" --ignored --test-threads=1 --nocapture || rc=1
	done
	if [ -n "$reboot" ]; then
		echo "suite: $reboot (before the reboot)"
		if "$reboot" --ignored --test-threads=1 --nocapture; then
			echo "$rc" > "$rcfile"
			sync
			echo "suite: rebooting"
			exit 194
		fi
		rc=1
	fi
else
	rc=$(cat "$rcfile" 2>/dev/null || echo 1)
	echo "suite: $reboot (after the reboot)"
	"$reboot" --ignored --test-threads=1 --nocapture || rc=1
fi
echo "suite: rc=$rc"
exit "$rc"
