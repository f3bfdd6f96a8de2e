// NanoFlow's yardstick, profiled on this GPU: the compute-bound optimum of a model is the dense
// batch's tokens divided by the time of its layer GEMMs at that batch (cuBLASLt, bf16, fp32
// accumulate), attention and the LM head excluded (DESIGN.md, "Measuring performance").
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
};

// Times one layer's GEMMs at m = batch_tokens on `device` (fresh buffers, freed on return; run
// it before the engine takes the GPU's memory).
OptimumProfile profile_optimum(const ModelConfig& config, int batch_tokens, int device = 0);

}  // namespace nf::cuda
