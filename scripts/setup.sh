#!/usr/bin/env bash
# Set-up command (1): installs what is needed, fetches the default model, builds, and runs a
# demo generation on the default model.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/install_deps.sh
bash scripts/fetch_model.sh
bash scripts/build.sh
./build/nanoflow generate --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
  --prompt "The three most useful things to pack for a day of hiking are" \
  --max-tokens 48 --temperature 0
