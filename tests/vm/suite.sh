#!/usr/bin/env bash
# podctl's systemd-driver suite, run INSIDE the VM by tests/vm/test.sh:
#   suite.sh TEST-BINARY...
# Shows what node this is, runs smoke.sh, then each test binary's ignored
# (VM-only) tests one at a time. Exits non-zero if anything failed.
set -u
cd "$(dirname "$0")/../.."
echo "guest: kernel $(uname -r); PID 1 $(cat /proc/1/comm); /sys/fs/cgroup $(stat -fc %T /sys/fs/cgroup); systemd $(systemctl --version | head -1)"
rc=0
bash tests/vm/smoke.sh || rc=1
for t in "$@"; do
	echo "suite: $t"
	"$t" --ignored --test-threads=1 --nocapture || rc=1
done
echo "suite: rc=$rc"
exit "$rc"
