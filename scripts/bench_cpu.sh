#!/usr/bin/env bash
# CPU speed of the default model: one request, then 16 concurrent requests (128 in / 128 out),
# results in bench/results/. A benchmark, not a test: numbers depend on the machine.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
model="${MODEL:-models/SmolLM2-135M-Instruct.Q4_1.gguf}"
for n in 1 16; do
  ./build/nanoflow bench offline --model "$model" --num-requests "$n" --input-len 128 \
    --output-len 128 --result-json "bench/results/cpu_smollm2_135m_${n}req.json"
done
