#!/usr/bin/env bash
# Cross-builds the tests for aarch64 (NEON tier) and runs them under qemu-user.
# Installs g++-aarch64-linux-gnu and qemu-user if missing; GoogleTest is built for aarch64
# from Debian's source package (/usr/src/googletest).
# Usage: bash scripts/test-aarch64.sh
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
need=()
command -v aarch64-linux-gnu-g++ >/dev/null || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
if [ ${#need[@]} -gt 0 ]; then
  sudo_cmd=(); [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
jobs=${SPARQ_JOBS:-2}
out="$root/_build/aarch64"
tc="$root/cmake/toolchain-aarch64.cmake"
if [ ! -f "$out/gtest-prefix/lib/cmake/GTest/GTestConfig.cmake" ]; then
  cmake -S /usr/src/googletest -B "$out/gtest" -DCMAKE_TOOLCHAIN_FILE="$tc" \
    -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$out/gtest-prefix"
  cmake --build "$out/gtest" -j"$jobs"
  cmake --install "$out/gtest"
fi
# xsimd is header-only: its host package config serves the cross build.
xsimd_dir=$(dirname "$(dpkg -L libxsimd-dev | grep -m1 'xsimdConfig.cmake$')")
cmake -S . -B "$out/sparq" -DCMAKE_TOOLCHAIN_FILE="$tc" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$out/gtest-prefix" -Dxsimd_DIR="$xsimd_dir" -DSPARQ_ARCH=armv8-a \
  -DSPARQ_BUILD_BENCHMARKS=OFF -DSPARQ_BUILD_EXAMPLES=OFF \
  -DSPARQ_TESTS_ONLY="dtype|topk|stages|step|dense|merge|trace_accuracy|parallel"
cmake --build "$out/sparq" -j"$jobs"
ctest --test-dir "$out/sparq" --output-on-failure -j"$jobs" -E 'dhat'
echo "== aarch64 (NEON) tests passed under qemu"
