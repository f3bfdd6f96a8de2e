#!/usr/bin/env bash
# The GPU check: a CUDA build (sm_90), the CUDA kernel and backend tests, the CPU tests, and the
# offline benchmark of Llama-3-8B shapes (dummy weights) on the CUDA backend. Prints a short
# table last. Results go to $OUT (default: build-gpu/out).
#
# The CUDA build uses FlashInfer's headers from third_party/ (scripts/fetch_third_party.sh; carry
# the folder to a machine without network).
#
# On a bare machine without the Debian dev packages, put their .deb files in .debs/ (git-ignored;
# scripts/make_gpu_debs.sh downloads them here, with a Boost header subset that keeps the carried
# tree under the device tool's 64 MiB) and they are unpacked into /tmp/nf-deps and used from there.
#
# Environment: BUILD (build dir, default build-gpu), JOBS (16), BENCHES (see below; default
# llama3-8b at 1024/512 with NUM_REQUESTS=256 requests), CPU_TESTS (1: also the CPU ctest),
# NF_REAL_SIZE_TESTS (default 1: GPU vs CPU engine on dummy llama3-8b/qwen2-7b), BENCH_TIMEOUT and
# TEST_TIMEOUT (seconds, default 300 and 600), NF_GIT_COMMIT (the commit results record; set it
# where the copy's .git may be stale or absent, as on the device machines),
# KERNEL_BENCHES (a gtest filter of the disabled kernel timings in tests/kernels/test_kernel_bench.cpp,
# e.g. 'Bench.DISABLED_Gemm:Bench.DISABLED_Elementwise'; run after the tests, log kernel_bench.log),
# TUNE (a model preset, e.g. llama3-8b: `nanoflow tune` before the benchmarks, writing
# $OUT/schedule_<model>.json, which a bench can then name: "llama3-8b 1024 512 2000 | --pipeline
# $OUT/schedule_llama3-8b.json"), TUNE_BUDGET (seconds, default 120), TUNE_FLAGS (more `tune`
# flags, e.g. "--tensor-parallel-size 2"),
# BUNDLE (1: at the end, everything in $OUT goes into $OUT/gpu_check.tgz and the rest is removed,
# for the device tool, which brings back at most 8 files), BUILD_ALL (0: build only the CLI and
# the kernel tests, for a short run with CPU_TESTS=0).
set -uo pipefail
cd "$(dirname "$0")/.."
# NVLink multicast stays off (the lent multi-GPU hosts require it: KINDS.md); NCCL runs without.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
BUILD=${BUILD:-build-gpu}
OUT=${OUT:-$BUILD/out}
JOBS=${JOBS:-16}
NUM_REQUESTS=${NUM_REQUESTS:-256}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}  # seconds per step, so that a slow step cannot hide the rest
TEST_TIMEOUT=${TEST_TIMEOUT:-600}
mkdir -p "$OUT"
[ -z "${NF_GIT_COMMIT:-}" ] && echo "gpu_check: NF_GIT_COMMIT is not set; results record this copy's" \
  "git HEAD ($(git rev-parse --short HEAD 2>/dev/null || echo none)), which a device copy may have stale" >&2
export NF_REAL_SIZE_TESTS=${NF_REAL_SIZE_TESTS:-1}

# The Debian dev packages from .debs/ on a bare machine (scripts/gpu_env.sh sets cmake_extra).
source scripts/gpu_env.sh

status_build=ok status_kernels=ok status_cpu=ok status_bench=ok
t0=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNANOFLOW_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 "${cmake_extra[@]}" >"$OUT/configure.log" 2>&1 \
  || { tail -30 "$OUT/configure.log"; echo "configure failed"; exit 1; }
# The CLI and the kernel tests first, then everything else (a broken unrelated test target must
# not hide the GPU results).
ninja -C "$BUILD" -j"$JOBS" nanoflow test_kernels >"$OUT/build.log" 2>&1 \
  || { grep -B2 -A12 -m5 "error" "$OUT/build.log"; echo "build failed"; exit 1; }
if [ "${BUILD_ALL:-1}" = 1 ]; then
  ninja -C "$BUILD" -j"$JOBS" -k 0 >>"$OUT/build.log" 2>&1 || status_build="partial (see build.log)"
fi
t_build=$(( $(date +%s) - t0 ))

# The kernel tests (every CUDA op against the CPU reference, FlashInfer included), then the
# backend end to end (golden fixtures, GPU vs CPU engine; real sizes with NF_REAL_SIZE_TESTS=1).
t0=$(date +%s)
timeout "$TEST_TIMEOUT" "$BUILD/tests/kernels/test_kernels" >"$OUT/kernels.log" 2>&1 || status_kernels=FAILED
t_kernels=$(( $(date +%s) - t0 ))
grep -E "PARITY|REPORT|GPU vs CPU|FAILED|PASSED|SKIPPED \[" "$OUT/kernels.log" | head -40
if [ -n "${KERNEL_BENCHES:-}" ]; then
  timeout "$TEST_TIMEOUT" "$BUILD/tests/kernels/test_kernels" --gtest_also_run_disabled_tests \
    --gtest_filter="$KERNEL_BENCHES" >"$OUT/kernel_bench.log" 2>&1 || echo "kernel benches FAILED"
  grep -vE "^\[|^$|^Note:" "$OUT/kernel_bench.log" | head -60
fi

