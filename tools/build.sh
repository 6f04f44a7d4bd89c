#!/usr/bin/env bash
# Configures (once) and builds cairn into build/ (optimised, with debug info).
# Binaries: build/bin/cairn-meta, cairn-chunk, mount.cairn, cairn.
set -euo pipefail
cd "$(dirname "$0")/.."
export CCACHE_DIR="${CCACHE_DIR:-$HOME/.ccache}"
if [ ! -f build/build.ninja ]; then
  cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi
# Two jobs by default: the reference machine has two cores; CAIRN_BUILD_JOBS overrides.
cmake --build build -j "${CAIRN_BUILD_JOBS:-2}"
# `mount -t cairn` runs /sbin/mount.cairn.
if [ "$(id -u)" -eq 0 ]; then
  ln -sf "$(pwd)/build/bin/mount.cairn" /sbin/mount.cairn
fi
echo "build: binaries in $(pwd)/build/bin"
