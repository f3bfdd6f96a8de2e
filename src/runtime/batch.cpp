#include "runtime/batch.h"

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

}  // namespace nf
