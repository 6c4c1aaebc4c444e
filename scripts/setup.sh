#!/usr/bin/env bash
# Install what building and testing podctl needs on a Debian 12 machine (as root).
set -euo pipefail
packages=(
  protobuf-compiler        # protoc, for the CRI api.proto shipped by the k8s-cri crate
  docker-registry          # the distribution registry the test bed runs on 127.0.0.1
  busybox                  # dynamic busybox the image fixtures are built from
  nginx                    # nginx for critest's web-server images (tests/src/critest_images.rs)
  procps                   # pgrep for critest's busybox image (Debian's busybox has none)
  apache2-utils            # htpasswd for the auth-enabled registry fixture
  openssl                  # keys and signatures for the token-auth realm
  libseccomp-dev pkg-config
  containernetworking-plugins iproute2 iptables
  zstd ca-certificates
  curl netcat-openbsd      # curl and nc in the e2e suite's agnhost image (tests/src/e2e_images.rs)
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
