#!/usr/bin/env bash
# Install the build and test dependencies of mcorefs (Debian 12 / bookworm package names).
# Needs root (or sudo).  Used by .ci/run; developers can run it once.
set -euo pipefail

PKGS=(
  cmake gcc clang pkg-config make
  libfuse3-dev fuse3
  libcjson-dev libxxhash-dev libcmocka-dev
  python3 python3-numpy python3-torch
  valgrind gdb
  man-db groff-base
)

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends "${PKGS[@]}"
