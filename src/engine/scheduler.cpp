#include "engine/scheduler.h"

#include <algorithm>

#include "common/status.h"

namespace nf {

Scheduler::Scheduler(const SchedulerConfig& config, KvCacheManager& kv) : config_(config), kv_(kv) {
  NF_CHECK(config_.max_batch_tokens > 0 && config_.max_running_requests > 0,
           "scheduler: budget {} tokens, {} requests", config_.max_batch_tokens,
           config_.max_running_requests);
}

void Scheduler::add(Request* r) {
  r->state = RequestState::Waiting;
  waiting_.push_back(r);
}

void Scheduler::finish(Request* r, bool completed) {
  if (completed) {
    recent_outputs_.push_back(r->num_generated());
    recent_sum_ += r->num_generated();
    if (recent_outputs_.size() > kWindow) {
      recent_sum_ -= recent_outputs_.front();
      recent_outputs_.pop_front();
    }
  }
  if (r->state == RequestState::Running) {
    running_.erase(std::find(running_.begin(), running_.end(), r));
  } else if (r->state == RequestState::Waiting) {
    waiting_.erase(std::find(waiting_.begin(), waiting_.end(), r));
  }
  kv_.release(r->block_table);
  r->block_hashes.clear();
  r->state = RequestState::Finished;
}

void Scheduler::preempt(Request* r) {
  NF_CHECK(r->state == RequestState::Running, "preempting request {} that is not running", r->id);
  running_.erase(std::find(running_.begin(), running_.end(), r));
  kv_.release(r->block_table);
  r->block_hashes.clear();
  r->num_computed = 0;
  r->awaiting_kv = false;
  ++preemptions_;
  r->state = RequestState::Waiting;
  waiting_.push_front(r);
}

std::pair<int64_t, int64_t> Scheduler::projection_of(const Request& r) const {
  int64_t output = r.params.max_tokens;
  const bool to_context_limit =
      config_.max_model_len > 0 &&
      static_cast<int64_t>(r.prompt_len) + r.params.max_tokens >= config_.max_model_len;
  if (recent_outputs_.size() >= kMinSamples) {
    const int64_t n = static_cast<int64_t>(recent_outputs_.size());
    output = std::min<int64_t>(output, (3 * recent_sum_ + 2 * n - 1) / (2 * n));
  } else if (to_context_limit) {
    output = std::min(output, kColdStartOutput);
  }
  output = std::max<int64_t>(output, r.num_generated());
  int64_t final_len = static_cast<int64_t>(r.prompt_len) + output;
  if (config_.max_model_len > 0) final_len = std::min<int64_t>(final_len, config_.max_model_len);
  const int64_t known = static_cast<int64_t>(r.tokens.size());
  return {final_len, std::max<int64_t>(0, final_len - known)};
}

int64_t Scheduler::projected_peak_tokens(std::vector<std::pair<int64_t, int64_t>> reqs,
                                         int64_t block_size) {
  std::sort(reqs.begin(), reqs.end(),
            [](const auto& a, const auto& b) { return a.second > b.second; });
  // Walk the finishing times from the last: the prefix holds the requests still running.
  int64_t peak = 0, sum = 0, n = 0;
  for (const auto& [final_len, remaining] : reqs) {
    sum += final_len - remaining + block_size;  // + a block of rounding per request
    ++n;
    peak = std::max(peak, sum + n * remaining);
  }
  return peak;
}

std::vector<ScheduledRequest> Scheduler::schedule(ScheduledBatch& batch) {
  batch.clear();
  std::vector<ScheduledRequest> out;
  int budget = config_.max_batch_tokens;
  bool preempted = false;
  // Running requests, oldest first. Victims are taken from the back (newest), so a request
  // already scheduled this step is never preempted.
  for (size_t i = 0; i < running_.size() && budget > 0;) {
    Request* r = running_[i];
    if (r->awaiting_kv && kv_.loading_any(r->block_table)) {
      ++i;
      continue;
    }
    r->awaiting_kv = false;
    if (r->stop_pending) {
      ++i;
      continue;
    }
    const int n = std::min(static_cast<int>(r->tokens.size()) - r->num_computed, budget);
    NF_CHECK(n > 0, "running request {} has nothing to compute", r->id);
    while (!kv_.reserve(r->block_table, r->num_computed + n)) {
      Request* victim = running_.back();
      preempt(victim);
      preempted = true;
      if (victim == r) break;
    }
    if (r->state != RequestState::Running) break;
    out.push_back({r, n, r->num_computed + n == static_cast<int>(r->tokens.size())});
    budget -= n;
    ++i;
  }
  // Admit waiting requests in arrival order; none in a step that had to preempt. A request
  // whose last token is still being sampled (preempted while stop_pending) is passed over.
  const int64_t pool_tokens = kv_.num_blocks() * kv_.block_size();
  // Peak admission: the running requests' projections, once per step; an admitted request's
  // projection stays in.
  std::vector<std::pair<int64_t, int64_t>> projections;
  if (config_.admit_by_projected_peak)
    for (const Request* r : running_) projections.push_back(projection_of(*r));
  for (size_t w = 0; !preempted && w < waiting_.size() && budget > 0 &&
                     static_cast<int>(running_.size()) < config_.max_running_requests;) {
    Request* r = waiting_[w];
    if (r->stop_pending || (r->prompt_ready && !r->leads_siblings && !*r->prompt_ready)) {
      ++w;
      continue;
    }
    // Its prefix is on its way up from the disk tier: it waits while the step has other work
    // (the GPU never idles for the disk; admitted now, it recomputes what has not arrived).
    const bool fetching = r->kv_prefetch && !r->kv_prefetch->load();
    if (fetching && !out.empty()) {
      ++w;
      continue;
    }
    if (config_.admit_by_projected_peak) {
      projections.push_back(projection_of(*r));  // the first request is admitted regardless
      if (!running_.empty() && projected_peak_tokens(projections, kv_.block_size()) > pool_tokens)
        break;
    }
    if (r->block_table.empty())
      r->num_computed = static_cast<int>(
          kv_.match_prefix(r->tokens, r->block_table, r->block_hashes, /*read_disk=*/!fetching));
    const int n = std::min(static_cast<int>(r->tokens.size()) - r->num_computed, budget);
    if (!kv_.reserve(r->block_table, r->num_computed + n)) {
      kv_.release(r->block_table);  // give the prefix hits back; retried next step
      r->block_hashes.clear();
      r->num_computed = 0;
      break;
    }
    waiting_.erase(waiting_.begin() + static_cast<std::ptrdiff_t>(w));
    r->state = RequestState::Running;
    running_.push_back(r);
    // Part of its prefix comes from an offload tier, copied in beside the forwards: it computes
    // the rest once those blocks are resident.
    if (kv_.loading_any(r->block_table)) {
      r->awaiting_kv = true;
      continue;
    }
    out.push_back({r, n, r->num_computed + n == static_cast<int>(r->tokens.size())});
    budget -= n;
  }
  // Flatten into the batch, single-token rows (decodes) first and the prefill chunks after them,
  // each group in scheduling order: attention backends run the two groups as separate batches.
  std::stable_partition(out.begin(), out.end(),
                        [](const ScheduledRequest& s) { return s.num_tokens == 1; });
  const int bs = kv_.block_size();
  for (const ScheduledRequest& s : out) {
    const Request& r = *s.request;
    for (int j = 0; j < s.num_tokens; ++j) {
      const int pos = r.num_computed + j;
      batch.token_ids.push_back(r.tokens[pos]);  // kTokenFromDevice where still pending
      batch.positions.push_back(pos);
      batch.slot_mapping.push_back(static_cast<int64_t>(r.block_table[pos / bs]) * bs + pos % bs);
    }
    batch.seq_indptr.push_back(static_cast<int32_t>(batch.token_ids.size()));
    batch.context_lens.push_back(r.num_computed + s.num_tokens);
    batch.block_ids.insert(batch.block_ids.end(), r.block_table.begin(), r.block_table.end());
    batch.block_indptr.push_back(static_cast<int32_t>(batch.block_ids.size()));
    batch.request_ids.push_back(r.id);
    if (s.sampled) batch.sample_rows.push_back(static_cast<int32_t>(batch.token_ids.size()) - 1);
  }
  for (const ScheduledRequest& s : out) s.request->num_computed += s.num_tokens;
  return out;
}

void Scheduler::check_integrity() const {
  std::vector<const std::vector<int32_t>*> tables;
  for (const Request* r : running_) tables.push_back(&r->block_table);
  for (const Request* r : waiting_) tables.push_back(&r->block_table);
  kv_.check_integrity(tables);
}

}  // namespace nf
