#!/usr/bin/env bash
# Run cri-tools' critest (validation mode) against `podctl serve`, offline.
#
#   CRITEST=/path/to/critest tests/critest/run.sh [critest/ginkgo flags...]
#
# critest is not built here: build it yourself (cri-tools, outside this repo)
# and point CRITEST at it. podctl and podctl-testbed must be built
# (`cargo build -p podctl -p podctl-tests`); nothing is built by this script.
#
# What it does, all on 127.0.0.1:
#  1. starts podctl-testbed: the registry fixture with critest's images
#     rebuilt from Debian packages (tests/src/critest_images.rs); it writes
#     the [registry.hosts."..."] tables that mirror registry.k8s.io, gcr.io,
#     k8s.gcr.io, docker.io and quay.io to that registry;
#  2. starts `podctl serve --config WORK/podctl.toml` (socket, root and
#     state under WORK, plus those tables);
#  3. runs critest on the socket, prints pass/fail/skip counts and the
#     failed specs;
#  4. stops the two processes it started (by PID), whatever happened.
#
# Environment:
#   CRITEST          critest binary (required)
#   CRICTL           crictl, to remove pods critest leaves behind
#                    (default: next to CRITEST; skipped when absent)
#   PODCTL           podctl binary      (default: target/debug/podctl)
#   TESTBED          podctl-testbed     (default: target/debug/podctl-testbed)
#   WORK             work directory     (default: a new /tmp/podctl-critest.XXXXXX);
#                    logs stay there: testbed.log, podctl.log, critest.log,
#                    critest.json, junit report
#   PODCTL_EXTRA     extra TOML for podctl's configuration, put before the
#                    registry tables: keys (cgroup_driver = "systemd") and
#                    tables ($'[cni]\nconf_dir = "/etc/podctl/cni"')
#   CRITEST_TIMEOUT  ginkgo suite timeout (default 90m)
#   CLEAN=1          remove WORK afterwards when nothing is mounted below it
#
# Extra arguments go to critest, e.g. --ginkgo.focus='Image Manager' or
# --ginkgo.skip='AppArmor|SELinux'. Exit status: critest's.
# shellcheck disable=SC2317  # stop_pid and cleanup run from traps
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

