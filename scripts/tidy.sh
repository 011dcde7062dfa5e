#!/usr/bin/env bash
# Runs clang-tidy (check set in .clang-tidy) over every public header of include/sparq,
# each compiled on its own (so each header is also checked to be self-contained).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
tidy=$(command -v clang-tidy || command -v clang-tidy-14)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
status=0
for h in include/sparq/*.hpp include/sparq/io/*.hpp; do
  rel=${h#include/}
  printf '#include <%s>\n' "$rel" > "$tmp/tu.cpp"
  if ! "$tidy" --quiet --config-file="$root/.clang-tidy" "$tmp/tu.cpp" -- -std=c++17 -march=x86-64-v3 -Iinclude > "$tmp/out.txt" 2>&1; then
    echo "clang-tidy: $rel"; cat "$tmp/out.txt"; status=1
  fi
done
[ $status -eq 0 ] && echo "clang-tidy: all headers clean"
exit $status
