#!/usr/bin/env bash
# Host time of one engine iteration (scheduler + KV manager + batch building) at 512 and 680
# running requests and a 2048-token budget, with a backend that does no work.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
out=bench/results/host_engine_step.json
./build/bench_host --benchmark_out="$out" --benchmark_out_format=json \
  --benchmark_context=command="scripts/bench_host.sh" \
  --benchmark_context=git_commit="$(git rev-parse HEAD)" \
  --benchmark_context=device="host CPU only (NullBackend)"
