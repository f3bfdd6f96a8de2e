#!/usr/bin/env bash
# The GPU check: a CUDA build (sm_90), the CUDA kernel and backend tests, the CPU tests, and the
# offline benchmark of Llama-3-8B shapes (dummy weights) on the CUDA backend. Prints a short
# table last. Results go to $OUT (default: build-gpu/out).
#
# On a bare machine without the Debian dev packages, put their .deb files in .debs/ (git-ignored;
# `apt-get download` them here) and they are unpacked into /tmp/nf-deps and used from there.
#
# Environment: BUILD (build dir, default build-gpu), NUM_REQUESTS (default 256), JOBS (16),
# BENCH_TIMEOUT and TEST_TIMEOUT (seconds, default 300 each).
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-gpu}
OUT=${OUT:-$BUILD/out}
JOBS=${JOBS:-16}
NUM_REQUESTS=${NUM_REQUESTS:-256}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}  # seconds per step, so that a slow step cannot hide the rest
TEST_TIMEOUT=${TEST_TIMEOUT:-300}
mkdir -p "$OUT"

cmake_extra=()
if compgen -G ".debs/*.deb" >/dev/null; then
  deps=/tmp/nf-deps
  mkdir -p "$deps"
  for f in .debs/*.deb; do dpkg -x "$f" "$deps"; done
  lib=$deps/usr/lib/x86_64-linux-gnu
  ln -sf openblas-pthread/libopenblas.so.0 "$lib/libopenblas.so.0"
  export PKG_CONFIG_PATH=$lib/openblas-pthread/pkgconfig:$lib/pkgconfig:$deps/usr/share/pkgconfig
  export PKG_CONFIG_SYSROOT_DIR=$deps
  export LD_LIBRARY_PATH=$lib/openblas-pthread:$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  cmake_extra+=(-DCMAKE_PREFIX_PATH="$deps/usr" -DPKG_CONFIG_EXECUTABLE="$deps/usr/bin/pkgconf")
fi

status_build=ok status_kernels=ok status_cpu=ok status_bench=ok
t0=$(date +%s)
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DNANOFLOW_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES=90 "${cmake_extra[@]}" >"$OUT/configure.log" 2>&1 \
  || { tail -30 "$OUT/configure.log"; echo "configure failed"; exit 1; }
# The CLI and the kernel tests first, then everything else (a broken unrelated test target must
# not hide the GPU results).
ninja -C "$BUILD" -j"$JOBS" nanoflow test_kernels >"$OUT/build.log" 2>&1 \
  || { grep -B2 -A12 -m5 "error" "$OUT/build.log"; echo "build failed"; exit 1; }
ninja -C "$BUILD" -j"$JOBS" -k 0 >>"$OUT/build.log" 2>&1 || status_build="partial (see build.log)"
t_build=$(( $(date +%s) - t0 ))

"$BUILD/tests/kernels/test_kernels" --gtest_filter='*CudaBackend*' 2>&1 \
  | tee "$OUT/cuda_backend_test.log" | grep -E "PARITY|REPORT|GPU vs CPU|OK|FAILED|PASSED"
t0=$(date +%s)
timeout "$BENCH_TIMEOUT" "$BUILD/nanoflow" bench offline --model dummy:llama3-8b --device cuda \
  --num-requests "$NUM_REQUESTS" --input-len 1024 --output-len 128 --max-batch-tokens 2048 \
  --result-json "$OUT/bench_llama3_8b.json" >"$OUT/bench.log" 2>&1 || status_bench=FAILED
t_bench=$(( $(date +%s) - t0 ))
tail -15 "$OUT/bench.log"

t0=$(date +%s)
timeout "$TEST_TIMEOUT" ctest --test-dir "$BUILD" -R kernels --output-on-failure >"$OUT/ctest_kernels.log" 2>&1 \
  || status_kernels=FAILED
t_kernels=$(( $(date +%s) - t0 ))
t0=$(date +%s)
timeout "$TEST_TIMEOUT" ctest --test-dir "$BUILD" -E kernels -j"$JOBS" --output-on-failure >"$OUT/ctest_cpu.log" 2>&1 \
  || status_cpu=FAILED
t_cpu=$(( $(date +%s) - t0 ))

echo
echo "== gpu_check summary =="
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1
printf '%-24s %-28s %s\n' step result seconds
printf '%-24s %-28s %s\n' build "$status_build" "$t_build"
printf '%-24s %-28s %s\n' "ctest -R kernels" "$status_kernels $(grep -E 'tests passed' "$OUT/ctest_kernels.log" | head -1 | cut -c1-20)" "$t_kernels"
printf '%-24s %-28s %s\n' "ctest (CPU)" "$status_cpu $(grep -E 'tests passed' "$OUT/ctest_cpu.log" | head -1 | cut -c1-20)" "$t_cpu"
printf '%-24s %-28s %s\n' "bench llama3-8b" "$status_bench" "$t_bench"
grep -E "^PARITY|^GPU vs CPU" "$OUT/cuda_backend_test.log" | sed 's/^/  /'
if [ -f "$OUT/bench_llama3_8b.json" ]; then
  python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print('  bench:', {k: v for k, v in d.items() if not isinstance(v, (dict, list))})" "$OUT/bench_llama3_8b.json"
fi
