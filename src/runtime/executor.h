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

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/kv_cache_manager.h"
#include "engine/kv_offload.h"
#include "engine/sampler.h"
#include "runtime/backend.h"
#include "runtime/batch.h"
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
  // KV offload (engine/kv_offload.h), started before the forward and run beside it on the
  // backend's copy engine: copy these blocks out (every earlier step has written them; the
  // manager hands none out again before take_saved_blocks() returns it) into buffers of
  // kv_offload, which adopts them once copied; copy the loaded payloads into their blocks (no
  // forward of this step reads them; the next one waits for them).
  std::vector<KvSave> kv_saves;
  std::vector<KvLoad> kv_loads;
  KvOffload* kv_offload = nullptr;
  ScheduledBatch batch;
  std::vector<ExecRequest> new_requests;      // first scheduled in this step
  std::vector<nanoflow::RequestId> finished;  // forget these before running
  std::vector<nanoflow::RequestId> sample_ids;  // [S] the request of each batch.sample_rows entry
};

struct StepOutput {
  std::vector<nanoflow::RequestId> ids;  // [S]
  std::vector<SampleResult> results;     // [S]
  double forward_ms = 0;                 // time of the forward pass and sampling
};

class Executor {
 public:
  // threaded: run steps on a worker thread; otherwise submit() runs the step at once.
  Executor(Backend& backend, std::vector<int32_t> eos_ids, bool threaded);
  ~Executor();
  Executor(const Executor&) = delete;
  Executor& operator=(const Executor&) = delete;

  void submit(StepInput in);
  // Results of the oldest submitted step not yet returned; blocks until it has run.
  StepOutput wait();
  int in_flight() const;
  // Starts in.kv_saves and in.kv_loads now (nothing else in it); only with no step in flight
  // (the engine flushes its offload saves so when idle).
  void kv_io_now(StepInput in);
  // The blocks whose saves have finished (copied and handed to the offload tiers) since the
  // last call; the KV manager may hand them out again (KvCacheManager::finish_saves).
  std::vector<int32_t> take_saved_blocks();
  // Blocks until every started save has finished.
  void wait_saves();

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
  void run_kv_io(StepInput& in);
  void worker_loop();
  void save_loop();

  // Offload copies. Saves: a job per step, finished on the saver thread (it waits for the
  // copies, then hands the buffers to the tiers). Loads: their buffers, kept until a forward
  // that waited for them has run.
  struct SaveJob {
    uint64_t ticket = 0;
    std::vector<KvSave> saves;
    std::vector<HostBlockPool::Buffer> buffers;
    KvOffload* offload = nullptr;
  };
  std::mutex save_mu_;
  std::condition_variable save_cv_, save_idle_cv_;
  std::deque<SaveJob> save_jobs_;
  bool save_busy_ = false, save_stop_ = false;
  std::vector<int32_t> saved_blocks_;
  std::thread saver_;
  std::vector<KvLoad> loads_started_, loads_fenced_;

  Backend& backend_;
  std::vector<int32_t> eos_ids_;
  std::unordered_map<nanoflow::RequestId, State> states_;
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
