// Routes the engine's output deltas to the connections that asked for them.
//
// One thread polls Engine::poll_outputs and hands each delta to its request's Sink. Sinks must
// not block (they queue the delta and post work onto their connection's strand). The map lock
// is held across Engine::add_request so that no delta can arrive before its sink is known.
#pragma once

#include <nanoflow/engine.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "server/metrics.h"

namespace nf::server {

class Sink {
 public:
  virtual ~Sink() = default;
  // Called on the dispatcher thread; `choice` is the index given at submit() plus the
  // completion's index among the n of one request.
  virtual void deliver(int choice, nanoflow::RequestOutput&& delta) = 0;
};

class Dispatcher {
 public:
  Dispatcher(nanoflow::Engine& engine, Metrics& metrics);
  ~Dispatcher();
  void start();
  void stop();
  // Test hook (ServerConfig::test_merge_deltas); call before start().
  void set_merge_deltas(int k) { merge_ = k < 1 ? 1 : k; }

  // Adds the request to the engine; its params.n completions report to `sink` as choices
  // first_choice .. first_choice + n - 1. Throws nf::Error (from the engine) for a bad request.
  nanoflow::RequestId submit(std::vector<int32_t> prompt, const nanoflow::SamplingParams& params,
                             std::shared_ptr<Sink> sink, int first_choice,
                             std::chrono::steady_clock::time_point arrival);
  // Engine requests not finished yet.
  int in_flight() const { return in_flight_.load(); }
  void abort_all();

 private:
  struct Route {
    std::shared_ptr<Sink> sink;
    int choice = 0;
    std::chrono::steady_clock::time_point arrival, last_token;
    bool got_token = false;
  };
  void run();

  int merge_ = 1;
  // merge_ > 1: deltas held back per request, and how many (dispatcher thread only).
  std::unordered_map<nanoflow::RequestId, std::pair<nanoflow::RequestOutput, int>> held_;
  nanoflow::Engine& engine_;
  Metrics& metrics_;
  std::mutex mu_;
  std::unordered_map<nanoflow::RequestId, Route> routes_;
  std::atomic<int> in_flight_{0};
  std::atomic<bool> running_{false};
  std::thread thread_;
};

}  // namespace nf::server
