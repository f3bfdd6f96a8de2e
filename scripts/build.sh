#!/usr/bin/env bash
# Configures and builds into build/ (CUDA sources too when nvcc is found: NANOFLOW_CUDA=AUTO).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/fetch_third_party.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE="${BUILD_TYPE:-Release}" \
  -DNANOFLOW_CUDA="${NANOFLOW_CUDA:-AUTO}" >/dev/null
cmake --build build -j "${JOBS:-$(nproc)}"
