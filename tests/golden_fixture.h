// The committed golden fixtures (tests/fixtures/golden/*.json, made by scripts/make_golden.py):
// Hugging Face's greedy continuations and top-5 logprobs, shared by the CPU and GPU parity tests.
#pragma once

#include <nanoflow/engine.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
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

inline Golden load_golden(const std::filesystem::path& source_dir,
                          const std::filesystem::path& file) {
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

// Two GPU runs of the same requests that may round differently (other GEMM shapes): up to each
// request's first token mismatch, the top-1 logprobs' largest difference; at a mismatch, each
// token must be in the other run's top-5 (a near tie), and the comparison of that request ends.
struct RunDiff {
  size_t same = 0, steps = 0;  // steps with the same token, of the steps compared
  double max_diff = 0;         // over the top-1 logprobs of the same-token steps
  std::vector<std::string> failures;
};
inline RunDiff compare_runs(const std::vector<nanoflow::RequestOutput>& a,
                            const std::vector<nanoflow::RequestOutput>& b) {
  RunDiff d;
  if (a.size() != b.size()) {
    d.failures.push_back("different request counts");
    return d;
  }
  for (size_t r = 0; r < a.size(); ++r) {
    const size_t n = std::min(a[r].token_ids.size(), b[r].token_ids.size());
    for (size_t i = 0; i < n; ++i) {
      ++d.steps;
      if (i >= a[r].top_logprobs.size() || i >= b[r].top_logprobs.size() ||
          a[r].top_logprobs[i].empty() || b[r].top_logprobs[i].empty()) {
        d.failures.push_back("request " + std::to_string(r) + " step " + std::to_string(i) +
                             ": no top logprobs");
        break;
      }
      if (a[r].token_ids[i] != b[r].token_ids[i]) {
        if (find_id(b[r].top_logprobs[i], a[r].token_ids[i]) == nullptr ||
            find_id(a[r].top_logprobs[i], b[r].token_ids[i]) == nullptr)
          d.failures.push_back("request " + std::to_string(r) + " step " + std::to_string(i) +
                               ": tokens not in each other's top-5");
        break;
      }
      ++d.same;
      d.max_diff = std::max<double>(
          d.max_diff, std::abs(a[r].top_logprobs[i][0].second - b[r].top_logprobs[i][0].second));
    }
  }
  return d;
}

// Multi-turn conversations in waves (the KV offload tests): turns [first, last) of
// history.size() conversations on `e`, each turn's prompt being the conversation so far plus
// `min_new`..`max_new` new ids in [3, max_id) that depend only on (turn, conversation); greedy,
// 8 tokens with top-5 logprobs. The outputs join the histories; returns every turn's outputs.
inline std::vector<nanoflow::RequestOutput> conversation_turns(
    nanoflow::Engine& e, std::vector<std::vector<int32_t>>& history, int first, int last,
    int min_new, int max_new, int32_t max_id) {
  std::vector<nanoflow::RequestOutput> all;
  for (int turn = first; turn < last; ++turn) {
    std::vector<nanoflow::GenerateRequest> reqs;
    for (size_t c = 0; c < history.size(); ++c) {
      std::mt19937 rng(static_cast<unsigned>(1000 * turn + c));
      const int added = min_new + static_cast<int>(rng() % static_cast<unsigned>(max_new - min_new + 1));
      for (int k = 0; k < added; ++k)
        history[c].push_back(3 + static_cast<int32_t>(rng() % static_cast<unsigned>(max_id - 3)));
      nanoflow::GenerateRequest r;
      r.prompt = history[c];
      r.params.temperature = 0;
      r.params.max_tokens = 8;
      r.params.ignore_eos = true;
      r.params.logprobs = 5;
      reqs.push_back(r);
    }
    const auto outs = e.generate(reqs);
    for (size_t c = 0; c < history.size(); ++c) {
      history[c].insert(history[c].end(), outs[c].token_ids.begin(), outs[c].token_ids.end());
      all.push_back(outs[c]);
    }
  }
  return all;
}

}  // namespace nf::testing
