// `nanoflow tune`: chooses the nano-batch schedules for a model on this GPU by timing them
// (engine/pipeline_tune.h) on a CUDA backend of its own, and returns the report whose
// "schedules" key makes a --pipeline file.
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
  double min_gain = 0.02;  // a split must beat serial by this fraction
};

// Returns {"schedules": [...], "measurements": [...], ...}: the schedule file (its "schedules"
// key) and every timing. Throws nf::Error without the CUDA backend.
nlohmann::json run_tune(const TuneConfig& config);

}  // namespace nf
