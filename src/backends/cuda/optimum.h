// NanoFlow's yardstick, profiled on this GPU: the compute-bound optimum of a model is the dense
// batch's tokens divided by the time of its layer GEMMs at that batch (cuBLASLt, bf16, fp32
// accumulate), attention and the LM head excluded (DESIGN.md, "Measuring performance").
//
// Two measurements. Burst: each GEMM alone, ~70 runs (~50 ms), on a cool GPU at its boost clock.
// Sustained: the layer's GEMMs in turn for a few seconds, timed once the GPU has reached its
// power limit. On the H200 (700 W) any run longer than a fraction of a second is at that limit:
// the SM clock drops from 1,980 MHz to ~1,550 MHz within a second of a serving run's start
// (bench/results/power_and_optimum.json), so the sustained figure is the throughput a GEMM-only
// engine could keep up, and the yardstick; the burst one is reported beside it.
#pragma once

#include <string>
#include <vector>

#include "model/model_config.h"

namespace nf::cuda {

struct GemmTiming {
  std::string name;  // qkv, o, gate_up, down
  int64_t m = 0, n = 0, k = 0;
  double ms = 0;       // median of the timed runs
  double tflops = 0;
};

struct OptimumProfile {
  int batch_tokens = 0;
  std::vector<GemmTiming> gemms;  // one layer's GEMMs
  double layer_ms = 0;            // their sum
  double gemm_tflops = 0;         // their FLOPs over layer_ms
  double tokens_per_s = 0;        // batch_tokens / (num_layers * layer_ms)
  // The same layer GEMMs run in turn for `sustain_seconds`, timed over the second half.
  double sustain_seconds = 0;
  double sustained_layer_ms = 0;
  double sustained_gemm_tflops = 0;
  double sustained_tokens_per_s = 0;
  // The GPU's mean power over that second half and the GEMMs' joules per token there (0 where
  // not measured or NVML cannot be read, backends/cuda/gpu_power.h).
  double sustained_power_w = 0;
  double sustained_j_per_token = 0;
  // The yardstick: the sustained figures when measured, else the burst ones.
  bool sustained() const { return sustained_tokens_per_s > 0; }
  double yardstick_tokens_per_s() const { return sustained() ? sustained_tokens_per_s : tokens_per_s; }
  double yardstick_gemm_tflops() const { return sustained() ? sustained_gemm_tflops : gemm_tflops; }
};

// Times one layer's GEMMs at m = batch_tokens on `device` (fresh buffers, freed on return; run
// it before the engine takes the GPU's memory): burst, then sustained for `sustain_seconds`
// (0: skipped, the sustained fields stay 0).
OptimumProfile profile_optimum(const ModelConfig& config, int batch_tokens, int device = 0,
                               double sustain_seconds = 4.0);

}  // namespace nf::cuda
