// Server metrics in the Prometheus text format (GET /metrics).
#pragma once

#include <nanoflow/engine.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace nf::server {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  void render(const std::string& name, const std::string& help, std::string& out) const;

 private:
  mutable std::mutex mu_;
  std::vector<double> bounds_;    // upper bounds, ascending (+Inf implied)
  std::vector<uint64_t> counts_;  // [bounds_.size() + 1], not cumulative
  double sum_ = 0;
  uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  void count_response(int status);                   // API requests by HTTP status
  void count_finish(nanoflow::FinishReason reason);  // engine requests by finish reason
  void add_prompt_tokens(int64_t n) { prompt_tokens_ += n; }
  void add_generated_tokens(int64_t n) { generated_tokens_ += n; }
  void count_disconnect() { ++disconnects_; }
  void count_slow_client() { ++slow_clients_; }
  void observe_ttft(double s) { ttft_.observe(s); }
  void observe_itl(double s) { itl_.observe(s); }
  void observe_e2e(double s) { e2e_.observe(s); }
  std::string render(const nanoflow::EngineStats& st) const;

 private:
  mutable std::mutex mu_;
  std::map<int, uint64_t> by_status_;
  std::map<std::string, uint64_t> by_finish_;
  std::atomic<int64_t> prompt_tokens_{0}, generated_tokens_{0}, disconnects_{0}, slow_clients_{0};
  Histogram ttft_, itl_, e2e_;
};

}  // namespace nf::server
