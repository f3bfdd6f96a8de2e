// The scheduler: which tokens of which requests run in the next iteration.
//
// Design (NanoFlow's dense batch, phase-free): every request has known tokens (prompt plus
// generated) and a count of computed ones; each iteration lets computed catch up with known
// under a token budget. Running requests go first, oldest first: a decoding request needs one
// token, a partly prefilled one the rest of its prompt. Waiting requests are then admitted in
// arrival order while budget, the running cap and KV blocks allow; the last one admitted may
// get a partial chunk (chunked prefill). When a running request cannot get KV blocks, the
// newest running request is preempted: its blocks are freed and it goes back to the front of
// the queue to be recomputed later. In the batch, requests with one token this step (decodes)
// come first, then the multi-token chunks. A request's row is sampled when its chunk reaches the end
// of its known tokens. Scheduled tokens count as computed at once (num_computed), so the next
// step can be planned while this one runs; a request waiting for its last token's result
// (stop_pending) is skipped.
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "engine/kv_cache_manager.h"
#include "engine/request.h"
#include "runtime/batch.h"

namespace nf {

struct SchedulerConfig {
  int max_batch_tokens = 2048;
  int max_running_requests = 256;
  int max_model_len = 0;  // context limit (positions); requests stop at it
  // Admission of waiting requests: false admits while the prompt chunk's blocks are free
  // (running requests that later outgrow the pool preempt the newest); true also requires the
  // projected peak KV use of the running requests and the newcomer, each growing to its
  // expected length, to fit the pool (see projected_peak_tokens). Preemption stays the
  // fallback for requests that outgrow their expectation.
  bool admit_by_projected_peak = false;
};

struct ScheduledRequest {
  Request* request;
  int num_tokens;  // tokens computed this step
  bool sampled;    // whether a token is sampled for it this step
};

class Scheduler {
 public:
  Scheduler(const SchedulerConfig& config, KvCacheManager& kv);

  void add(Request* r);
  // Finishes a request wherever it is (abort or stop) and frees its blocks. completed: it
  // stopped on its own (stop condition or length), and its output length joins the estimate.
  void finish(Request* r, bool completed = false);
  bool empty() const { return waiting_.empty() && running_.empty(); }
  size_t num_waiting() const { return waiting_.size(); }
  size_t num_running() const { return running_.size(); }
  int64_t num_preemptions() const { return preemptions_; }

  // Plans the next iteration into `batch` and advances each scheduled request's num_computed;
  // returns the requests in batch order. Token ids the host has not seen yet are written as
  // kTokenFromDevice.
  std::vector<ScheduledRequest> schedule(ScheduledBatch& batch);
  void check_integrity() const;

 private:
  void preempt(Request* r);
  // The most KV tokens the requests (final length, remaining decode steps) will hold at once,
  // each with a block of rounding: usage at step t is the sum over requests still running at t
  // of (final length - remaining + t), and its maximum is reached just before one finishes.
  static int64_t projected_peak_tokens(std::vector<std::pair<int64_t, int64_t>> reqs,
                                       int64_t block_size);
  // (final length, remaining steps) of a request: its prompt plus its expected output, which
  // is max_tokens, or, once kMinSamples requests have completed, min(max_tokens, 1.5x the mean
  // output of the last kWindow completed); before that, a request whose max_tokens reaches the
  // context limit (the API's default when none is given) expects at most kColdStartOutput.
  // Never below what it has generated; capped at the context limit.
  std::pair<int64_t, int64_t> projection_of(const Request& r) const;
  static constexpr size_t kWindow = 256, kMinSamples = 16;
  static constexpr int64_t kColdStartOutput = 512;
  std::deque<int32_t> recent_outputs_;  // output lengths of the last completed requests
  int64_t recent_sum_ = 0;

  SchedulerConfig config_;
  KvCacheManager& kv_;
  std::deque<Request*> waiting_;
  std::vector<Request*> running_;  // admission order: oldest first
  int64_t preemptions_ = 0;
};

}  // namespace nf
