#!/usr/bin/env bash
# Set-up command (1): installs what is needed, fetches the default model, builds, runs a demo
# generation, then the main job: the OpenAI-compatible server on the default model (port
# $NF_PORT, default 8000; Ctrl-C stops it; NF_NO_SERVE=1 stops after the demo).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
bash scripts/install_deps.sh
bash scripts/fetch_model.sh
bash scripts/build.sh
./build/nanoflow generate --model models/SmolLM2-135M-Instruct.Q4_1.gguf \
  --prompt "The three most useful things to pack for a day of hiking are" \
  --max-tokens 48 --temperature 0
[ "${NF_NO_SERVE:-0}" = 1 ] && exit 0
port="${NF_PORT:-8000}"
echo "serving SmolLM2-135M-Instruct on http://127.0.0.1:$port (OpenAI API: /v1/chat/completions; Ctrl-C stops)"
exec ./build/nanoflow serve --model models/SmolLM2-135M-Instruct.Q4_1.gguf --port "$port"
