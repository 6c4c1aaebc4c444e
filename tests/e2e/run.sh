#!/usr/bin/env bash
# Kubernetes' own e2e suite ([NodeConformance] by default) against a
# one-node cluster on loopback whose node is podctl, offline.
#
#   E2E_BIN=/path/to/bin tests/e2e/run.sh [extra e2e.test flags...]
#
# E2E_BIN holds binaries built by hand from a Kubernetes tree (~v1.24; see
# the README): e2e.test, ginkgo, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, agnhost, and kubelet for the kubelet modes; etcd
# comes from there or PATH (Debian's etcd-server). Nothing is built here:
# podctl and podctl-e2e-env must be built (cargo build -p podctl -p
# podctl-tests). Without the binaries the script says what is missing and
# exits 0 (CI has none).
#
# What it does, all on 127.0.0.1:
#  1. podctl-e2e-env builds the e2e images from Debian packages and agnhost
#     and serves them from local registries (one behind Basic auth), starts
#     etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the
#     node agent chosen by AGENT, and waits for the node to be Ready;
#  2. ginkgo runs e2e.test with FOCUS/SKIP, KUBE_TEST_REPO_LIST pointing
#     the e2e registries at the local ones;
#  3. prints ginkgo's summary and the failed specs, then stops everything
#     it started (by PID) and cleans up after the node agent.
#
# Environment:
#   E2E_BIN   the binaries (required)
#   AGENT     podctl (default): `podctl node`;
#             kubelet: a stock kubelet on `podctl serve`'s socket;
#             kubelet-containerd: a stock kubelet on a private containerd
#             (Debian's containerd and runc), the baseline to compare with
#   FOCUS     default '\[NodeConformance\]'
#   SKIP      default '\[Serial\]|\[Disruptive\]|\[Flaky\]|\[Slow\]'
#   NODES     ginkgo's parallel nodes (default 3)
#   PODCTL, ENVBIN  podctl and podctl-e2e-env (default target/debug/...)
#   WORK      work directory (default a new /tmp/podctl-e2e.XXXXXX); logs
#             stay there: e2e-env.log, podctl-node.log (or kubelet.log,
#             containerd.log, podctl-serve.log), the control plane's, e2e.log
# Exit status: ginkgo's (0 when every spec passed).
# shellcheck disable=SC2317  # cleanup runs from a trap
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
die() { echo "run.sh: $*" >&2; exit 2; }

AGENT=${AGENT:-podctl}
FOCUS=${FOCUS:-'\[NodeConformance\]'}
SKIP=${SKIP:-'\[Serial\]|\[Disruptive\]|\[Flaky\]|\[Slow\]'}
NODES=${NODES:-3}
PODCTL=${PODCTL:-$repo/target/debug/podctl}
ENVBIN=${ENVBIN:-$repo/target/debug/podctl-e2e-env}

need=(e2e.test ginkgo kube-apiserver kube-controller-manager kube-scheduler kubectl agnhost)
case "$AGENT" in
  podctl) ;;
  kubelet) need+=(kubelet) ;;
  kubelet-containerd) need+=(kubelet) ;;
  *) die "AGENT=$AGENT: want podctl, kubelet or kubelet-containerd" ;;
esac
missing=()
if [ -z "${E2E_BIN:-}" ]; then
  missing=("${need[@]}")
else
  for b in "${need[@]}"; do [ -x "$E2E_BIN/$b" ] || missing+=("$b"); done
fi
[ -x "${E2E_BIN:-/nonexistent}/etcd" ] || command -v etcd >/dev/null || missing+=(etcd)
if [ "$AGENT" = kubelet-containerd ]; then
  command -v containerd >/dev/null || missing+=(containerd)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "skipped: the e2e suite needs ${missing[*]} (set E2E_BIN; see the README for building them by hand)"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "the node agent needs root"
[ -x "$PODCTL" ] || die "no podctl at $PODCTL (cargo build -p podctl)"
[ -x "$ENVBIN" ] || die "no podctl-e2e-env at $ENVBIN (cargo build -p podctl-tests)"
E2E_BIN=$(cd "$E2E_BIN" && pwd)
export PATH="$E2E_BIN:$PATH"

