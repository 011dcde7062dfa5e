#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each for a bounded time,
# starting from the seed corpus in tests/fuzz/corpus/ (copied, so the repo stays clean).
# Usage: bash scripts/fuzz.sh [seconds per target, default 60]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
secs=${1:-60}
out="$root/_build/fuzz"
mkdir -p "$out"
flags=(-std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Iinclude)
for target in step trace_io; do
  clang++ "${flags[@]}" -march=native "tests/fuzz/fuzz_${target}.cpp" -o "$out/fuzz_${target}"
  corpus_src=tests/fuzz/corpus/$([ "$target" = step ] && echo step || echo io)
  rm -rf "$out/corpus_${target}" && cp -r "$corpus_src" "$out/corpus_${target}"
  echo "== fuzz_${target}: ${secs}s"
  status=0
  "$out/fuzz_${target}" -max_total_time="$secs" -max_len=4096 -print_final_stats=1 \
    -artifact_prefix="$out/crash_${target}_" "$out/corpus_${target}" > "$out/fuzz_${target}.log" 2>&1 \
    || status=$?
  grep -E "stat::number_of_executed_units|Done" "$out/fuzz_${target}.log" || true
  if [ "$status" -ne 0 ]; then
    tail -n 60 "$out/fuzz_${target}.log"
    echo "fuzz_${target} failed (exit $status); reproducer: $out/crash_${target}_*"
    exit 1
  fi
done
echo "== fuzzing passed"
