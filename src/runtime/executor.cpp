#include "runtime/executor.h"

#include <algorithm>
#include <chrono>

#include "common/status.h"

namespace nf {

Executor::Executor(Backend& backend, std::vector<int32_t> eos_ids, bool threaded)
    : backend_(backend), eos_ids_(std::move(eos_ids)), threaded_(threaded) {
  if (threaded_) worker_ = std::thread([this] { worker_loop(); });
}

Executor::~Executor() {
  if (threaded_) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
}

void Executor::submit(StepInput in) {
  if (!threaded_) {
    StepOutput out = run(in);
    std::lock_guard<std::mutex> lock(mu_);
    outputs_.push_back(std::move(out));
    ++submitted_;
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    inputs_.push_back(std::move(in));
    ++submitted_;
  }
  cv_.notify_all();
}

StepOutput Executor::wait() {
  std::unique_lock<std::mutex> lock(mu_);
  NF_CHECK(returned_ < submitted_, "executor wait() with no step in flight");
  cv_.wait(lock, [&] { return !outputs_.empty(); });
  StepOutput out = std::move(outputs_.front());
  outputs_.pop_front();
  ++returned_;
  return out;
}

int Executor::in_flight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return submitted_ - returned_;
}

void Executor::worker_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    cv_.wait(lock, [&] { return stop_ || !inputs_.empty(); });
    if (stop_) return;
    StepInput in = std::move(inputs_.front());
    inputs_.pop_front();
    lock.unlock();
    StepOutput out = run(in);
    lock.lock();
    outputs_.push_back(std::move(out));
    cv_.notify_all();
  }
}

StepOutput Executor::run(StepInput& in) {
  const auto t0 = std::chrono::steady_clock::now();
  for (nanoflow::RequestId id : in.finished) states_.erase(id);
  for (ExecRequest& r : in.new_requests) {
    State& s = states_[r.id];
    s.prompt = std::move(r.prompt);
    s.params = r.params;
    s.seed = r.seed;
  }
  ScheduledBatch& b = in.batch;
  // Fill in the tokens only this side knows: position p of a request is output[p - prompt].
  for (int i = 0; i < b.num_requests(); ++i) {
    for (int32_t t = b.seq_indptr[i]; t < b.seq_indptr[i + 1]; ++t) {
      if (b.token_ids[t] != kTokenFromDevice) continue;
      auto it = states_.find(b.request_ids[i]);
      NF_CHECK(it != states_.end(), "batch names a device token of unknown request {}", b.request_ids[i]);
      const int64_t k = b.positions[t] - static_cast<int64_t>(it->second.prompt.size());
      NF_CHECK(k >= 0 && k < static_cast<int64_t>(it->second.output.size()),
               "request {}: no sampled token for position {}", b.request_ids[i], b.positions[t]);
      b.token_ids[t] = it->second.output[k];
    }
  }
  const int64_t V = backend_.config().vocab_size;
  const size_t S = b.sample_rows.size();
  NF_CHECK(in.sample_ids.size() == S, "{} sample ids for {} sample rows", in.sample_ids.size(), S);
  logits_.resize(S * V);
  backend_.forward(b, logits_);
  StepOutput out;
  out.ids = in.sample_ids;
  out.results.reserve(S);
  std::vector<int32_t> banned;
  for (size_t i = 0; i < S; ++i) {
    auto it = states_.find(in.sample_ids[i]);
    NF_CHECK(it != states_.end(), "sampling unknown request {}", in.sample_ids[i]);
    State& s = it->second;
    banned.clear();
    if (static_cast<int>(s.output.size()) < s.params.min_tokens) {
      banned = s.params.stop_token_ids;
      if (!s.params.ignore_eos) banned.insert(banned.end(), eos_ids_.begin(), eos_ids_.end());
    }
    SampleContext ctx;
    ctx.params = &s.params;
    ctx.prompt = s.prompt;
    ctx.output = s.output;
    ctx.banned = banned;
    ctx.seed = s.seed;
    out.results.push_back(sampler_.sample(std::span<const float>(logits_.data() + i * V, V), ctx));
    s.output.push_back(out.results.back().token);
  }
  out.forward_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace nf
