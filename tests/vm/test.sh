#!/usr/bin/env bash
# The VM suite from the host, in one command (as root):
#   bash tests/vm/test.sh
# Builds (or reuses) the VM image, builds podctl and the VM-only test
# binaries on the host, and the Debian package unless PODCTL_DEB names one
# (an absolute path inside this checkout, which the guest shares), boots
# the guest once and runs tests/vm/suite.sh in it. Exits with the suite's
# exit code.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tests/vm/build.sh
cargo build --workspace --bins
deb=${PODCTL_DEB:-}
if [ -z "$deb" ]; then
	deb=$(bash scripts/package.sh)
fi
deb=$(realpath "$deb")
case "$deb" in
"$PWD"/*) ;;
*) echo "test.sh: the package must be inside $PWD to be seen by the guest: $deb" >&2; exit 1 ;;
esac
bins=()
exe() { # package:test -> the test's executable
	local e
	e=$(cargo test -p "${1%%:*}" --test "${1#*:}" --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*\))$/\1/p')
	[ -n "$e" ] || { echo "test.sh: no executable for test $1" >&2; exit 1; }
	echo "$e"
}
for t in podctl-cri:systemd_node podctl-cri:packaged_service podctl-cri:crash podctl-tests:supervisor_loss podctl-cri:kubelet_systemd podctl-cri:apparmor; do
	e=$(exe "$t")
	bins+=("$e")
done
reboot=$(exe podctl-cri:reboot)
# A stock kubelet for cri/tests/kubelet_systemd.rs, when one was built by
# hand (README): copied into the share, which is all the guest sees.
envs=(--env "PODCTL_DEB=$deb")
if [ -x "${E2E_BIN:-}/kubelet" ]; then
	mkdir -p target/vm-share
	cp "$E2E_BIN/kubelet" target/vm-share/kubelet
	envs+=(--env "PODCTL_VM_KUBELET=$PWD/target/vm-share/kubelet")
else
	echo "test.sh: no kubelet in \$E2E_BIN: the VM's kubelet test will say it skipped"
fi
PODCTL_VM_TIMEOUT=${PODCTL_VM_TIMEOUT:-1800} bash tests/vm/run.sh "${envs[@]}" -- \
	bash tests/vm/suite.sh --reboot "$reboot" "${bins[@]}"
