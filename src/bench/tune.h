// `nanoflow tune`: chooses the nano-batch schedules for a model on this GPU by timing them. Two
// representative iterations at the dense batch size, a decode-heavy one (the 1024/512 steady
// state: about a third of the rows decodes of ~1,280 context, the rest one prefill chunk) and a
// prefill-only one, each run with every candidate schedule of runtime/pipeline_search.h (serial
// first) on the CUDA backend with the model's shapes and weights; the fastest per iteration kind
// goes into a schedule file that `serve`, `bench` and `generate`
// load with --pipeline. Candidates beyond the time budget are skipped (reported).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace nf {

struct TuneConfig {
  std::string model;  // as --model: a GGUF, a Hugging Face directory, or dummy:<preset>
  int max_batch_tokens = 2048;
  double gpu_memory_utilization = 0.90;
  int device = 0;
  double budget_s = 120;  // wall time for the timings
  int repeats = 3;        // timed forwards per candidate (after two warm-ups)
};

// Returns {"schedules": [...], "measurements": [...], ...}: the schedule file (its "schedules"
// key) and every timing. Throws nf::Error without the CUDA backend.
nlohmann::json run_tune(const TuneConfig& config);

}  // namespace nf
