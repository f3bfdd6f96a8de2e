#include "server/dispatcher.h"

namespace nf::server {

using Clock = std::chrono::steady_clock;

Dispatcher::Dispatcher(nanoflow::Engine& engine, Metrics& metrics)
    : engine_(engine), metrics_(metrics) {}

Dispatcher::~Dispatcher() {
  stop();
}

void Dispatcher::start() {
  if (running_.exchange(true)) return;
  thread_ = std::thread([this] { run(); });
}

void Dispatcher::stop() {
  if (!running_.exchange(false)) return;
  thread_.join();
}

nanoflow::RequestId Dispatcher::submit(std::vector<int32_t> prompt,
                                       const nanoflow::SamplingParams& params,
                                       std::shared_ptr<Sink> sink, int first_choice,
                                       Clock::time_point arrival) {
  std::lock_guard<std::mutex> lock(mu_);
  const nanoflow::RequestId first = engine_.add_request(std::move(prompt), params);
  for (int i = 0; i < params.n; ++i) {
    Route r;
    r.sink = sink;
    r.choice = first_choice + i;
    r.arrival = arrival;
    routes_[first + static_cast<nanoflow::RequestId>(i)] = std::move(r);
  }
  in_flight_ += params.n;
  return first;
}

void Dispatcher::abort_all() {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, r] : routes_) engine_.abort(id);
}

void Dispatcher::run() {
  std::vector<nanoflow::RequestOutput> deltas;
  std::vector<std::pair<std::shared_ptr<Sink>, int>> targets;
  while (running_.load()) {
    deltas.clear();
    if (!engine_.poll_outputs(deltas, std::chrono::milliseconds(50))) continue;
    const auto now = Clock::now();
    targets.clear();
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& d : deltas) {
        auto it = routes_.find(d.id);
        if (it == routes_.end()) {
          targets.emplace_back(nullptr, 0);
          continue;
        }
        Route& r = it->second;
        const auto ntok = static_cast<int64_t>(d.token_ids.size());
        if (ntok > 0) {
          metrics_.add_generated_tokens(ntok);
          if (!r.got_token) {
            metrics_.observe_ttft(std::chrono::duration<double>(now - r.arrival).count());
            if (ntok > 1) metrics_.observe_itl(0);
          } else {
            const double gap = std::chrono::duration<double>(now - r.last_token).count() /
                               static_cast<double>(ntok);
            for (int64_t k = 0; k < ntok; ++k) metrics_.observe_itl(gap);
          }
          r.got_token = true;
          r.last_token = now;
        }
        targets.emplace_back(r.sink, r.choice);
        if (d.finished()) {
          metrics_.count_finish(d.finish_reason);
          metrics_.observe_e2e(std::chrono::duration<double>(now - r.arrival).count());
          routes_.erase(it);
          --in_flight_;
        }
      }
    }
    for (size_t i = 0; i < deltas.size(); ++i) {
      if (!targets[i].first) continue;
      if (merge_ > 1) {
        auto& [held, count] = held_[deltas[i].id];
        if (count++ == 0)
          held = std::move(deltas[i]);
        else
          held.append(deltas[i]);
        if (count < merge_ && !held.finished()) continue;
        deltas[i] = std::move(held);
        held_.erase(deltas[i].id);
      }
      targets[i].first->deliver(targets[i].second, std::move(deltas[i]));
    }
  }
}

}  // namespace nf::server
