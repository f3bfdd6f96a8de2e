#!/usr/bin/env bash
# Set-up command (2): runs the whole test suite (installs, fetches and builds first if needed).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/install_deps.sh
bash scripts/fetch_model.sh
bash scripts/build.sh
cd build
ctest --output-on-failure -j "${JOBS:-$(nproc)}"
