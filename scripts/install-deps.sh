#!/usr/bin/env bash
# Installs the Debian packages sparq's build, tests and benchmarks need, if any is missing.
# Usage: bash scripts/install-deps.sh   (as root, or with sudo available)
set -euo pipefail
pkgs=(build-essential cmake clang clang-tidy libclang-rt-14-dev libxsimd-dev libeigen3-dev libgtest-dev libgmock-dev
      libbenchmark-dev valgrind python3)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then sudo_cmd=(sudo); fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
