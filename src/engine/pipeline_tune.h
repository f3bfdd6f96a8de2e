// Choosing nano-batch schedules by timing them on a backend (issue 6's auto-search, as run by
// `nanoflow tune` and by `--pipeline auto` at start-up): two representative iterations at the
// dense batch size, a decode-heavy one (the 1024/512 steady state: a third of the rows decodes
// of 1,025-1,536 context, the rest one prefill chunk) and a prefill-only one (chunks of half the
// batch), each forwarded with every candidate of runtime/pipeline_search.h (serial first) until
// the time budget is spent; the fastest per kind makes the schedule file, when it beats serial
// by TuneOptions::min_gain.
#pragma once

#include <nlohmann/json.hpp>

#include "runtime/backend.h"
#include "runtime/pipeline.h"

namespace nf {

struct TuneOptions {
  int max_batch_tokens = 2048;
  double budget_s = 120;  // wall time for the timings; candidates beyond it are skipped
  int repeats = 3;        // timed forwards per candidate (after two warm-ups)
  // A split replaces serial only when it is faster by at least this fraction: on the H200 the
  // same schedule's timings differ by up to ~5% between runs (power and clock), and a split that
  // is no faster only adds launches.
  double min_gain = 0.02;
};

struct TuneResult {
  PipelineConfig pipeline;  // the decode-heavy choice for batches at least halfway to its decode
                            // share, the prefill choice below
  nlohmann::json report;    // every timing, the choices, the budget's use
};

// An iteration of `decodes` single-token requests (contexts spread over 1025..1536) and prefill
// chunks of `chunk` tokens filling the rest of `tokens`, each request on consecutive blocks of
// a pool of `pool_blocks` (their contents do not matter for timing), one sampled row (the LM
// head and the logits' copy back are the same for every schedule). Token ids below `vocab`.
ScheduledBatch representative_iteration(int tokens, int decodes, int chunk, int block_size,
                                        int64_t pool_blocks, int vocab);

// Leaves `backend` with the chosen schedules set.
TuneResult tune_pipeline(Backend& backend, const TuneOptions& options);

}  // namespace nf
