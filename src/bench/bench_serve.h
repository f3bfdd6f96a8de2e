// `nanoflow bench serve`: a serving benchmark against any OpenAI-compatible server.
//
// It sends streaming /v1/completions requests (prompts as token ids of exact lengths,
// max_tokens = output length, ignore_eos) with Poisson arrivals, at most --max-concurrency in
// flight, all on one thread running one Boost.Asio io_context (one connection per request, no
// thread per request). Metrics are those of vLLM's benchmarks/benchmark_serving.py:
//  - TTFT: request sent (connect included) -> first streamed chunk carrying a token;
//  - ITL: every gap between consecutive chunks carrying tokens;
//  - E2E latency: request sent -> last chunk carrying a token;
//  - TPOT: (E2E - TTFT) / (output tokens - 1), for requests with more than one output token;
//  - goodput: completed requests per second that meet every SLO given (TTFT, TPOT, E2E; a
//    request with one output token counts as TPOT 0);
//  - mean, median, std and p99 with numpy's linear-interpolation percentiles; throughputs over
//    the wall time from the first arrival to the last completion.
// Output tokens are the server's usage.completion_tokens (stream_options.include_usage), or the
// chunks carrying tokens when the server sends no usage.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/stats.h"

namespace CLI {
class App;
}

namespace nf::server {

struct BenchServeConfig {
  std::string base_url;  // http://host:port[/prefix]; a trailing /v1 is fine
  std::string endpoint = "/v1/completions";
  std::string model;    // the request's "model"; default: first of /v1/models
  std::string api_key;  // sent as "Authorization: Bearer KEY" when set
  std::string dataset;  // a trace (bench/datasets.h), or empty for random
  int random_input_len = 0;
  int random_output_len = 0;
  std::vector<std::string> request_rates;  // "inf", "trace" or requests/s; one run per rate
  int max_concurrency = 0;                 // 0: unlimited
  int num_prompts = 0;
  uint64_t seed = 0;
  std::string slo;  // "ttft=MS,tpot=MS,e2el=MS" (any subset)
  std::string result_json;
  int vocab_size = 32000;  // prompt ids are drawn below this
  int max_model_len = 0;   // drop trace requests longer than this (0: keep all)
  double timeout_s = 600;  // a request with no bytes for this long fails
};

// Service-level objectives in milliseconds; unset ones are not checked.
struct Slo {
  std::optional<double> ttft_ms, tpot_ms, e2el_ms;
  bool empty() const { return !ttft_ms && !tpot_ms && !e2el_ms; }
};
// Parses "ttft=500,tpot=50" (':' also accepted, as vLLM's --goodput writes it).
Slo parse_slo(const std::string& text);

// One request as the client saw it; times in seconds.
struct RequestResult {
  bool success = false;
  int prompt_len = 0;     // tokens sent
  int output_tokens = 0;  // usage.completion_tokens, else chunks carrying tokens
  double ttft = 0;
  double latency = 0;  // end to end
  std::vector<double> itl;
  std::string error;  // why it failed
};

using nf::percentile;  // common/stats.h

// The summary vLLM reports (completed, throughputs, goodput, {mean,median,std,p99}_{ttft,tpot,
// itl,e2el}_ms) plus per-request lists, from the results and the run's wall time.
nlohmann::json compute_serve_metrics(const std::vector<RequestResult>& results, double duration_s,
                                     const Slo& slo);

// Runs the benchmark (one run per rate), prints a table per run, writes --result-json; returns
// the exit code. User errors (unreachable server, bad dataset) throw nf::Error.
int run_bench_serve(const BenchServeConfig& config, const std::string& command);

// The CLI: adds `serve` under `bench` (options owned by the returned subcommand), and runs it
// when it was given.
CLI::App* add_bench_serve_command(CLI::App* bench);
int run_bench_serve_command(CLI::App* serve, const std::string& command);

}  // namespace nf::server
