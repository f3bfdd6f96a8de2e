#!/usr/bin/env bash
# A/B throughput of two builds on this GPU, in one run and both orders: `bench offline` of
# dummy:$MODEL at $IN/$OUT_LEN with $NREQ requests, run as base, head, head, base.
# Usage: scripts/gpu_ab.sh BASE_SRC [BASE_COMMIT]
#   BASE_SRC: a source tree of the base commit (e.g. `git archive <commit> CMakeLists.txt src apps
#   include scripts | tar -x -C .base`, carried to the device); it is built with this tree's
#   third_party/. The head is this tree, built into $BUILD (default build-gpu, reused when
#   gpu_check.sh built it). Results: $OUT/ab_<n>_<base|head>.json and a table; the head's commit
#   comes from NF_GIT_COMMIT.
set -uo pipefail
cd "$(dirname "$0")/.."
base_src=${1:?usage: gpu_ab.sh BASE_SRC [BASE_COMMIT]}
base_commit=${2:-base}
BUILD=${BUILD:-build-gpu}
OUT=${OUT:-$BUILD/out}
JOBS=${JOBS:-16}
MODEL=${MODEL:-llama3-8b}
IN=${IN:-1024}
OUT_LEN=${OUT_LEN:-512}
NREQ=${NREQ:-512}
mkdir -p "$OUT"
source scripts/gpu_env.sh
[ -e "$base_src/third_party" ] || ln -s "$PWD/third_party" "$base_src/third_party"
for side in base head; do
  src=.; dir=$BUILD
  [ "$side" = base ] && src=$base_src && dir=build-ab-base
  cmake -S "$src" -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNANOFLOW_CUDA=ON \
    -DNANOFLOW_TESTS=OFF -DCMAKE_CUDA_ARCHITECTURES=90 "${cmake_extra[@]}" >"$OUT/ab_configure_$side.log" 2>&1 \
    || { tail -20 "$OUT/ab_configure_$side.log"; exit 1; }
  ninja -C "$dir" -j"$JOBS" nanoflow >"$OUT/ab_build_$side.log" 2>&1 \
    || { grep -m5 -A8 error "$OUT/ab_build_$side.log"; exit 1; }
done
n=0
for side in base head head base; do
  n=$((n + 1))
  bin=$BUILD/nanoflow
  commit=${NF_GIT_COMMIT:-head}
  [ "$side" = base ] && bin=build-ab-base/nanoflow && commit=$base_commit
  NF_GIT_COMMIT=$commit timeout 600 "$bin" bench offline --model "dummy:$MODEL" --device cuda \
    --num-requests "$NREQ" --input-len "$IN" --output-len "$OUT_LEN" --max-batch-tokens 2048 \
    --max-running-requests 1024 --result-json "$OUT/ab_${n}_$side.json" >"$OUT/ab_${n}_$side.log" 2>&1 \
    || echo "run $n ($side) FAILED"
done
echo "== A/B $MODEL $IN/$OUT_LEN, $NREQ requests ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -1))"
for f in "$OUT"/ab_*_*.json; do
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('  %-16s %-10s %9.1f tok/s  %5.1f%% of optimum' % (sys.argv[1].split('/')[-1], d.get('git_commit') or '-', d['total_tokens_per_s'], d['pct_of_optimum'] or 0))" "$f"
done
