#!/usr/bin/env bash
# The main job: installs missing dependencies, builds Release for this CPU, and runs
# sparq-bench (SparQ vs dense decode attention, with the in-process bandwidth roof).
# Usage: bash scripts/bench.sh [sparq-bench arguments, e.g. --quick --json out.json]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bash scripts/install-deps.sh
cmake -S . -B _build/release -DCMAKE_BUILD_TYPE=Release -DSPARQ_BUILD_TESTS=OFF
cmake --build _build/release -j"${SPARQ_JOBS:-2}" --target sparq-bench
exec _build/release/bench/sparq-bench "$@"