die() { echo "run.sh: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "podctl serve needs root"
[ -n "${CRITEST:-}" ] || die "set CRITEST=/path/to/critest (built outside this repo)"
[ -x "$CRITEST" ] || die "CRITEST=$CRITEST is not executable"
PODCTL=${PODCTL:-$repo/target/debug/podctl}
TESTBED=${TESTBED:-$repo/target/debug/podctl-testbed}
[ -x "$PODCTL" ] || die "no podctl at $PODCTL (cargo build -p podctl)"
[ -x "$TESTBED" ] || die "no podctl-testbed at $TESTBED (cargo build -p podctl-tests)"
"$PODCTL" serve --help >/dev/null 2>&1 || die "$PODCTL has no 'serve' subcommand yet"

WORK=${WORK:-$(mktemp -d /tmp/podctl-critest.XXXXXX)}
mkdir -p "$WORK"
# Pods with their own user namespace mount their rootfs (below WORK) as an
# unprivileged host user: WORK must be searchable (mktemp makes it 0700).
chmod o+x "$WORK"
WORK=$(cd "$WORK" && pwd)
sock=$WORK/podctl.sock
nri_sock=$WORK/nri.sock
testbed_pid=
podctl_pid=
# Per-run bridge name and a /24 no route on this host overlaps: the machine
# may be shared, and a neighbour's leftover bridge on a fixed subnet would
# route critest's traffic away.
bridge=ct$(printf '%05d' $(($$ % 100000)))
subnet=
free_subnet() {
  local a b i
  for ((i = 0; i < 200; i++)); do
    a=$((100 + RANDOM % 150)) b=$((RANDOM % 256))
    # Any route inside 10.a.0.0/16 (or one covering it) rules it out.
    if ! ip -4 route show | awk '{print $1}' | grep -qE "^10\.$a\.|^10\.0\.0\.0/8"; then
      echo "10.$a.$b.0/24"
      return 0
    fi
  done
  return 1
}

# Send SIGTERM to one process we started, SIGKILL after $2 seconds.
stop_pid() {
  local pid=$1 grace=$2 i
  [ -n "$pid" ] || return 0
  kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "run.sh: pid $pid did not stop in ${grace}s; SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  stop_pid "$podctl_pid" 60
  stop_pid "$testbed_pid" 30
  # The bridge plugin leaves its bridge behind; it is this run's alone.
  ip link del "$bridge" 2>/dev/null || true
  if [ "${CLEAN:-0}" = 1 ]; then
    if grep -qF " $WORK/" /proc/self/mountinfo || grep -qF " $WORK " /proc/self/mountinfo; then
      echo "run.sh: mounts remain below $WORK; not removing it" >&2
    else
      rm -rf -- "$WORK"
    fi
  else
    echo "run.sh: logs and state in $WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# 1. The registry with critest's images.
echo "run.sh: starting podctl-testbed"
"$TESTBED" "$WORK/registry.toml" >"$WORK/testbed.out" 2>"$WORK/testbed.log" &
testbed_pid=$!
for ((i = 0; i < 600; i++)); do
  [ -s "$WORK/testbed.out" ] && break
  kill -0 "$testbed_pid" 2>/dev/null || { cat "$WORK/testbed.log" >&2; die "podctl-testbed exited"; }
  sleep 0.5
done
[ -s "$WORK/testbed.out" ] || { cat "$WORK/testbed.log" >&2; die "podctl-testbed not ready in 300s"; }
registry=$(head -n1 "$WORK/testbed.out")
echo "run.sh: registry at $registry"

# 2. The daemon, with a bridge network as a node's admin would install in
# /etc/cni/net.d (critest's pods need one). Top-level keys first: the
# tables come last.
mkdir -p "$WORK/cni"
subnet=$(free_subnet) || die "no free 10.x.y.0/24 (every 10.x/16 has a route)"
echo "run.sh: bridge $bridge, subnet $subnet"
cat >"$WORK/cni/10-critest.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "critest",
  "plugins": [
    {"type": "bridge", "bridge": "$bridge", "isGateway": true, "ipMasq": false,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$subnet"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
{
  echo "socket = \"$sock\""
  echo "root = \"$WORK/root\""
  echo "state = \"$WORK/state\""
  echo "log_level = \"info\""
  [ -z "${PODCTL_EXTRA:-}" ] || printf '%s\n' "$PODCTL_EXTRA"
  echo
  if ! grep -q '^\[cni\]' <<<"${PODCTL_EXTRA:-}"; then
    printf '[cni]\nconf_dir = "%s"\n\n' "$WORK/cni"
  fi
  # NRI on a socket of this run's own; critest's NRI specs connect there.
  printf '[nri]\nenable = true\nsocket = "%s"\n\n' "$nri_sock"
  cat "$WORK/registry.toml"
} >"$WORK/podctl.toml"
echo "run.sh: starting podctl serve --config $WORK/podctl.toml"
"$PODCTL" serve --config "$WORK/podctl.toml" >"$WORK/podctl.log" 2>&1 &
podctl_pid=$!
for ((i = 0; i < 600; i++)); do
  [ -S "$sock" ] && break
  kill -0 "$podctl_pid" 2>/dev/null || { tail -n 50 "$WORK/podctl.log" >&2; die "podctl serve exited"; }
  sleep 0.1
done
[ -S "$sock" ] || { tail -n 50 "$WORK/podctl.log" >&2; die "no socket $sock after 60s"; }

# 3. critest. Serial (critest's --parallel needs the ginkgo CLI), no colour,
# a JSON report to count from, JUnit for CI viewers.
mkdir -p "$WORK/report"
echo "run.sh: running critest ($("$CRITEST" --version 2>/dev/null | grep -m1 version || echo '?'))"
set +e
"$CRITEST" \
  --runtime-endpoint "unix://$sock" \
  --nri-socket "$nri_sock" \
  --image-endpoint "unix://$sock" \
  --report-dir "$WORK/report" \
  --ginkgo.no-color \
  --ginkgo.timeout="${CRITEST_TIMEOUT:-90m}" \
  --ginkgo.json-report="$WORK/critest.json" \
  "$@" 2>&1 | tee "$WORK/critest.log"
critest_rc=${PIPESTATUS[0]}
set -e

# critest leaves the pods of some failed specs behind; remove them while
# the daemon is up (their monitors would otherwise outlive it, by design).
CRICTL=${CRICTL:-$(dirname "$CRITEST")/crictl}
if [ -x "$CRICTL" ]; then
  "$CRICTL" --runtime-endpoint "unix://$sock" --image-endpoint "unix://$sock" rmp -fa >/dev/null 2>&1 || true
fi

# 4. Counts (from ginkgo's summary line: "N Passed | N Failed | N Pending | N Skipped").
summary=$(grep -E '[0-9]+ Passed \| [0-9]+ Failed' "$WORK/critest.log" | tail -n1 || true)
num() { sed -nE "s/.*[^0-9]([0-9]+) $1.*/\1/p" <<<" $summary" | head -n1; }
passed=$(num Passed); failed=$(num Failed); pending=$(num Pending); skipped=$(num Skipped)
echo
echo "================ critest against podctl ================"
if [ -n "$summary" ]; then
  ran=$(grep -E '^Ran [0-9]+ of [0-9]+ Specs' "$WORK/critest.log" | tail -n1 || true)
  [ -z "$ran" ] || echo "$ran"
  if [ "${failed:-0}" != 0 ]; then
    echo "failed specs:"
    # ginkgo lists them after "Summarizing N Failures:" as "[FAIL] ...".
    grep -E '^\s*\[(FAIL|TIMEDOUT|PANICKED|INTERRUPTED)\]' "$WORK/critest.log" | sed 's/^/  /' | sort -u || true
  fi
  echo "critest: ${passed:-0} passed, ${failed:-0} failed, $(( ${skipped:-0} + ${pending:-0} )) skipped"
else
  echo "critest printed no summary (exit $critest_rc); see $WORK/critest.log"
fi
exit "$critest_rc"
