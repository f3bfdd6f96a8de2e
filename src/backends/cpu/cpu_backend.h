// The CPU backend: fp32 weights and KV cache in host memory, OpenBLAS GEMMs, a thread pool for
// the rest. Runs the same ScheduledBatch contract as the CUDA backend and is its test oracle.
//
// Tensor parallelism (tensor_parallel_size = N > 1): the model is split over N ranks, each a
// thread of its own with its own thread pool (the threads split between them), its own shard of
// the weights and its own KV heads, and the ranks exchange activations through a CpuCommGroup
// (runtime/cpu_communicator.h) as GPUs would through NCCL (Megatron-LM's split):
//   embedding   vocab-parallel: rank r holds rows [r * ceil(V/N), ...); rows of other ranks'
//               tokens are zero; all-reduce.
//   QKV         column-parallel: num_heads / N query heads and num_kv_heads / N KV heads a rank.
//   o_proj      row-parallel (the rank's heads' columns), then all-reduce into the residual.
//   gate/up     column-parallel (a balanced slice of the intermediate rows).
//   down_proj   row-parallel (the same slice of its columns), then all-reduce.
//   LM head     vocab-parallel: each rank computes its slice of the logits; all-gather.
// Norms are replicated; every rank holds the whole residual stream. With N = 1 the forward runs
// on the calling thread through a no-op communicator: the single-rank path of before.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backends/cpu/ops.h"
#include "common/thread_pool.h"
#include "model/model_config.h"
#include "model/weight_source.h"
#include "runtime/backend.h"
#include "runtime/communicator.h"
#include "runtime/cpu_communicator.h"
#include "runtime/pipeline.h"

namespace nf {

struct CpuBackendConfig {
  int block_size = 16;
  double kv_cache_gb = 1.0;   // host memory for the KV cache (all ranks), when num_kv_blocks is 0
  int64_t num_kv_blocks = 0;  // exact pool size (tests)
  int threads = 0;            // 0: one per hardware thread; split between the ranks
  int tensor_parallel_size = 1;  // ranks; num_heads and num_kv_heads must be divisible by it
  // Nano-batch schedules (runtime/pipeline.h): each layer runs as the selected schedule's
  // nano-operations, one after the other (no overlap on the CPU: the twin of the CUDA pipeline).
  PipelineConfig pipeline;
};

class CpuBackend final : public Backend {
 public:
  // Reads (and dequantizes) every weight from the source, each rank keeping its shard. Throws
  // nf::Error on bad weights, a tensor-parallel size that does not divide the heads, or when the
  // KV cache does not fit.
  CpuBackend(const ModelConfig& config, const WeightSource& weights, const CpuBackendConfig& opts);
  ~CpuBackend() override;

  const ModelConfig& config() const override { return config_; }
  int block_size() const override { return opts_.block_size; }
  int64_t num_kv_blocks() const override { return num_blocks_; }
  void forward(const ScheduledBatch& batch, std::span<float> logits) override;
  void set_pipeline(const PipelineConfig& pipeline) override { opts_.pipeline = pipeline; }
  size_t kv_block_bytes() const override;
  std::string kv_layout() const override;
  void read_kv_block(int32_t block, std::span<std::byte> out) override;
  void write_kv_block(int32_t block, std::span<const std::byte> in) override;
  // Nano-operations run so far (all layers, rank 0): 4 per layer and forward when serial.
  int64_t nano_operations() const { return nano_operations_; }

 private:
  // One layer's weights and KV cache, as held by one rank (heads, kv_heads and inter of Rank).
  struct Layer {
    std::vector<float> attn_norm;  // [hidden]
    std::vector<float> w_qkv;      // [(heads + 2 * kv_heads) * head_dim, hidden]
    std::vector<float> b_qkv;      // [(heads + 2 * kv_heads) * head_dim], empty without bias
    std::vector<float> q_norm;     // [head_dim] (Qwen3), empty without q/k norm
    std::vector<float> k_norm;     // [head_dim]
    std::vector<float> w_o;        // [hidden, heads * head_dim]
    std::vector<float> ffn_norm;   // [hidden]
    std::vector<float> w_gate_up;  // [2 * inter, hidden]: gate rows, then up rows
    std::vector<float> w_down;     // [hidden, inter]
    std::vector<float> kv;         // [num_blocks, 2, kv_heads, block_size, head_dim]
  };
  // One tensor-parallel rank (the whole model when N = 1).
  struct Rank {
    explicit Rank(int threads) : pool(threads) {}
    ThreadPool pool;          // this rank's share of the threads
    int64_t heads = 0;        // query heads: num_heads / N
    int64_t kv_heads = 0;     // KV heads: num_kv_heads / N
    int64_t inter = 0;        // intermediate rows (balanced split of intermediate_size)
    int64_t vocab_begin = 0;  // vocabulary rows [vocab_begin, vocab_end) held here
    int64_t vocab_end = 0;
    int64_t vocab_rows = 0;         // rows of embed and lm_head: ceil(vocab / N) on every rank
    std::vector<float> embed;       // [vocab_rows, hidden]; rows past vocab_end are zero
    std::vector<float> final_norm;  // [hidden]
    std::vector<float> lm_head;     // [vocab_rows, hidden], empty when tied to embed
    std::vector<Layer> layers;
    // Activations, grown to the largest batch seen. x (the residual stream) is the same on
    // every rank after each all-reduce.
    std::vector<float> x, h;      // [tokens, hidden]
    std::vector<float> qkv;       // [tokens, (heads + 2 * kv_heads) * head_dim]
    std::vector<float> attn;      // [tokens, heads * head_dim]
    std::vector<float> gate_up;   // [tokens, 2 * inter]
    std::vector<float> act;       // [tokens, inter]
    std::vector<float> rows;      // [samples, hidden]
    std::vector<float> logits;    // [samples, vocab_rows] (N > 1)
    std::vector<float> gathered;  // [N, samples, vocab_rows] (N > 1)
  };
  void load_rank_weights(const WeightSource& w);
  // Calls fn(pool slice, floats) for one block's KV slices in the offload layout's order (layer
  // by layer, K then V, the ranks' kv-head slices in rank order): read_kv_block and
  // write_kv_block copy along it.
  template <typename Fn>
  void for_each_kv_slice(int32_t block, Fn&& fn);
  void forward_rank(Rank& rank, Communicator& comm, const ScheduledBatch& batch,
                    const PipelinePlan& plan,
                    std::span<float> logits);

  ModelConfig config_;
  CpuBackendConfig opts_;
  int64_t num_blocks_ = 0;
  int64_t nano_operations_ = 0;
  std::vector<float> inv_freq_;               // [head_dim / 2]
  std::vector<std::unique_ptr<Rank>> ranks_;  // [tensor_parallel_size]
  std::unique_ptr<CpuCommGroup> group_;       // the ranks' threads; null with one rank
};

}  // namespace nf
