// The executor: runs ScheduledBatches on a Backend and samples their rows, asynchronously, so
// that the engine thread can plan step i+1 while step i runs (one step ahead).
//
// The executor keeps, per request, what sampling needs on the device side: the prompt, the
// sampling parameters, the seed, and every token it has sampled. So a batch may name a token
// the host has not seen yet (kTokenFromDevice): the executor fills it in from that history.
// Steps run strictly in submission order, which is what makes it safe for the host to reuse a
// finished request's KV blocks in a step planned while an earlier step still writes them.
#pragma once

#include <nanoflow/request_output.h>
#include <nanoflow/sampling_params.h>

#include <atomic>
#include <condition_variable>
#include <exception>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "runtime/sampler.h"
#include "runtime/backend.h"
#include "runtime/batch.h"
#include "runtime/kv_transfer.h"
#include "runtime/sample_pack.h"

namespace nf {

// A token id in ScheduledBatch::token_ids that the executor sampled and the host has not seen.
constexpr int32_t kTokenFromDevice = -1;

struct ExecRequest {
  nanoflow::RequestId id = 0;
  std::vector<int32_t> prompt;
  nanoflow::SamplingParams params;
  uint64_t seed = 0;
};

struct StepInput {
  // KV offload (runtime/kv_transfer.h), started before the forward and run beside the forwards on
  // the backend's copy engines: copy these blocks out (every earlier step has written them) into
  // buffers of kv_offload, which adopts them once copied, and copy the loaded payloads into
  // their blocks. The KV manager holds every such block until take_finished_copies() returns it.
  std::vector<KvSave> kv_saves;
  std::vector<KvLoad> kv_loads;
  KvSaveSink* kv_offload = nullptr;
  ScheduledBatch batch;
  std::vector<ExecRequest> new_requests;      // first scheduled in this step
  std::vector<nanoflow::RequestId> finished;  // forget these before running
  std::vector<nanoflow::RequestId> sample_ids;  // [S] the request of each batch.sample_rows entry
};

struct StepOutput {
  std::vector<nanoflow::RequestId> ids;  // [S]
  std::vector<SampleResult> results;     // [S]
  double forward_ms = 0;                 // time of the forward pass and sampling
  std::exception_ptr error;              // the step failed (wait() rethrows it)
};

class Executor {
 public:
  // threaded: run steps on a worker thread; otherwise submit() runs the step at once.
  // sample_vocab: ids [0, sample_vocab) are sampled and ranked in the logprobs; the rows past
  // it (an embedding padded beyond the tokenizer, as Qwen2's 152,064 rows for 151,665 tokens)
  // never are, as in vLLM. 0: the model's whole vocabulary.
  Executor(Backend& backend, std::vector<int32_t> eos_ids, bool threaded, int32_t sample_vocab = 0);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  void submit(StepInput in);
  // Results of the oldest submitted step not yet returned; blocks until it has run. Rethrows
  // what the step threw (the executor goes on with the next one).
  StepOutput wait();
  int in_flight() const;
  // After a step failed (wait() threw), every step queued behind it fails too; once none is in
  // flight and the engine has failed their requests, this forgets every request and runs steps
  // again.
  void recover();
  // Starts in.kv_saves and in.kv_loads now (nothing else in it); only with no step in flight
  // (the engine flushes its offload saves so when idle).
  void kv_io_now(StepInput in);
  // The blocks whose copies have finished since the last call: saved ones (copied and handed
  // to the offload tiers) and loaded ones (resident on the device), for
  // KvCacheManager::finish_saves and finish_loads. Throws the error of a copy that failed
  // (once; its blocks come with the next call).
  struct FinishedCopies {
    std::vector<int32_t> saved, loaded;
  };
  FinishedCopies take_finished_copies();
  // Blocks until every started copy has finished.
  void wait_copies();

 private:
  struct State {
    std::vector<int32_t> prompt;
    nanoflow::SamplingParams params;
    uint64_t seed = 0;
    std::vector<int32_t> output;  // every token sampled for the request
    // For the device's penalties (kept only when a penalty is on): the prompt's distinct ids
    // (when repetition_penalty != 1) and the output's, with their counts.
    TokenCounts prompt_counts, output_counts;
  };
  StepOutput run(StepInput& in);
  StepOutput run_fenced(StepInput& in);
  void run_kv_io(StepInput& in);
  void worker_loop();

  // Offload copies: a job per step and direction, run by that direction's copier thread in
  // chunks of about kCopyChunkBytes, one chunk in flight at a time, so that the forward's own
  // small transfers (batch metadata up, sampled tokens down) never queue for long behind them
  // on the copy engines. A save's buffers go to the tiers once copied, a load's are dropped.
  // Jobs reach the copiers from run(), after the previous forward finished: every forward that
  // wrote a saved block, or may still write a block taken again for a load, is done.
  static constexpr size_t kCopyChunkBytes = size_t{8} << 20;
  struct CopyJob {
    std::vector<int32_t> blocks;
    std::vector<KvSave> saves;                   // save: what each block is
    std::vector<HostBlockPool::Buffer> buffers;  // save: copied into (taken chunk by chunk)
    std::vector<KvLoad> loads;                   // load: copied from
    KvSaveSink* offload = nullptr;
  };
  struct Copier {
    std::deque<CopyJob> jobs;
    bool busy = false;
    std::thread thread;
  };
  void copy_loop(bool save);
  std::mutex copy_mu_;
  std::condition_variable copy_cv_, copy_idle_cv_;
  Copier copiers_[2];  // saves, loads
  bool copy_stop_ = false;
  FinishedCopies finished_copies_;
  std::exception_ptr copy_error_;  // a copy that failed, raised by take_finished_copies
  std::atomic<bool> copy_alloc_warned_{false};

  Backend& backend_;
  std::vector<int32_t> eos_ids_;
  int32_t sample_vocab_;  // see the constructor
  std::unordered_map<nanoflow::RequestId, State> states_;
  std::exception_ptr failure_;  // guarded by mu_: the step that failed, until recover()
  Sampler sampler_;
  std::vector<float> logits_;
  DeviceSampleBatch dev_in_;   // reused per step when the backend samples on the device
  DeviceSampleResult dev_out_;

  bool threaded_;
  std::thread worker_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<StepInput> inputs_;
  std::deque<StepOutput> outputs_;
  int submitted_ = 0, returned_ = 0;
  bool stop_ = false;
};

}  // namespace nf
