#include "bench/offline.h"

#include <chrono>
#include <random>

#include "model/model_config.h"

namespace nf {

nlohmann::json run_offline_bench(nanoflow::Engine& engine, const OfflineBenchConfig& cfg) {
  const auto& mc = engine.model_config();
  std::mt19937_64 rng(cfg.seed);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(mc.vocab_size) - 1);
  auto make = [&](int n) {
    std::vector<nanoflow::GenerateRequest> reqs(n);
    for (auto& r : reqs) {
      r.prompt.resize(cfg.input_len);
      for (auto& t : r.prompt) t = tok(rng);
      r.params.max_tokens = cfg.output_len;
      r.params.ignore_eos = true;
      r.params.temperature = 0;
    }
    return reqs;
  };
  if (cfg.warmup_requests > 0) {
    auto w = make(cfg.warmup_requests);
    for (auto& r : w) r.params.max_tokens = std::min(cfg.output_len, 4);
    engine.generate(w);
  }
  const auto reqs = make(cfg.num_requests);
  const nanoflow::EngineStats before = engine.stats();
  const auto t0 = std::chrono::steady_clock::now();
  const auto outs = engine.generate(reqs);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  int64_t out_tokens = 0;
  for (const auto& o : outs) out_tokens += static_cast<int64_t>(o.token_ids.size());
  const int64_t in_tokens = static_cast<int64_t>(cfg.num_requests) * cfg.input_len;
  nlohmann::json j;
  j["num_requests"] = cfg.num_requests;
  j["input_len"] = cfg.input_len;
  j["output_len"] = cfg.output_len;
  j["elapsed_s"] = secs;
  j["prompt_tokens"] = in_tokens;
  j["output_tokens"] = out_tokens;
  j["total_tokens_per_s"] = static_cast<double>(in_tokens + out_tokens) / secs;
  j["output_tokens_per_s"] = static_cast<double>(out_tokens) / secs;
  j["requests_per_s"] = cfg.num_requests / secs;
  const nanoflow::EngineStats after = engine.stats();
  j["steps"] = after.steps - before.steps;
  j["host_schedule_ms_per_step"] = (after.schedule_ms - before.schedule_ms) / std::max<int64_t>(1, after.steps - before.steps);
  j["executor_ms_per_step"] = (after.forward_ms - before.forward_ms) / std::max<int64_t>(1, after.steps - before.steps);
  j["preemptions"] = after.preemptions - before.preemptions;
  return j;
}

}  // namespace nf
