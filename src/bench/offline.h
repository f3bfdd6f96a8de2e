// Offline throughput benchmark: N requests with fixed or traced lengths submitted at once, with
// NanoFlow's yardstick (the compute-bound optimum, profiled in the same run on CUDA) and a per-op
// breakdown of profiled iterations against each op's floor.
#pragma once

#include <nanoflow/engine.h>

#include <nlohmann/json.hpp>

#include <string>

namespace nf {

struct OfflineBenchConfig {
  int num_requests = 16;
  int input_len = 128;   // prompt tokens per request (random ids), without --dataset
  int output_len = 128;  // generated tokens per request (EOS ignored), without --dataset
  std::string dataset;   // trace file (Azure CSV, ShareGPT length CSV, Mooncake JSONL): lengths
  int max_input_len = 0;  // traced lengths are clipped to the model's context; 0: context - 1
  uint64_t seed = 0;
  int warmup_requests = 1;
  int profile_step = -1;  // CUDA: time each op of iterations [s, s+5); -1: the middle of the run
  double hbm_bytes_per_s = 4.5e12;  // floor of memory-bound ops (H200-NOTES: 4.5 TB/s read)
  // CUDA: seconds of back-to-back layer GEMMs for the sustained optimum (the yardstick; see
  // backends/cuda/optimum.h); 0: the burst optimum is the yardstick.
  double optimum_sustain_s = 4.0;
  // Multi-turn conversations (KV offload's workload): num_requests conversations of this many
  // turns; turn t's prompt is the conversation so far (earlier prompts and outputs) plus new
  // text of the trace's (or constant) input length. Turns run in waves (every conversation's
  // turn t at once, streamed, with the time to first token). 1: independent requests.
  int turns = 1;
};

// Profiles the optimum (CUDA), creates the engine, runs the benchmark and returns the result
// JSON: the fields of the issue (model, gpu, git_commit is left to the caller, ...).
// optimum_tokens_per_s / pct_of_optimum: the sustained optimum (at the GPU's power limit);
// optimum_burst_tokens_per_s / pct_of_burst_optimum: the burst one (boost clock).
nlohmann::json run_offline_bench(nanoflow::EngineConfig engine_config, const OfflineBenchConfig& cfg);

// One line per op of the profile: time, floor, and which bound (compute or memory) sets it.
std::string format_op_profile(const nlohmann::json& result);

}  // namespace nf
