// The committed golden fixtures (tests/fixtures/golden/*.json, made by scripts/make_golden.py):
// Hugging Face's greedy continuations and top-5 logprobs, shared by the CPU and GPU parity tests.
#pragma once

#include <nanoflow/engine.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

namespace nf::testing {

struct GoldenCase {
  std::vector<int32_t> prompt;
  std::vector<int32_t> greedy;
  std::vector<std::vector<std::pair<int32_t, double>>> top5;  // [step][rank] (id, logprob)
};

// The entry for `id` in a list of (id, logprob) pairs (a golden top-5 or an output's
// top_logprobs), or null.
template <typename Vec>
const typename Vec::value_type* find_id(const Vec& v, int32_t id) {
  for (const auto& e : v)
    if (e.first == id) return &e;
  return nullptr;
}

struct Golden {
  std::string name;
  std::filesystem::path model;  // resolved against the repository root
  std::vector<GoldenCase> cases;
};

inline Golden load_golden(const std::filesystem::path& source_dir, const std::filesystem::path& file) {
  std::ifstream in(file);
  const auto j = nlohmann::json::parse(in);
  Golden g;
  g.name = j.at("model").get<std::string>();
  g.model = source_dir / j.at("model_path").get<std::string>();
  for (const auto& c : j.at("cases")) {
    GoldenCase gc;
    gc.prompt = c.at("prompt_ids").get<std::vector<int32_t>>();
    gc.greedy = c.at("greedy_ids").get<std::vector<int32_t>>();
    for (const auto& step : c.at("top5")) {
      std::vector<std::pair<int32_t, double>> s;
      for (const auto& e : step) s.emplace_back(e.at(0).get<int32_t>(), e.at(1).get<double>());
      gc.top5.push_back(s);
    }
    g.cases.push_back(std::move(gc));
  }
  return g;
}

inline std::vector<std::filesystem::path> golden_files(const std::filesystem::path& source_dir) {
  std::vector<std::filesystem::path> out;
  const auto dir = source_dir / "tests/fixtures/golden";
  if (std::filesystem::exists(dir))
    for (const auto& e : std::filesystem::directory_iterator(dir))
      if (e.path().extension() == ".json") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

// The engine settings every parity run uses: a small KV pool, and a token budget that takes the
// long prompts through several iterations of chunked prefill.
inline nanoflow::EngineConfig golden_engine_config(const std::filesystem::path& model) {
  nanoflow::EngineConfig c;
  c.model = model.string();
  c.max_batch_tokens = 512;
  c.num_kv_blocks = 256;
  c.block_size = 16;
  return c;
}

// One greedy request per case: its prompt, as many tokens as the fixture has, top-5 logprobs.
inline std::vector<nanoflow::GenerateRequest> golden_requests(const Golden& g) {
  std::vector<nanoflow::GenerateRequest> reqs;
  for (const auto& gc : g.cases) {
    nanoflow::GenerateRequest r;
    r.prompt = gc.prompt;
    r.params.temperature = 0;
    r.params.max_tokens = static_cast<int>(gc.greedy.size());
    r.params.ignore_eos = true;
    r.params.logprobs = 5;
    reqs.push_back(r);
  }
  return reqs;
}

}  // namespace nf::testing
