// `nanoflow bench serve`'s metrics: the SLO parser and the summary of a run's requests (TTFT,
// TPOT, ITL, end-to-end latency, throughput and goodput, as vLLM's benchmark_serving.py defines
// them).
#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <sstream>

#include "bench/bench_serve.h"
#include "common/status.h"

namespace nf::server {

using json = nlohmann::json;

Slo parse_slo(const std::string& text) {
  Slo slo;
  std::string item;
  std::stringstream ss(text);
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    const size_t eq = item.find_first_of("=:");
    const std::string key = item.substr(0, eq);
    double v = 0;
    try {
      if (eq == std::string::npos) throw std::invalid_argument(item);
      size_t used = 0;
      v = std::stod(item.substr(eq + 1), &used);
      if (used != item.size() - eq - 1 || !(v > 0)) throw std::invalid_argument(item);
    } catch (const std::exception&) {
      fail("--slo: '{}' is not NAME=MILLISECONDS with a positive number", item);
    }
    if (key == "ttft") {
      slo.ttft_ms = v;
    } else if (key == "tpot") {
      slo.tpot_ms = v;
    } else if (key == "e2el") {
      slo.e2el_ms = v;
    } else {
      fail("--slo: unknown metric '{}' (ttft, tpot or e2el)", key);
    }
  }
  return slo;
}

json compute_serve_metrics(const std::vector<RequestResult>& results, double duration_s,
                           const Slo& slo) {
  std::vector<double> ttfts, tpots, itls, e2els;
  std::vector<double> good_tpots;  // per completed request; 0 for one output token (vLLM)
  int completed = 0;
  int64_t total_input = 0, total_output = 0;
  json input_lens = json::array(), output_lens = json::array(), errors = json::array();
  json ttft_list = json::array(), e2el_list = json::array(), itl_list = json::array();
  for (const RequestResult& r : results) {
    input_lens.push_back(r.prompt_len);
    errors.push_back(r.error);
    if (!r.success) {
      output_lens.push_back(0);
      ttft_list.push_back(nullptr);
      e2el_list.push_back(nullptr);
      itl_list.push_back(json::array());
      continue;
    }
    ++completed;
    total_input += r.prompt_len;
    total_output += r.output_tokens;
    double tpot = 0;
    if (r.output_tokens > 1) {
      tpot = (r.latency - r.ttft) / (r.output_tokens - 1);
      tpots.push_back(tpot);
    }
    good_tpots.push_back(tpot);
    ttfts.push_back(r.ttft);
    e2els.push_back(r.latency);
    itls.insert(itls.end(), r.itl.begin(), r.itl.end());
    output_lens.push_back(r.output_tokens);
    ttft_list.push_back(r.ttft);
    e2el_list.push_back(r.latency);
    itl_list.push_back(r.itl);
  }
  int good = 0;
  for (size_t i = 0; i < ttfts.size(); ++i) {
    const bool ok = (!slo.ttft_ms || ttfts[i] * 1000 <= *slo.ttft_ms) &&
                    (!slo.tpot_ms || good_tpots[i] * 1000 <= *slo.tpot_ms) &&
                    (!slo.e2el_ms || e2els[i] * 1000 <= *slo.e2el_ms);
    good += ok;
  }
  const double dur = duration_s > 0 ? duration_s : 1e-9;
  json m;
  m["duration"] = duration_s;
  m["completed"] = completed;
  m["failed"] = static_cast<int>(results.size()) - completed;
  m["total_input_tokens"] = total_input;
  m["total_output_tokens"] = total_output;
  m["request_throughput"] = completed / dur;
  m["request_goodput"] = slo.empty() ? json(nullptr) : json(good / dur);
  m["output_throughput"] = static_cast<double>(total_output) / dur;
  m["total_token_throughput"] = static_cast<double>(total_input + total_output) / dur;
  auto stats = [&](const char* name, const std::vector<double>& v) {
    double mean = 0, var = 0;
    if (!v.empty()) {
      mean = std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
      for (double x : v) var += (x - mean) * (x - mean);
      var /= static_cast<double>(v.size());
    }
    m[fmt::format("mean_{}_ms", name)] = mean * 1000;
    m[fmt::format("median_{}_ms", name)] = percentile(v, 50) * 1000;
    m[fmt::format("std_{}_ms", name)] = std::sqrt(var) * 1000;
    m[fmt::format("p99_{}_ms", name)] = percentile(v, 99) * 1000;
  };
  stats("ttft", ttfts);
  stats("tpot", tpots);
  stats("itl", itls);
  stats("e2el", e2els);
  m["input_lens"] = std::move(input_lens);
  m["output_lens"] = std::move(output_lens);
  m["ttfts"] = std::move(ttft_list);
  m["e2els"] = std::move(e2el_list);
  m["itls"] = std::move(itl_list);
  m["errors"] = std::move(errors);
  return m;
}

}  // namespace nf::server
