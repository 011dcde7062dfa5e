#!/usr/bin/env bash
# The test command: installs missing dependencies, then
#   1. Release build (native SIMD tier) + all tests,
#   2. Debug build with AddressSanitizer + UndefinedBehaviorSanitizer + all tests,
#   3. a ThreadSanitizer build of the threaded tests,
#   4. consumer projects: find_package(sparq) after install, and add_subdirectory,
#   5. the other SIMD tiers (x86-64-v3 = AVX2, x86-64 = SSE2, scalar, and aarch64 NEON
#      cross-built and run under qemu-user) build and pass the tier-dependent tests; the AVX2
#      binaries contain no AVX-512 instruction (checked by disassembly),
#   6. libFuzzer targets (clang, ASan + UBSan), SPARQ_FUZZ_SECONDS each (default 60),
#   7. clang-tidy over every public header (check set in .clang-tidy).
# Usage: bash scripts/test.sh        (build trees go to ./_build/)
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/install-deps.sh
jobs=${SPARQ_JOBS:-2}
out="$root/_build"
mkdir -p "$out"

echo "== [1/7] Release build and tests ($(date +%T))"
cmake -S . -B "$out/release" -DCMAKE_BUILD_TYPE=Release -DSPARQ_BUILD_BENCHMARKS=ON
cmake --build "$out/release" -j"$jobs"
ctest --test-dir "$out/release" --output-on-failure -j"$jobs"

echo "== [2/7] Debug build with ASan + UBSan and tests ($(date +%T))"
san="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
# Warnings are errors in the Release build above; here GCC 12 at -O1 reports its own AVX-512
# intrinsics as -Wuninitialized (GCC bug 105593), so warnings stay warnings in this build.
cmake -S . -B "$out/asan" -DCMAKE_BUILD_TYPE=Debug -DSPARQ_BUILD_BENCHMARKS=OFF -DSPARQ_WERROR=OFF \
  -DSPARQ_BUILD_EXAMPLES=OFF -DCMAKE_CXX_FLAGS="$san -O1" -DCMAKE_EXE_LINKER_FLAGS="$san"
cmake --build "$out/asan" -j"$jobs"
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir "$out/asan" --output-on-failure -j"$jobs" -E 'dhat|tiny_lm'

echo "== [3/7] ThreadSanitizer build of the threaded tests ($(date +%T))"
tsan="-fsanitize=thread -fno-omit-frame-pointer"
cmake -S . -B "$out/tsan" -DCMAKE_BUILD_TYPE=Debug -DSPARQ_BUILD_BENCHMARKS=OFF -DSPARQ_WERROR=ON \
  -DSPARQ_BUILD_EXAMPLES=OFF -DSPARQ_TESTS_ONLY="parallel|paged" -DCMAKE_CXX_FLAGS="$tsan -O1" \
  -DCMAKE_EXE_LINKER_FLAGS="$tsan"
cmake --build "$out/tsan" -j"$jobs"
TSAN_OPTIONS=halt_on_error=1 ctest --test-dir "$out/tsan" --output-on-failure -j1 -E 'dhat'

echo "== [4/7] Consumer projects ($(date +%T))"
rm -rf "$out/prefix"
cmake --install "$out/release" --prefix "$out/prefix"
if find "$out/prefix" -path '*test*' -o -path '*bench*' | grep -q .; then
  echo "install tree contains test or bench files:"; find "$out/prefix" -path '*test*' -o -path '*bench*'
  exit 1
fi
cmake -S tests/consumer/find_package -B "$out/consumer-find" -DCMAKE_PREFIX_PATH="$out/prefix"
cmake --build "$out/consumer-find" -j"$jobs"
"$out/consumer-find/consumer"
cmake -S tests/consumer/add_subdirectory -B "$out/consumer-subdir" -DSPARQ_SOURCE_DIR="$root"
cmake --build "$out/consumer-subdir" -j"$jobs"
"$out/consumer-subdir/consumer"

echo "== [5/7] SIMD tiers ($(date +%T))"
tier_tests="dtype|topk|stages|step|dense|traffic|merge|trace_accuracy|parallel|paged"
for arch in x86-64-v3 x86-64 scalar; do
  # Only the tests whose code paths depend on the SIMD tier (I/O, allocators and validation
  # are tier-independent and already ran above).
  cmake -S . -B "$out/tier-$arch" -DCMAKE_BUILD_TYPE=Release -DSPARQ_ARCH="$arch" \
    -DSPARQ_BUILD_BENCHMARKS=OFF -DSPARQ_BUILD_EXAMPLES=OFF \
    -DSPARQ_TESTS_ONLY="$tier_tests"
  cmake --build "$out/tier-$arch" -j"$jobs"
  ctest --test-dir "$out/tier-$arch" --output-on-failure -j"$jobs" -E 'dhat'
done
# An AVX2 build must never execute AVX-512: no zmm/k-mask register may appear in its code.
for bin in "$out"/tier-x86-64-v3/tests/test_*; do
  [ -x "$bin" ] || continue
  if objdump -d --no-show-raw-insn "$bin" | grep -qE '%zmm|%k[0-7]\b'; then
    echo "AVX-512 instruction found in AVX2 build: $bin"; exit 1
  fi
done
echo "AVX2 tier binaries: no AVX-512 instructions"
bash scripts/test-aarch64.sh

echo "== [6/7] fuzzing ($(date +%T))"
bash scripts/fuzz.sh "${SPARQ_FUZZ_SECONDS:-60}"

echo "== [7/7] clang-tidy ($(date +%T))"
bash scripts/tidy.sh
echo "== all test stages passed"
