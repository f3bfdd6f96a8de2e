#include "server/metrics.h"

#include <fmt/format.h>

#include <algorithm>

namespace nf::server {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  const size_t i =
      static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  std::lock_guard<std::mutex> lock(mu_);
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::render(const std::string& name, const std::string& help, std::string& out) const {
  std::lock_guard<std::mutex> lock(mu_);
  out += fmt::format("# HELP {} {}\n# TYPE {} histogram\n", name, help, name);
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    out += fmt::format("{}_bucket{{le=\"{}\"}} {}\n", name, bounds_[i], cum);
  }
  out += fmt::format("{}_bucket{{le=\"+Inf\"}} {}\n{}_sum {}\n{}_count {}\n", name, count_, name,
                     sum_, name, count_);
}

Metrics::Metrics()
    : ttft_({0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10,
             20, 40, 80}),
      itl_({0.001, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5,
            10}),
      e2e_({0.1, 0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480}) {}

void Metrics::count_response(int status) {
  std::lock_guard<std::mutex> lock(mu_);
  ++by_status_[status];
}

void Metrics::count_finish(nanoflow::FinishReason reason) {
  std::lock_guard<std::mutex> lock(mu_);
  ++by_finish_[nanoflow::finish_reason_name(reason)];
}

std::string Metrics::render(const nanoflow::EngineStats& st) const {
  std::string out;
  auto scalar = [&](const char* name, const char* type, const char* help, double v) {
    out += fmt::format("# HELP {} {}\n# TYPE {} {}\n{} {}\n", name, help, name, type, name, v);
  };
  {
    std::lock_guard<std::mutex> lock(mu_);
    out +=
        "# HELP nanoflow_requests_total API requests answered, by HTTP status.\n"
        "# TYPE nanoflow_requests_total counter\n";
    for (const auto& [status, n] : by_status_)
      out += fmt::format("nanoflow_requests_total{{status=\"{}\"}} {}\n", status, n);
    out +=
        "# HELP nanoflow_request_finished_total Completions finished, by finish reason.\n"
        "# TYPE nanoflow_request_finished_total counter\n";
    for (const auto& [reason, n] : by_finish_)
      out += fmt::format("nanoflow_request_finished_total{{finish_reason=\"{}\"}} {}\n", reason, n);
  }
  scalar("nanoflow_prompt_tokens_total", "counter", "Prompt tokens submitted.",
         static_cast<double>(prompt_tokens_.load()));
  scalar("nanoflow_generation_tokens_total", "counter", "Tokens generated.",
         static_cast<double>(generated_tokens_.load()));
  scalar("nanoflow_client_disconnects_total", "counter",
         "Requests aborted because the client went away.",
         static_cast<double>(disconnects_.load()));
  scalar("nanoflow_slow_client_aborts_total", "counter",
         "Requests aborted because the client did not read its stream (buffer limit).",
         static_cast<double>(slow_clients_.load()));
  scalar("nanoflow_num_requests_running", "gauge", "Requests in the running batch.",
         st.num_running);
  scalar("nanoflow_num_requests_waiting", "gauge", "Requests waiting for admission.",
         st.num_waiting);
  scalar("nanoflow_kv_blocks_used", "gauge", "KV cache blocks held by requests.",
         static_cast<double>(st.kv_blocks_used));
  scalar("nanoflow_kv_blocks_total", "gauge", "KV cache blocks in the pool.",
         static_cast<double>(st.kv_blocks_total));
  scalar("nanoflow_kv_cache_usage_perc", "gauge", "Fraction of KV cache blocks in use (0..1).",
         st.kv_blocks_total
             ? static_cast<double>(st.kv_blocks_used) / static_cast<double>(st.kv_blocks_total)
             : 0.0);
  scalar("nanoflow_prefix_cache_queries_total", "counter",
         "Prompt tokens looked up in the prefix cache.", static_cast<double>(st.prompt_tokens));
  scalar("nanoflow_prefix_cache_hits_total", "counter",
         "Prompt tokens served from the prefix cache.",
         static_cast<double>(st.cached_prompt_tokens));
  scalar("nanoflow_prefix_cache_hit_rate", "gauge", "Prefix cache hits / queries (tokens).",
         st.prompt_tokens
             ? static_cast<double>(st.cached_prompt_tokens) / static_cast<double>(st.prompt_tokens)
             : 0.0);
  scalar("nanoflow_num_preemptions_total", "counter", "Requests preempted.",
         static_cast<double>(st.preemptions));
  // The KV offload tiers (--kv-host-gb, --kv-disk-dir): zero without them.
  out +=
      "# HELP nanoflow_kv_offload_hit_tokens_total Prompt tokens served from an offload tier "
      "(part of the prefix cache hits).\n"
      "# TYPE nanoflow_kv_offload_hit_tokens_total counter\n";
  out += fmt::format("nanoflow_kv_offload_hit_tokens_total{{tier=\"host\"}} {}\n",
                     st.kv_host_hit_tokens);
  out += fmt::format("nanoflow_kv_offload_hit_tokens_total{{tier=\"disk\"}} {}\n",
                     st.kv_disk_hit_tokens);
  scalar("nanoflow_kv_offload_saved_blocks_total", "counter",
         "KV blocks copied out to the offload tiers.", static_cast<double>(st.kv_saved_blocks));
  out +=
      "# HELP nanoflow_kv_offload_blocks KV blocks the offload tiers hold now.\n"
      "# TYPE nanoflow_kv_offload_blocks gauge\n";
  out += fmt::format("nanoflow_kv_offload_blocks{{tier=\"host\"}} {}\n", st.kv_host_blocks);
  out += fmt::format("nanoflow_kv_offload_blocks{{tier=\"disk\"}} {}\n", st.kv_disk_blocks);
  ttft_.render("nanoflow_time_to_first_token_seconds",
               "Time from request arrival to its first token.", out);
  itl_.render("nanoflow_inter_token_latency_seconds",
              "Time between consecutive tokens of a request.", out);
  e2e_.render("nanoflow_e2e_request_latency_seconds",
              "Time from request arrival to its last token.", out);
  return out;
}

}  // namespace nf::server
