// The device-side half of execution: model weights, the KV cache, and the forward pass over a
// ScheduledBatch. One implementation per device family (backends/cpu, backends/cuda).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "model/model_config.h"
#include "runtime/batch.h"
#include "runtime/host_block_pool.h"
#include "runtime/pipeline.h"

namespace nf {

// Sampling on the device (see Backend::forward_sample). One row per sample row of the batch.
struct DeviceSampleRow {
  float temperature = 1.0f;  // <= 0: greedy
  int32_t top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  uint64_t seed = 0;
  uint64_t step = 0;         // index of the token being generated (the seed's subsequence)
  int32_t num_logprobs = 0;  // top log-probabilities wanted, <= DeviceSampleBatch::max_logprobs
  // Penalties (host semantics, src/runtime/sampler.cpp) over the row's penalty_ids entries.
  float repetition_penalty = 1.0f;  // != 1: applies to every penalty entry (prompt or output)
  float frequency_penalty = 0.0f;   // count * this, subtracted from entries with count > 0
  float presence_penalty = 0.0f;    // subtracted from entries with count > 0
  bool on_host = false;      // the executor samples this row itself: copy its logits back
};

struct DeviceSampleBatch {
  std::vector<DeviceSampleRow> rows;     // [S]
  std::vector<int32_t> banned_indptr;    // [S+1] CSR over banned_ids; empty: nothing banned
  std::vector<int32_t> banned_ids;       // ids that get no probability (EOS before min_tokens)
  // Penalties: CSR over rows; a row's ids are ascending, unique and in [0, vocab). They are the
  // ids its repetition penalty sees (prompt and output) when repetition_penalty != 1, else the
  // ids of its output (frequency/presence penalties); counts are the occurrences in the output
  // (0: prompt only). Rows without penalties have no entries; empty indptr: no row has any.
  std::vector<int32_t> penalty_indptr;   // [S+1]
  std::vector<int32_t> penalty_ids;      // [N]
  std::vector<int32_t> penalty_counts;   // [N]
  // logit_bias: CSR over rows, ids ascending, unique and in [0, vocab); empty indptr: none.
  std::vector<int32_t> bias_indptr;      // [S+1]
  std::vector<int32_t> bias_ids;         // [M]
  std::vector<float> bias_values;        // [M] added to the raw logit before the penalties
  int max_logprobs = 0;                  // columns of the top-K outputs
  // > 0: only ids [0, sample_vocab) are sampled and ranked; the logits of the rows past it
  // (an embedding padded beyond the tokenizer) are -inf for sampling and the logprobs.
  int32_t sample_vocab = 0;
};

struct DeviceSampleResult {
  std::vector<int32_t> tokens;        // [S] (unspecified for on_host rows)
  std::vector<float> logprobs;        // [S] log-softmax of the raw logits at the token
  std::vector<int32_t> top_ids;       // [S, max_logprobs], -1 padded
  std::vector<float> top_logprobs;    // [S, max_logprobs]
  std::vector<float> host_logits;     // [rows with on_host, vocab] fp32, in row order
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const ModelConfig& config() const = 0;
  virtual int block_size() const = 0;
  virtual int64_t num_kv_blocks() const = 0;
  // Runs the model over the batch: writes K/V of every token into the paged cache at its slot,
  // and the logits of each sample row to logits ([S, vocab_size] fp32, row-major).
  virtual void forward(const ScheduledBatch& batch, std::span<float> logits) = 0;
  // True when forward_sample() is available: the backend samples on the device and only the
  // tokens (and requested log-probabilities) come back, not [S, vocab] logits.
  virtual bool samples_on_device() const { return false; }
  // Runs the model over the batch and samples each sample row on the device with its row's
  // parameters; rows marked on_host get their raw logits copied to out.host_logits instead.
  virtual void forward_sample(const ScheduledBatch& batch, const DeviceSampleBatch& sampling,
                              DeviceSampleResult& out);
  // Per-op timings of profiled forward passes as a JSON object (see CudaBackendConfig
  // profile_first_step); empty when the backend has none (yet).
  virtual std::string op_profile_json() const { return {}; }
  // Device time over all forwards so far: busy from each forward's first GPU op to its last,
  // idle from one forward's last op to the next one's first (what the host costs the device).
  // Thread-safe. Zeros where the backend does not measure it (CPU).
  struct DeviceTime {
    double busy_ms = 0, idle_ms = 0;
    int64_t steps = 0;
  };
  virtual DeviceTime device_time() const { return {}; }
  // KV offload (engine/kv_offload.h): the bytes of one block's KV over all layers (0: this
  // backend cannot copy blocks), a string naming their layout and dtype (part of the offload
  // tiers' identity), and copies of one block out of and into the pool. The layout is
  // [layers, 2 (K, V), kv_heads, block_size, head_dim] whatever the backend's own split, so
  // that a tensor-parallel engine shares the tiers with an unsplit one. Called on the executor's
  // thread between forwards.
  virtual size_t kv_block_bytes() const { return 0; }
  virtual std::string kv_layout() const { return {}; }
  virtual void read_kv_block(int32_t block, std::span<std::byte> out);
  virtual void write_kv_block(int32_t block, std::span<const std::byte> in);
  // The same, asynchronous: on the device's copy engines beside the forwards (the default runs
  // read/write_kv_block at once). start_kv_save copies each block into its host buffer
  // (kv_block_bytes() each); start_kv_load copies host buffers into blocks. The caller starts a
  // copy only once no forward still writes its blocks (they do not wait for queued forwards).
  // Both return a ticket; wait_kv_copy(ticket) returns once those copies are done (once per
  // ticket), and only then may the buffers go, or a forward read the loaded blocks. Saves and
  // loads may run on two threads at once (one each). The host buffers come from host_allocator() (pinned memory on CUDA, which the copy
  // engines read and write directly).
  virtual uint64_t start_kv_save(std::span<const int32_t> blocks, std::span<std::byte* const> dst);
  virtual uint64_t start_kv_load(std::span<const int32_t> blocks,
                                 std::span<const std::byte* const> src);
  virtual void wait_kv_copy(uint64_t /*ticket*/) {}
  virtual HostAllocator host_allocator() const { return HostAllocator::plain(); }
  // Replaces the nano-batch schedules the forwards use (runtime/pipeline.h), e.g. while tuning.
  // By default a backend runs serial schedules only and throws nf::Error for a split one.
  virtual void set_pipeline(const PipelineConfig& pipeline);
};

}  // namespace nf