WORK=${WORK:-$(mktemp -d /tmp/podctl-e2e.XXXXXX)}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
# The node agents run with hard eviction levels of 1% free disk (the
# kubelet's configuration and podctl node's --eviction-hard alike); below
# that the node has DiskPressure (tainted NoSchedule) and the suite's
# BeforeSuite waits up to 30 minutes for a schedulable node, silently.
free_pct=$(df --output=avail,size -k "$WORK" | awk 'NR == 2 { printf "%d", 100 * $1 / $2 }')
if [ "${free_pct:-100}" -lt 3 ]; then
  echo "run.sh: warning: only ${free_pct}% of the disk under $WORK is free; below 1% the node has DiskPressure and no spec runs" >&2
fi
env_pid=
ginkgo_pid=

cleanup() {
  local rc=$? i
  if [ -n "$ginkgo_pid" ] && kill -0 "$ginkgo_pid" 2>/dev/null; then
    kill -TERM "$ginkgo_pid" 2>/dev/null || true
    wait "$ginkgo_pid" 2>/dev/null || true
  fi
  if [ -n "$env_pid" ] && kill -0 "$env_pid" 2>/dev/null; then
    kill -TERM "$env_pid" 2>/dev/null || true
    for ((i = 0; i < 1200; i++)); do
      kill -0 "$env_pid" 2>/dev/null || break
      sleep 0.1
    done
    if kill -0 "$env_pid" 2>/dev/null; then
      echo "run.sh: podctl-e2e-env did not stop in 120 s; SIGKILL" >&2
      kill -KILL "$env_pid" 2>/dev/null || true
    fi
    wait "$env_pid" 2>/dev/null || true
  fi
  echo "run.sh: logs in $WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "run.sh: agent $AGENT, work directory $WORK"
"$ENVBIN" --bin "$E2E_BIN" --work "$WORK" --agent "$AGENT" --podctl "$PODCTL" \
  "$WORK/env" >"$WORK/env.out" 2>"$WORK/e2e-env.log" &
env_pid=$!
for ((i = 0; i < 6000; i++)); do
  grep -qx ready "$WORK/env.out" 2>/dev/null && break
  if ! kill -0 "$env_pid" 2>/dev/null; then
    tail -n 30 "$WORK/e2e-env.log" >&2
    die "the cluster did not come up (see $WORK/e2e-env.log)"
  fi
  sleep 0.1
done
grep -qx ready "$WORK/env.out" || die "the cluster was not ready in 10 min"
set -a
# shellcheck disable=SC1091
. "$WORK/env"
set +a
echo "run.sh: node $NODE_NAME Ready; running e2e.test (focus $FOCUS, skip $SKIP, $NODES nodes)"

set +e
"$E2E_BIN/ginkgo" -nodes="$NODES" -noColor -focus="$FOCUS" -skip="$SKIP" \
  "$E2E_BIN/e2e.test" -- \
  --provider=local --kubeconfig="$KUBECONFIG" --kubectl-path="$E2E_BIN/kubectl" \
  --docker-config-file="$DOCKER_CONFIG_FILE" --report-dir="$WORK/report" \
  --disable-log-dump --allowed-not-ready-nodes=0 --node-os-distro=debian "$@" \
  >"$WORK/e2e.log" 2>&1 &
ginkgo_pid=$!
# In the background, so that a signal reaches the traps at once.
wait "$ginkgo_pid"
rc=$?
ginkgo_pid=
set -e

echo "run.sh: ginkgo exited $rc"
grep -E '^Ran [0-9]+ of [0-9]+ Specs' "$WORK/e2e.log" | tail -n 1 || true
grep -E '^(SUCCESS|FAIL)! -- ' "$WORK/e2e.log" | tail -n 1 || true
passed=$(grep -Eo '[0-9]+ Passed' "$WORK/e2e.log" | tail -n 1 | grep -Eo '[0-9]+' || echo 0)
failed=$(grep -Eo '[0-9]+ Failed' "$WORK/e2e.log" | tail -n 1 | grep -Eo '[0-9]+' || echo 0)
echo "e2e ($AGENT): ${passed} passed, ${failed} failed"
if grep -q '^Summarizing' "$WORK/e2e.log"; then
  echo "failed specs:"
  sed -n '/^Summarizing/,$p' "$WORK/e2e.log" | grep -E '^\[Fail\]' | sed 's/^/  /' || true
fi
exit "$rc"
