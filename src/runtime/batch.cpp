#include "runtime/batch.h"

#include "common/status.h"

namespace nf {

void ScheduledBatch::clear() {
  token_ids.clear();
  positions.clear();
  slot_mapping.clear();
  seq_indptr.assign(1, 0);
  context_lens.clear();
  block_indptr.assign(1, 0);
  block_ids.clear();
  request_ids.clear();
  sample_rows.clear();
}

int ScheduledBatch::num_decodes() const {
  int n = 0;
  for (int r = 0; r < num_requests(); ++r) n += query_len(r) == 1;
  return n;
}

void ScheduledBatch::check_shape() const {
  const int64_t T = num_tokens(), B = num_requests();
  NF_CHECK(static_cast<int64_t>(positions.size()) == T &&
               static_cast<int64_t>(slot_mapping.size()) == T,
           "forward: {} tokens, {} positions, {} slots", T, positions.size(), slot_mapping.size());
  NF_CHECK(static_cast<int64_t>(seq_indptr.size()) == B + 1 && seq_indptr.front() == 0 &&
               seq_indptr.back() == T,
           "forward: seq_indptr does not cover the {} tokens", T);
  NF_CHECK(static_cast<int64_t>(block_indptr.size()) == B + 1 &&
               block_indptr.back() == static_cast<int32_t>(block_ids.size()),
           "forward: block_indptr does not cover the {} block ids", block_ids.size());
  NF_CHECK(static_cast<int64_t>(context_lens.size()) == B,
           "forward: {} context lengths for {} requests", context_lens.size(), B);
  for (int32_t r : sample_rows)
    NF_CHECK(r >= 0 && r < T, "forward: sample row {} outside {} tokens", r, T);
}

}  // namespace nf
