// ScheduledBatch: the only contract between scheduling (engine/) and execution (runtime/,
// backends/). The scheduler fills it with host data only; the executor turns it into device
// inputs and makes no policy.
#pragma once

#include <cstdint>
#include <vector>

#include <nanoflow/request_output.h>

namespace nf {

struct ScheduledBatch {
  // Per token (T tokens, requests' tokens contiguous, in request order).
  std::vector<int32_t> token_ids;     // [T] vocabulary ids
  std::vector<int32_t> positions;     // [T] position of each token in its sequence
  std::vector<int64_t> slot_mapping;  // [T] KV slot = block_id * block_size + offset
  // Per request (B requests).
  std::vector<int32_t> seq_indptr;    // [B+1] tokens of request b are [seq_indptr[b], seq_indptr[b+1])
  std::vector<int32_t> context_lens;  // [B] tokens in the KV cache after this step
  std::vector<int32_t> block_indptr;  // [B+1] CSR over block_ids
  std::vector<int32_t> block_ids;     // block table of each request, in position order
  std::vector<nanoflow::RequestId> request_ids;  // [B] for bookkeeping
  // Rows whose logits are sampled (S rows, indices into the T tokens).
  std::vector<int32_t> sample_rows;   // [S]

  int num_tokens() const { return static_cast<int>(token_ids.size()); }
  int num_requests() const { return static_cast<int>(request_ids.size()); }
  // Rows (tokens) of request r in this step; 1 for a decode.
  int query_len(int r) const { return seq_indptr[r + 1] - seq_indptr[r]; }
  // Requests with a single row (decodes).
  int num_decodes() const;
  void clear();
  // Throws (NF_CHECK) unless the arrays agree: T positions and slots, seq_indptr and
  // block_indptr of B + 1 covering the tokens and block ids, B context lengths, sample rows in
  // [0, T). Backends call it at the top of forward.
  void check_shape() const;
};

}  // namespace nf
