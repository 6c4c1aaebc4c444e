#!/usr/bin/env bash
# The test command: installs what the tests need, runs every test of the
# workspace, then the VM suite (systemd cgroup driver on a real node).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --workspace --all-targets
cargo test --workspace -- --test-threads 2
# The systemd cgroup driver on a real node: systemd PID 1, cgroup v2, in a VM.
bash tests/vm/test.sh
