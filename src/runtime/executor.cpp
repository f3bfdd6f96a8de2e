#include "runtime/executor.h"

#include <algorithm>
#include <chrono>
#include <utility>

#include "common/log.h"
#include "common/status.h"

namespace nf {

Executor::Executor(Backend& backend, std::vector<int32_t> eos_ids, bool threaded,
                   int32_t sample_vocab)
    : backend_(backend),
      eos_ids_(std::move(eos_ids)),
      sample_vocab_(sample_vocab > 0 && sample_vocab < backend.config().vocab_size
                        ? sample_vocab
                        : static_cast<int32_t>(backend.config().vocab_size)),
      threaded_(threaded) {
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
  {
    std::lock_guard<std::mutex> lock(copy_mu_);
    copy_stop_ = true;
  }
  copy_cv_.notify_all();
  for (Copier& c : copiers_)
    if (c.thread.joinable()) c.thread.join();  // after their queued copies
}

// A step that throws (a device error, say) returns its exception in place of results.
// Steps queued behind a failed one fail too (their batches may name tokens the failed step
// never sampled), until the engine has failed every request and calls recover().
StepOutput Executor::run_fenced(StepInput& in) {
  StepOutput out;
  {
    std::lock_guard<std::mutex> lock(mu_);
    out.error = failure_;
  }
  if (out.error) return out;
  try {
    return run(in);
  } catch (...) {
    out.error = std::current_exception();
    std::lock_guard<std::mutex> lock(mu_);
    failure_ = out.error;
    return out;
  }
}

void Executor::recover() {
  NF_CHECK(in_flight() == 0, "recover() with {} steps in flight", in_flight());
  std::lock_guard<std::mutex> lock(mu_);
  failure_ = nullptr;
  states_.clear();
}

void Executor::submit(StepInput in) {
  if (!threaded_) {
    StepOutput out = run_fenced(in);
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
  if (out.error) std::rethrow_exception(out.error);
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
    StepOutput out = run_fenced(in);
    lock.lock();
    outputs_.push_back(std::move(out));
    cv_.notify_all();
  }
}

void Executor::run_kv_io(StepInput& in) {
  if (in.kv_saves.empty() && in.kv_loads.empty()) return;
  CopyJob save, load;
  if (!in.kv_saves.empty()) {
    NF_CHECK(in.kv_offload != nullptr, "{} KV saves without offload tiers", in.kv_saves.size());
    save.offload = in.kv_offload;
    for (const KvSave& s : in.kv_saves) save.blocks.push_back(s.block);
    save.saves = std::move(in.kv_saves);
  }
  for (const KvLoad& l : in.kv_loads) load.blocks.push_back(l.block);
  load.loads = std::move(in.kv_loads);
  {
    std::lock_guard<std::mutex> lock(copy_mu_);
    for (int d = 0; d < 2; ++d) {
      CopyJob& job = d == 0 ? save : load;
      if (job.blocks.empty()) continue;
      copiers_[d].jobs.push_back(std::move(job));
      if (!copiers_[d].thread.joinable())
        copiers_[d].thread = std::thread([this, d] { copy_loop(d == 0); });
    }
  }
  copy_cv_.notify_all();
}

void Executor::copy_loop(bool save) {
  Copier& me = copiers_[save ? 0 : 1];
  const size_t bytes = std::max<size_t>(1, backend_.kv_block_bytes());
  const size_t chunk = std::max<size_t>(1, kCopyChunkBytes / bytes);
  std::vector<std::byte*> dst;
  std::vector<const std::byte*> src;
  std::unique_lock<std::mutex> lock(copy_mu_);
  for (;;) {
    copy_cv_.wait(lock, [&] { return copy_stop_ || !me.jobs.empty(); });
    if (me.jobs.empty()) return;  // stopping
    CopyJob job = std::move(me.jobs.front());
    me.jobs.pop_front();
    me.busy = true;
    lock.unlock();
    job.buffers.resize(save ? job.blocks.size() : 0);
    for (size_t i0 = 0; i0 < job.blocks.size(); i0 += chunk) {
      const size_t n = std::min(chunk, job.blocks.size() - i0);
      const std::span<const int32_t> blocks(job.blocks.data() + i0, n);
      try {
        uint64_t ticket = 0;
        if (save) {
          // Buffers here, not on the executor's thread: the pool may have to grow (pinning).
          dst.clear();
          for (size_t i = i0; i < i0 + n; ++i) {
            job.buffers[i] = job.offload->new_buffer();
            dst.push_back(job.buffers[i].get());
          }
          ticket = backend_.start_kv_save(blocks, dst);
        } else {
          src.clear();
          for (size_t i = i0; i < i0 + n; ++i) src.push_back(job.loads[i].payload.get());
          ticket = backend_.start_kv_load(blocks, src);
        }
        backend_.wait_kv_copy(ticket);
        if (save) {
          for (size_t i = i0; i < i0 + n; ++i)
            job.offload->save(job.saves[i].hash, job.saves[i].tokens, std::move(job.buffers[i]));
        } else {
          for (size_t i = i0; i < i0 + n; ++i) job.loads[i].payload.reset();
        }
      } catch (const std::bad_alloc&) {
        // No pinned host memory for more buffers: these blocks are not saved (a later miss).
        if (!copy_alloc_warned_.exchange(true))
          log_warn("KV offload: out of host memory for save buffers; dropping saves meanwhile");
      } catch (...) {
        // A failed copy (the device is in error): raised on the engine's thread, whose next
        // forward would fail too; nothing loaded by it may be used.
        std::lock_guard<std::mutex> error_lock(copy_mu_);
        if (!copy_error_) copy_error_ = std::current_exception();
      }
      std::lock_guard<std::mutex> done_lock(copy_mu_);
      auto& done = save ? finished_copies_.saved : finished_copies_.loaded;
      done.insert(done.end(), blocks.begin(), blocks.end());
    }
    lock.lock();
    me.busy = false;
    if (me.jobs.empty()) copy_idle_cv_.notify_all();
  }
}

Executor::FinishedCopies Executor::take_finished_copies() {
  std::lock_guard<std::mutex> lock(copy_mu_);
  // Raised once; the failed copy's blocks are returned by the next call (as finished: nothing
  // loaded by it is used, its requests failed with the error).
  if (copy_error_) std::rethrow_exception(std::exchange(copy_error_, nullptr));
  return std::exchange(finished_copies_, {});
}

void Executor::wait_copies() {
  std::unique_lock<std::mutex> lock(copy_mu_);
  copy_idle_cv_.wait(lock, [&] {
    for (const Copier& c : copiers_)
      if (c.busy || !c.jobs.empty()) return false;
    return true;
  });
}

void Executor::kv_io_now(StepInput in) {
  NF_CHECK(in_flight() == 0, "kv_io_now with {} steps in flight", in_flight());
  run_kv_io(in);
}

StepOutput Executor::run(StepInput& in) {
  run_kv_io(in);
  const auto t0 = std::chrono::steady_clock::now();
  for (nanoflow::RequestId id : in.finished) states_.erase(id);
  for (ExecRequest& r : in.new_requests) {
    State& s = states_[r.id];
    s.prompt = std::move(r.prompt);
    s.params = r.params;
    s.seed = r.seed;
    if (s.params.repetition_penalty != 1.0f)
      s.prompt_counts = TokenCounts::of(s.prompt, backend_.config().vocab_size);
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
  StepOutput out;
  out.ids = in.sample_ids;
  out.results.reserve(S);
  std::vector<int32_t> banned;
  // EOS and stop ids are banned until min_tokens tokens exist.
  auto banned_ids = [&](const State& s) {
    banned.clear();
    if (static_cast<int>(s.output.size()) < s.params.min_tokens) {
      banned = s.params.stop_token_ids;
      if (!s.params.ignore_eos) banned.insert(banned.end(), eos_ids_.begin(), eos_ids_.end());
    }
    return std::span<const int32_t>(banned);
  };
  auto state_of = [&](size_t i) -> State& {
    auto it = states_.find(in.sample_ids[i]);
    NF_CHECK(it != states_.end(), "sampling unknown request {}", in.sample_ids[i]);
    return it->second;
  };
  auto host_sample = [&](State& s, std::span<const float> row) {
    SampleContext ctx;
    ctx.params = &s.params;
    ctx.prompt = s.prompt;
    ctx.output = s.output;
    ctx.banned = banned_ids(s);
    ctx.seed = s.seed;
    return sampler_.sample(row, ctx);
  };

  // A sampled token joins the request's output (and its counts, when its penalties need them).
  auto record = [&](State& s, int32_t token) {
    s.output.push_back(token);
    if (uses_penalties(s.params)) s.output_counts.add(token, V);
  };

  if (backend_.samples_on_device()) {
    // Every row is sampled on the device, penalties and logit bias included (see
    // runtime/sample_pack.h); a row is sampled here from its copied logits (on_host) only when
    // the device cannot reproduce the host bit for bit (a logit_bias naming an id twice).
    dev_in_.rows.resize(S);
    dev_in_.banned_indptr.assign(1, 0);
    dev_in_.banned_ids.clear();
    dev_in_.max_logprobs = 0;
    dev_in_.sample_vocab = sample_vocab_ < V ? sample_vocab_ : 0;
    begin_adjustments(dev_in_);
    for (size_t i = 0; i < S; ++i) {
      const State& s = state_of(i);
      const nanoflow::SamplingParams& p = s.params;
      DeviceSampleRow& r = dev_in_.rows[i];
      r.temperature = p.temperature;
      r.top_k = p.top_k;
      r.top_p = p.top_p;
      r.min_p = p.min_p;
      r.seed = s.seed;
      r.step = s.output.size();
      r.num_logprobs = p.logprobs;
      r.on_host = !append_adjustments(p, s.prompt_counts, s.output_counts, V, dev_in_, r);
      dev_in_.max_logprobs = std::max(dev_in_.max_logprobs, p.logprobs);
      const std::span<const int32_t> ban = banned_ids(s);
      dev_in_.banned_ids.insert(dev_in_.banned_ids.end(), ban.begin(), ban.end());
      dev_in_.banned_indptr.push_back(static_cast<int32_t>(dev_in_.banned_ids.size()));
    }
    if (dev_in_.banned_ids.empty()) dev_in_.banned_indptr.clear();
    end_adjustments(dev_in_);
    backend_.forward_sample(b, dev_in_, dev_out_);
    const int K = dev_in_.max_logprobs;
    size_t host_row = 0;
    for (size_t i = 0; i < S; ++i) {
      State& s = state_of(i);
      if (dev_in_.rows[i].on_host) {
        out.results.push_back(host_sample(
            s,
            std::span<const float>(dev_out_.host_logits.data() + host_row++ * V, sample_vocab_)));
      } else {
        SampleResult r;
        r.token = dev_out_.tokens[i];
        r.logprob = dev_out_.logprobs[i];
        for (int k = 0; k < s.params.logprobs; ++k) {
          const int32_t id = dev_out_.top_ids[i * K + k];
          if (id < 0) break;
          r.top.emplace_back(id, dev_out_.top_logprobs[i * K + k]);
        }
        out.results.push_back(std::move(r));
      }
      record(s, out.results.back().token);
    }
  } else {
    logits_.resize(S * V);
    backend_.forward(b, logits_);
    for (size_t i = 0; i < S; ++i) {
      State& s = state_of(i);
      out.results.push_back(
          host_sample(s, std::span<const float>(logits_.data() + i * V, sample_vocab_)));
      record(s, out.results.back().token);
    }
  }
  out.forward_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace nf
