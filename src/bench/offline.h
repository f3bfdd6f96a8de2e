// Offline throughput benchmark: N requests with fixed or traced lengths submitted at once.
#pragma once

#include <nanoflow/engine.h>

#include <nlohmann/json.hpp>

#include <string>

namespace nf {

struct OfflineBenchConfig {
  int num_requests = 16;
  int input_len = 128;   // prompt tokens per request (random ids)
  int output_len = 128;  // generated tokens per request (EOS ignored)
  uint64_t seed = 0;
  int warmup_requests = 1;
};

// Runs the benchmark on the engine; returns the measured numbers as JSON (tokens/s etc.).
nlohmann::json run_offline_bench(nanoflow::Engine& engine, const OfflineBenchConfig& cfg);

}  // namespace nf
