#!/usr/bin/env bash
# Proves the test node: run it INSIDE the VM, e.g.
#   bash tests/vm/build.sh && bash tests/vm/run.sh -- bash tests/vm/smoke.sh
# Asserts systemd PID 1, pure cgroup v2 with cpu/memory/pids, a reachable
# D-Bus, and a transient scope whose resource limits land in its cgroup.
set -u

pass=0
fail=0
ok() { echo "ok   - $*"; pass=$((pass + 1)); }
bad() { echo "FAIL - $*"; fail=$((fail + 1)); }
check() { # description expected actual
	if [ "$2" = "$3" ]; then ok "$1: $3"; else bad "$1: expected '$2', got '$3'"; fi
}

check "PID 1 comm" systemd "$(cat /proc/1/comm)"
exe=$(readlink /proc/1/exe)
case "$exe" in
*/systemd) ok "PID 1 exe: $exe" ;;
*) bad "PID 1 exe: expected .../systemd, got '$exe'" ;;
esac

check "/sys/fs/cgroup type" cgroup2fs "$(stat -fc %T /sys/fs/cgroup)"
controllers=$(cat /sys/fs/cgroup/cgroup.controllers)
for c in cpu memory pids; do
	case " $controllers " in
	*" $c "*) ok "controller $c available ($controllers)" ;;
	*) bad "controller $c missing from '$controllers'" ;;
	esac
done
if grep -q ' cgroup ' /proc/mounts; then
	bad "a cgroup v1 hierarchy is mounted: $(grep ' cgroup ' /proc/mounts | cut -d' ' -f2 | tr '\n' ' ')"
else
	ok "no cgroup v1 hierarchy mounted"
fi

state=$(systemctl is-system-running 2>/dev/null)
case "$state" in
running | degraded) ok "system state: $state" ;;
*) bad "system state: $state" ;;
esac
if [ "$state" = degraded ]; then
	systemctl --failed --no-pager --no-legend | sed 's/^/       failed unit: /'
fi

if id=$(busctl call org.freedesktop.DBus /org/freedesktop/DBus org.freedesktop.DBus GetId 2>&1); then
	ok "D-Bus reachable (bus id ${id#s })"
else
	bad "busctl: $id"
fi
ver=$(busctl get-property org.freedesktop.systemd1 /org/freedesktop/systemd1 \
	org.freedesktop.systemd1.Manager Version 2>&1) &&
	ok "systemd manager over D-Bus: ${ver#s }" || bad "systemd manager over D-Bus: $ver"

# A transient scope with limits, as a runtime using the systemd cgroup
# driver would create one.
unit=podctl-smoke
systemd-run --quiet --scope -p MemoryMax=64M -p CPUQuota=50% -p TasksMax=20 \
	--unit "$unit" sleep 5 &
runpid=$!
cg=
for _ in $(seq 50); do
	if [ "$(systemctl is-active "$unit.scope" 2>/dev/null)" = active ]; then
		cg=$(systemctl show -P ControlGroup "$unit.scope")
		break
	fi
	sleep 0.1
done
if [ -n "$cg" ] && [ -d "/sys/fs/cgroup$cg" ]; then
	ok "scope $unit.scope active in cgroup $cg"
	check "memory.max" 67108864 "$(cat "/sys/fs/cgroup$cg/memory.max")"
	check "cpu.max" "50000 100000" "$(cat "/sys/fs/cgroup$cg/cpu.max")"
	check "pids.max" 20 "$(cat "/sys/fs/cgroup$cg/pids.max")"
	procs=$(cat "/sys/fs/cgroup$cg/cgroup.procs" | wc -l)
	[ "$procs" -ge 1 ] && ok "scope holds $procs process(es)" || bad "scope cgroup is empty"
else
	bad "scope $unit.scope did not become active (cgroup '$cg')"
fi
systemctl stop "$unit.scope" 2>/dev/null
wait "$runpid" 2>/dev/null

echo "smoke: $pass passed, $fail failed"
[ "$fail" = 0 ]