# Benchmarks: BENCHES is a list of "model input output requests [dataset] [| extra flags]"
# separated by ';' (with a dataset its lengths are used and input/output are placeholders, e.g.
# "llama3-8b 0 0 1500 .data/AzureLLMInferenceTrace_conv.csv"); the extra flags go to
# `bench offline` and name the result (e.g.
# "llama3-8b 1024 512 2000 | --kv-admission greedy" -> bench_llama3-8b_1024_512_kv-admission-greedy).
BENCHES=${BENCHES:-"llama3-8b 1024 512 $NUM_REQUESTS"}
t0=$(date +%s)
if [ -n "${TUNE:-}" ]; then
  timeout "$BENCH_TIMEOUT" "$BUILD/nanoflow" tune --model "dummy:$TUNE" --max-batch-tokens 2048 \
    --budget-s "${TUNE_BUDGET:-120}" ${TUNE_FLAGS:-} --output "$OUT/schedule_$TUNE.json" >"$OUT/tune_$TUNE.log" 2>&1 \
    || status_bench="FAILED (tune $TUNE)"
  echo "== tune $TUNE"; tail -5 "$OUT/tune_$TUNE.log"
fi
IFS=';' read -ra bench_list <<<"$BENCHES"
for spec in "${bench_list[@]}"; do
  flags=""
  if [[ "$spec" == *"|"* ]]; then flags="${spec#*|}"; spec="${spec%%|*}"; fi
  read -r model in_len out_len nreq dataset <<<"$spec"
  [ -z "$model" ] && continue
  name="bench_${model}_${in_len}_${out_len}${dataset:+_$(basename "$dataset" | cut -d. -f1)}"
  tag=$(echo $flags | sed 's/^-*//; s/ -*/-/g; s/[^A-Za-z0-9._-]/-/g')
  [ -n "$tag" ] && name="${name}_${tag}"
  # With a trace the lengths come from it: input and output in the spec are placeholders.
  extra=(--input-len "$in_len" --output-len "$out_len")
  [ -n "$dataset" ] && extra=(--dataset "$dataset")
  read -ra flag_args <<<"$flags"
  extra+=("${flag_args[@]}")
  # The GPU's SM clock, power and temperature twice a second while it runs.
  smi_pid=""
  if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu \
      --format=csv,noheader,nounits -lms 500 >"$OUT/$name.smi.csv" 2>/dev/null &
    smi_pid=$!
  fi
  timeout "$BENCH_TIMEOUT" "$BUILD/nanoflow" bench offline --model "dummy:$model" --device cuda \
    --num-requests "$nreq" --max-batch-tokens 2048 \
    --max-running-requests 1024 "${extra[@]}" --result-json "$OUT/$name.json" >"$OUT/$name.log" 2>&1 \
    || status_bench="FAILED ($name)"
  [ -n "$smi_pid" ] && kill "$smi_pid" 2>/dev/null
  echo "== $name"; tail -22 "$OUT/$name.log"
  [ -s "$OUT/$name.smi.csv" ] && python3 - "$OUT/$name.smi.csv" <<'PY'
import sys, statistics as st
rows = [l.split(", ") for l in open(sys.argv[1]) if l.count(",") == 3]
clk = [float(r[1]) for r in rows]; pw = [float(r[2]) for r in rows]; tc = [float(r[3]) for r in rows]
busy = [i for i, p in enumerate(pw) if p > 200] or range(len(pw))
print("  GPU while busy: SM clock median %.0f MHz (min %.0f), power mean %.0f W (max %.0f), temperature max %.0f C, %d samples"
      % (st.median(clk[i] for i in busy), min(clk[i] for i in busy), st.mean(pw[i] for i in busy),
         max(pw), max(tc), len(busy)))
PY
done
t_bench=$(( $(date +%s) - t0 ))

if [ "${CPU_TESTS:-1}" = 1 ]; then
  t0=$(date +%s)
  timeout "$TEST_TIMEOUT" ctest --test-dir "$BUILD" -E kernels -j"$JOBS" --output-on-failure >"$OUT/ctest_cpu.log" 2>&1 \
    || status_cpu=FAILED
  t_cpu=$(( $(date +%s) - t0 ))
else
  status_cpu=skipped t_cpu=0
fi

echo
echo "== gpu_check summary =="
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1
printf '%-24s %-28s %s\n' step result seconds
printf '%-24s %-28s %s\n' build "$status_build" "$t_build"
printf '%-24s %-28s %s\n' "test_kernels" "$status_kernels $(grep -E '^\[  PASSED  \]' "$OUT/kernels.log" | cut -c14-40)" "$t_kernels"
printf '%-24s %-28s %s\n' "ctest (CPU)" "$status_cpu $(grep -E 'tests passed' "$OUT/ctest_cpu.log" | head -1 | cut -c1-20)" "$t_cpu"
printf '%-24s %-28s %s\n' "benchmarks" "$status_bench" "$t_bench"
grep -E "^PARITY|^GPU vs CPU|^REPORT .*(TP=|vs one GPU)" "$OUT/kernels.log" | sed 's/^/  /'
for f in "$OUT"/bench_*.json; do
  [ -f "$f" ] || continue
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); tp=d.get('tensor_parallel_size',1); print('  %-44s %9.0f tok/s  %5.1f%% of %7.0f (burst: %5.1f%% of %7.0f)%s' % (sys.argv[1].split('/')[-1], d['total_tokens_per_s'], d['pct_of_optimum'] or 0, d['optimum_tokens_per_s'] or 0, d.get('pct_of_burst_optimum') or 0, d.get('optimum_burst_tokens_per_s') or 0, ' TP=%d: %.0f tok/s per GPU' % (tp, d['total_tokens_per_s_per_gpu']) if tp > 1 else ''))" "$f"
done
if [ "${BUNDLE:-0}" = 1 ]; then
  tar czf /tmp/gpu_check.tgz -C "$OUT" . && rm -rf "${OUT:?}"/* && mv /tmp/gpu_check.tgz "$OUT/"
fi
