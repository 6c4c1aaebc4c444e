#!/usr/bin/env bash
# Build the Debian package (as the ecosystem does: cargo-deb):
#   bash scripts/package.sh [--no-build]
# prints the path of target/debian/podctl_<version>-1_<arch>.deb (only that
# goes to stdout).
#
# Installs cargo-deb from crates.io when it is missing (or another version),
# builds the release binaries with the README's command unless --no-build
# (then the binaries in $CARGO_TARGET_DIR/release, default target/release,
# are packaged as they are), generates the man pages and shell completions
# from that podctl, and packages it all. Install the result with
#   apt-get install ./target/debian/podctl_*.deb
set -euo pipefail
cd "$(dirname "$0")/.."
cargo_deb_version=3.8.0
build=1
case "${1:-}" in
  --no-build) build=0 ;;
  "") ;;
  *) echo "usage: $0 [--no-build]" >&2; exit 2 ;;
esac
if ! cargo deb --version 2>/dev/null | grep -qF "$cargo_deb_version"; then
  echo "package.sh: installing cargo-deb $cargo_deb_version from crates.io" >&2
  cargo install cargo-deb --version "$cargo_deb_version" --locked
fi
target=${CARGO_TARGET_DIR:-target}
if [ "$build" = 1 ]; then
  cargo build --release -p podctl -p podctl-shim
fi
release=$target/release
for b in podctl podctl-shim podctl-shim-watch; do
  [ -x "$release/$b" ] || { echo "package.sh: $release/$b is missing (build first)" >&2; exit 1; }
done
# Generated from the binary being packaged, so they match it.
gen=$release/pkg
rm -rf "$gen"
mkdir -p "$gen/man" "$gen/completions"
"$release/podctl" man "$gen/man"
gzip -9n "$gen"/man/*.1
"$release/podctl" completion bash >"$gen/completions/podctl.bash"
"$release/podctl" completion zsh >"$gen/completions/_podctl"
"$release/podctl" completion fish >"$gen/completions/podctl.fish"
# cargo deb prints the package's path; that is this script's only stdout.
cargo deb -p podctl --no-build | tail -n 1
