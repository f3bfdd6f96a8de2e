// The CUDA backend: bf16 weights and a paged bf16 KV cache on one GPU, cuBLASLt GEMMs (fp32
// accumulate) and our own kernels for the rest, all on one stream owned by the backend. Runs the
// same ScheduledBatch contract as the CPU backend; forward() leaves fp32 logits on the host and
// the executor samples there.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "backends/cuda/gemm.h"
#include "backends/cuda/tensor.h"
#include "model/model_config.h"
#include "model/weight_source.h"
#include "runtime/backend.h"

namespace nf {

struct CudaBackendConfig {
  int block_size = 16;
  double gpu_memory_utilization = 0.90;  // share of the GPU's memory the backend may hold
  int64_t num_kv_blocks = 0;             // exact KV pool size (tests); 0: fill the memory share
  int device = 0;                        // CUDA device index
  int max_batch_tokens = 2048;           // activations are sized for this many tokens per forward
};

class CudaBackend final : public Backend {
 public:
  // Reads every weight from the source one tensor at a time (host fp32 -> bf16 -> device), then
  // sizes the KV pool. rope_inv_freq: [head_dim / 2], nf::rope_inv_freq(config.rope, head_dim)
  // (computed by the caller: this library links before the model code that defines it).
  // Throws nf::Error when there is no such device or the model does not fit.
  CudaBackend(const ModelConfig& config, const WeightSource& weights,
              std::span<const float> rope_inv_freq, const CudaBackendConfig& opts);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  const ModelConfig& config() const override { return config_; }
  int block_size() const override { return opts_.block_size; }
  int64_t num_kv_blocks() const override { return num_blocks_; }
  void forward(const ScheduledBatch& batch, std::span<float> logits) override;

 private:
  struct Layer {
    cuda::DeviceBuffer attn_norm;  // [hidden] bf16
    cuda::DeviceBuffer w_qkv;      // [(heads + 2 * kv_heads) * head_dim, hidden] bf16
    cuda::DeviceBuffer b_qkv;      // [(heads + 2 * kv_heads) * head_dim] bf16; empty without bias
    cuda::DeviceBuffer w_o;        // [hidden, heads * head_dim] bf16
    cuda::DeviceBuffer ffn_norm;   // [hidden] bf16
    cuda::DeviceBuffer w_gate_up;  // [2 * intermediate, hidden] bf16: gate rows, then up rows
    cuda::DeviceBuffer w_down;     // [hidden, intermediate] bf16
    cuda::DeviceBuffer kv;         // [num_blocks, 2, kv_heads, block_size, head_dim] bf16
  };
  struct PinnedFree {
    void operator()(void* p) const;
  };

  // Reads the tensors (HF names) as consecutive row ranges of one new bf16 device matrix.
  cuda::DeviceBuffer upload(const WeightSource& w, const std::vector<std::string>& names,
                            const std::vector<int64_t>& numels);
  void allocate_kv_pool();
  // Copies the batch's integer metadata to the device in one transfer; returns the max context.
  int64_t upload_metadata(const ScheduledBatch& b);
  void run_layers(const ScheduledBatch& b, int64_t max_context);

  ModelConfig config_;
  CudaBackendConfig opts_;
  cudaStream_t stream_ = nullptr;
  int sm_count_ = 0;
  int64_t num_blocks_ = 0;
  std::unique_ptr<cuda::Gemm> gemm_;
  std::vector<float> staging_f32_;  // host staging of one tensor while loading, then freed
  std::vector<uint16_t> staging_bf16_;
  cuda::DeviceBuffer embed_;       // [vocab, hidden] bf16
  cuda::DeviceBuffer final_norm_;  // [hidden] bf16
  cuda::DeviceBuffer lm_head_;     // [vocab, hidden] bf16; empty when tied to embed_
  cuda::DeviceBuffer inv_freq_;    // [head_dim / 2] f32
  std::vector<Layer> layers_;

  // Activations for up to max_batch_tokens tokens (T below).
  cuda::DeviceBuffer residual_;        // [T, hidden] bf16, the residual stream
  cuda::DeviceBuffer h_;               // [T, hidden] bf16, normed input / GEMM output
  cuda::DeviceBuffer qkv_;             // [T, (heads + 2 * kv_heads) * head_dim] bf16
  cuda::DeviceBuffer attn_;            // [T, heads * head_dim] bf16
  cuda::DeviceBuffer gate_up_;         // [T, 2 * intermediate] bf16
  cuda::DeviceBuffer act_;             // [T, intermediate] bf16
  cuda::DeviceBuffer rows_;            // [S <= T, hidden] bf16, the final-normed sample rows
  cuda::DeviceBuffer logits_;          // [S <= T, vocab] f32
  cuda::DeviceBuffer error_;           // [1] i32, the embedding lookups' out-of-range flag
  cuda::DeviceBuffer attn_workspace_;  // u8, grown to the largest split-K need seen

  // Batch metadata, host (pinned) and device, same layout (see upload_metadata), grown on need.
  std::unique_ptr<std::byte, PinnedFree> meta_host_;
  size_t meta_host_bytes_ = 0;
  cuda::DeviceBuffer meta_dev_;
  cuda::TensorView ids_, positions_, seq_indptr_, block_indptr_, block_ids_, sample_rows_, slots_;
  std::unique_ptr<int32_t, PinnedFree> error_host_;  // [1] i32
};

}  // namespace nf
