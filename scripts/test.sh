#!/usr/bin/env bash
# The test command: installs what the tests need, runs every test of the
# workspace, the README's build command into a clean target directory (and
# a pod from what it built), packages those binaries, then the VM suite
# (systemd cgroup driver and the package on a real node).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --workspace --all-targets
# Everything but the crash tests and the fuzz targets, which run next,
# once, with their output: each crash test prints the crash points it
# covered, each fuzz target its executions (seeds in tests/fuzz/<target>;
# see tests/src/fuzz.rs), with more executions than a plain `cargo test`.
cargo test --workspace -- --test-threads 2 --skip cut_at_each_crash_point --skip fuzz_
cargo test -p podctl-cri --test crash --test crash_pull -- --nocapture --test-threads 1
cargo test -p podctl-tests --test crash_sync -- --nocapture
fuzz() { # crate-selection target executions
  PODCTL_FUZZ_ITERS=$3 cargo test $1 "fuzz_$2" -- --nocapture
}
fuzz "-p podctl-images --lib" image_reference 200000
fuzz "-p podctl-images --lib" registry_challenge 200000
fuzz "-p podctl-images --lib" manifest 200000
fuzz "-p podctl-images --lib" layer_tar 20000
fuzz "-p podctl-cri --lib" h2_authority 100000
fuzz "-p podctl-cri --lib" spdy_frames 100000
fuzz "-p podctl-cri --lib" spdy_headers 20000
fuzz "-p podctl-cri --lib" cri_requests 200000
fuzz "-p podctl-cri --lib" websocket_frames 100000
fuzz "-p podctl-cri --lib" nri_frames 100000
fuzz "-p podctl --bin podctl" pod_yaml 30000
# A release build from scratch: minutes (see README), once per run.
export PODCTL_README_TARGET=$PWD/target/readme-build
cargo test -p podctl-tests --test readme_build -- --ignored --nocapture
# The package the VM suite installs, made from those same binaries.
PODCTL_DEB=$(CARGO_TARGET_DIR=$PODCTL_README_TARGET bash scripts/package.sh --no-build)
export PODCTL_DEB
bash tests/vm/test.sh
