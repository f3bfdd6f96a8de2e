// Token sampling on the GPU, one CTA per row of logits: logit bias, repetition/frequency/
// presence penalties, greedy, temperature, top-k, top-p, min-p, per-request seeds (Philox), and
// top-K log-probabilities of the raw logits. The semantics follow the host sampler
// (src/runtime/sampler.cpp); see GpuSampler::sample.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>
#include <span>

#include "backends/cuda/tensor.h"

namespace nf::cuda {

// One row's parameters, laid out for a single host-to-device copy of [S] rows.
struct SampleRowParams {
  float temperature = 1.0f;  // <= 0: greedy
  int32_t top_k = 0;         // <= 0 or >= vocab: off; 1: greedy
  float top_p = 1.0f;        // >= 1: off
  float min_p = 0.0f;        // <= 0: off
  uint64_t seed = 0;         // the request's Philox key
  uint64_t step = 0;         // Philox subsequence: the index of the token being generated
  int32_t num_logprobs = 0;  // top log-probabilities wanted (clamped to the top_ids columns)
  // Penalties over the row's penalty entries (see SampleArgs): != 1 / != 0: on.
  float repetition_penalty = 1.0f;
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
};
static_assert(sizeof(SampleRowParams) == 48, "SampleRowParams is copied as raw bytes");

struct SamplerConfig {
  int max_rows = 256;  // rows per call
  int vocab = 0;
  int sort_rows = 64;  // rows sorted per pass; the sort workspace is ~28 bytes * sort_rows * vocab
};

struct SampleArgs {
  // [S, vocab] f32, not modified, except that columns >= sample_vocab (when set) become -inf
  TensorView logits;
  // > 0 and < vocab: ids >= this are never sampled nor ranked in the logprobs (an embedding
  // padded past the tokenizer): their logits are set to -inf first.
  int32_t sample_vocab = 0;
  TensorView params;         // [S, sizeof(SampleRowParams)] u8: one SampleRowParams per row
  TensorView banned_indptr;  // [S+1] i32 CSR over banned_ids; empty views: nothing banned
  TensorView banned_ids;     // [N] i32 ids that get no probability (EOS before min_tokens)
  // Penalties (empty views: none): CSR over rows, a row's ids ascending and unique; the
  // repetition penalty applies to every entry, frequency/presence to entries with count > 0.
  TensorView penalty_indptr;  // [S+1] i32
  TensorView penalty_ids;     // [P] i32
  TensorView penalty_counts;  // [P] i32 occurrences in the output (0: prompt only)
  // logit_bias (empty views: none): CSR over rows, a row's ids ascending and unique.
  TensorView bias_indptr;   // [S+1] i32
  TensorView bias_ids;      // [B] i32
  TensorView bias_values;   // [B] f32
  TensorView tokens;        // [S] i32 out: the sampled token
  TensorView logprobs;      // [S] f32 out: log-softmax of the raw logits at the token
  TensorView top_ids;       // [S, K] i32 out; row s holds its num_logprobs best ids of the raw
                            // logits (value desc, id asc), then -1; empty views when K = 0
  TensorView top_logprobs;  // [S, K] f32 out: their log-softmax values, then -inf
  // Optional host copy of the rows' parameters: checked, and when no row needs a sort (no
  // top-k/top-p/min-p, no logprobs) the sort and its kernel are skipped.
  std::span<const SampleRowParams> host_params;
};

namespace launch {
struct SampleLaunch;  // launch.h

// The adjustment CSRs of a sampling launch (SampleArgs); null: none.
struct SampleAdjustLaunch {
  const int32_t* penalty_indptr = nullptr;  // [rows + 1] or null
  const int32_t* penalty_ids = nullptr;
  const int32_t* penalty_counts = nullptr;
  const int32_t* bias_indptr = nullptr;  // [rows + 1] or null
  const int32_t* bias_ids = nullptr;
  const float* bias_values = nullptr;
  float* sort_in = nullptr;  // [sort_rows, vocab] workspace: the keys sorted when adjusted
};

// launch::sample with adjustments (sampling.cu); launch::sample(s) is this with none.
void sample_adjusted(const SampleLaunch& s, const SampleAdjustLaunch& a, cudaStream_t stream);
}  // namespace launch

// Design. Processed logits: the raw ones, except at the row's adjusted ids (its penalty and
// bias entries), where the value is recomputed from the raw logit with the host's float
// operations in the host's order: + bias, repetition penalty (x > 0 ? x / r : x * r),
// - (frequency * count + presence); banned ids are then out. The logits buffer is not modified.
// Kernel 1, per row: log-sum-exp of the raw logits; the argmax of the processed logits
// (banned ids out; lowest id on ties) for greedy rows; for rows with temperature only, the
// Gumbel-max draw argmax(x / T + g(id)), where g(id) = -log(-log(u)) and u is Philox output
// number `id` of subsequence `step` under key `seed`; so a draw depends only on the row's
// logits and parameters, never on the rest of the batch. Rows with top-k, top-p, min-p or
// logprobs are then sorted (cub segmented radix sort, descending and stable: value desc, id
// asc) in passes of sort_rows rows. When the batch has adjustments, each pass first copies its
// sorted rows into a workspace, with the processed values at the adjusted ids of rows that
// filter (top-k/p, min-p), and sorts that. Kernel 2, per sorted row: the top-K logprobs (raw
// logits) are the sorted prefix, or, for a row whose processed values were sorted, the best
// K of the unadjusted ids among the first K + #adjusted sorted entries (their keys are raw)
// and of the adjusted ids at their raw logits; candidates are the sorted ids that are not
// banned, the first top_k of them, then the shortest prefix with probability mass >= top_p (at
// temperature T), then those with prob >= min_p * max prob; the token is the Gumbel-max draw
// over the candidates left. Reported logprobs are always of the raw logits, as on the host.
class GpuSampler {
 public:
  explicit GpuSampler(const SamplerConfig& config);

  void sample(const SampleArgs& args, cudaStream_t stream);
  const SamplerConfig& config() const { return config_; }

 private:
  SamplerConfig config_;
  DeviceBuffer row_info_;     // [max_rows] per-row state between the kernels (16 bytes each)
  DeviceBuffer seg_begin_;    // [max_rows] i32 segment starts, relative to the pass's first row
  DeviceBuffer seg_end_;      // [max_rows] i32 segment ends (= start for rows not sorted)
  DeviceBuffer iota_;         // [sort_rows, vocab] i32: column index
  DeviceBuffer sorted_keys_;  // [sort_rows, vocab] f32 raw (or processed) logits, descending
  DeviceBuffer sorted_ids_;   // [sort_rows, vocab] i32 their ids
  DeviceBuffer sort_in_;      // [sort_rows, vocab] f32 the keys to sort when rows are adjusted
  DeviceBuffer cub_temp_;     // cub's scratch for one pass
};

}  // namespace nf::cuda
