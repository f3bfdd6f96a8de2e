// The CPU backend: fp32 weights and KV cache in host memory, OpenBLAS GEMMs, a thread pool for
// the rest. Runs the same ScheduledBatch contract as the CUDA backend and is its test oracle.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backends/cpu/ops.h"
#include "common/thread_pool.h"
#include "model/model_config.h"
#include "model/weight_source.h"
#include "runtime/backend.h"

namespace nf {

struct CpuBackendConfig {
  int block_size = 16;
  double kv_cache_gb = 1.0;    // host memory for the KV cache, when num_kv_blocks is 0
  int64_t num_kv_blocks = 0;   // exact pool size (tests)
  int threads = 0;             // 0: one per hardware thread
};

class CpuBackend final : public Backend {
 public:
  // Reads (and dequantizes) every weight from the source. Throws nf::Error on bad weights or
  // when the KV cache does not fit.
  CpuBackend(const ModelConfig& config, const WeightSource& weights, const CpuBackendConfig& opts);

  const ModelConfig& config() const override { return config_; }
  int block_size() const override { return opts_.block_size; }
  int64_t num_kv_blocks() const override { return num_blocks_; }
  void forward(const ScheduledBatch& batch, std::span<float> logits) override;

 private:
  struct Layer {
    std::vector<float> attn_norm;  // [hidden]
    std::vector<float> w_qkv;      // [(heads + 2 * kv_heads) * head_dim, hidden]
    std::vector<float> b_qkv;      // [(heads + 2 * kv_heads) * head_dim], empty without bias
    std::vector<float> w_o;        // [hidden, heads * head_dim]
    std::vector<float> ffn_norm;   // [hidden]
    std::vector<float> w_gate_up;  // [2 * intermediate, hidden]: gate rows, then up rows
    std::vector<float> w_down;     // [hidden, intermediate]
    std::vector<float> kv;         // [num_blocks, 2, kv_heads, block_size, head_dim]
  };
  cpu::PagedKv layer_cache(Layer& l);

  ModelConfig config_;
  CpuBackendConfig opts_;
  ThreadPool pool_;
  int64_t num_blocks_ = 0;
  std::vector<float> embed_;       // [vocab, hidden]
  std::vector<float> final_norm_;  // [hidden]
  std::vector<float> lm_head_;     // [vocab, hidden], empty when tied to embed_
  std::vector<float> inv_freq_;    // [head_dim / 2]
  std::vector<Layer> layers_;
  // Activations, grown to the largest batch seen.
  std::vector<float> x_, h_, qkv_, attn_, gate_up_, act_, rows_;
};

}  // namespace nf
