// Token sampling on the GPU, one CTA per row of logits: greedy, temperature, top-k, top-p,
// min-p, per-request seeds (Philox), and top-K log-probabilities of the raw logits. The
// semantics follow the host sampler (src/engine/sampler.cpp); see GpuSampler::sample.
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
  int32_t reserved = 0;
};
static_assert(sizeof(SampleRowParams) == 40, "SampleRowParams is copied as raw bytes");

struct SamplerConfig {
  int max_rows = 256;  // rows per call
  int vocab = 0;
  int sort_rows = 64;  // rows sorted per pass; the sort workspace is ~24 bytes * sort_rows * vocab
};

struct SampleArgs {
  TensorView logits;         // [S, vocab] f32, not modified
  TensorView params;         // [S, sizeof(SampleRowParams)] u8: one SampleRowParams per row
  TensorView banned_indptr;  // [S+1] i32 CSR over banned_ids; empty views: nothing banned
  TensorView banned_ids;     // [N] i32 ids that get no probability (EOS before min_tokens)
  TensorView tokens;         // [S] i32 out: the sampled token
  TensorView logprobs;       // [S] f32 out: log-softmax of the raw logits at the token
  TensorView top_ids;        // [S, K] i32 out; row s holds its num_logprobs best ids of the raw
                             // logits (value desc, id asc), then -1; empty views when K = 0
  TensorView top_logprobs;   // [S, K] f32 out: their log-softmax values, then -inf
  // Optional host copy of the rows' parameters: checked, and when no row needs a sort (no
  // top-k/top-p/min-p, no logprobs) the sort and its kernel are skipped.
  std::span<const SampleRowParams> host_params;
};

// Design. Kernel 1, per row: log-sum-exp of the raw logits; the argmax of the processed logits
// (banned ids out; lowest id on ties) for greedy rows; for rows with temperature only, the
// Gumbel-max draw argmax(x / T + g(id)), where g(id) = -log(-log(u)) and u is Philox output
// number `id` of subsequence `step` under key `seed`; so a draw depends only on the row's
// logits and parameters, never on the rest of the batch. Rows with top-k, top-p, min-p or
// logprobs are then sorted (cub segmented radix sort, descending and stable: value desc, id
// asc) in passes of sort_rows rows. Kernel 2, per sorted row: the top-K logprobs are the
// sorted prefix; candidates are the sorted ids that are not banned, the first top_k of them,
// then the shortest prefix with probability mass >= top_p (at temperature T), then those with
// prob >= min_p * max prob; the token is the Gumbel-max draw over the candidates left.
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
  DeviceBuffer sorted_keys_;  // [sort_rows, vocab] f32 raw logits, descending
  DeviceBuffer sorted_ids_;   // [sort_rows, vocab] i32 their ids
  DeviceBuffer cub_temp_;     // cub's scratch for one pass
};

}  // namespace nf::cuda
