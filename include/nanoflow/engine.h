// The engine: requests in, generated tokens out.
//
// Offline: Engine::create, then generate(batch). Online: start() runs the engine loop on a
// thread of its own; any thread may add_request() / abort() and read the output stream with
// poll_outputs(). Without start(), step() drives the engine from the calling thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nanoflow/request_output.h>
#include <nanoflow/sampling_params.h>

namespace nf {
class Backend;
class Tokenizer;
struct ModelConfig;
}  // namespace nf

namespace nanoflow {

struct EngineConfig {
  std::string model;               // .gguf file, Hugging Face directory, or dummy:<preset|config.json>
  std::string device = "cpu";      // cpu | cuda
  int max_batch_tokens = 2048;     // dense token budget of one iteration
  int max_running_requests = 256;  // cap on requests in one iteration
  int block_size = 16;             // tokens per KV block
  double kv_cache_gb = 1.0;        // KV pool in host memory (CPU backend)
  double gpu_memory_utilization = 0.90;  // share of the GPU's memory the CUDA backend may hold
  std::string attention = "auto";  // CUDA attention kernel: auto | flashinfer | native | tc
  bool cuda_graphs = true;         // CUDA: replay the dense ops from graphs per padded batch size
  std::string tc_decode_kernel = "streams";  // --attention tc on the whole GPU: streams | per-request
  int pipeline_trace = 0;          // CUDA: print the N-th split iteration's timeline (0: off)
  std::string pipeline_file;       // nano-batch schedules (JSON, see runtime/pipeline.h); empty:
                                   // serial; "auto": timed at start-up (CUDA; serial on the CPU)
  double tune_budget_s = 60;       // --pipeline auto: seconds for the timings
  bool pipeline_one_stream = false;  // run those schedules on one stream (split, no overlap)
  int profile_first_step = -1;     // CUDA: time each op of forwards [first, first + 5) (-1: off)
  int64_t num_kv_blocks = 0;       // exact KV pool size; overrides kv_cache_gb (tests)
  int threads = 0;                 // CPU backend threads; 0: all hardware threads
  int tensor_parallel_size = 1;    // ranks the model is split over: CUDA, one GPU each (devices
                                   // 0..N-1, NCCL); CPU, threads of one process
  int tp_comm_ctas = 0;            // CUDA tensor parallel: CTAs per all-reduce (0: the default)
  std::string tp_allreduce = "nccl";  // CUDA tensor parallel: nccl | peer (experimental)
  bool enable_prefix_caching = true;  // reuse the KV of full blocks with the same prefix
  bool async_schedule = true;      // plan step i+1 while step i runs (one step ahead)
  // Admission of waiting requests: "peak" (only while the projected peak KV use of the running
  // requests, each grown to its expected output, fits the pool) or "greedy" (while the prompt's
  // blocks are free; outgrowing requests preempt the newest).
  std::string kv_admission = "peak";
  // KV offload tiers below the prefix cache (prefix caching must be on): host memory, then
  // SSD files (io_uring); a finished request's full blocks are saved there and a later prompt
  // with the same prefix loads them instead of recomputing. 0 / empty: no such tier.
  double kv_host_gb = 0;
  std::string kv_disk_dir;
  double kv_disk_gb = 0;
};

struct GenerateRequest {
  std::vector<int32_t> prompt;
  SamplingParams params;
};

struct EngineStats {
  int64_t steps = 0;
  int64_t scheduled_tokens = 0;
  int64_t prompt_tokens = 0, cached_prompt_tokens = 0, generated_tokens = 0;
  int64_t preemptions = 0;
  int num_running = 0, num_waiting = 0;
  int64_t kv_blocks_used = 0, kv_blocks_total = 0;
  double schedule_ms = 0;  // host time spent planning steps
  double forward_ms = 0;   // executor time (forward + sampling)
  // CUDA: device time of the forwards (first to last GPU op of each) and the device's idle time
  // between consecutive forwards, from CUDA events; 0 on the CPU.
  double device_busy_ms = 0, device_idle_ms = 0;
  // KV offload: prompt tokens loaded from each tier instead of computed (also counted in
  // cached_prompt_tokens), blocks saved, and what each tier holds now.
  int64_t kv_host_hit_tokens = 0, kv_disk_hit_tokens = 0, kv_saved_blocks = 0;
  int64_t kv_host_blocks = 0, kv_disk_blocks = 0;
  bool kv_disk_enabled = false;
};

class Engine {
 public:
  // Loads the model and builds the backend. Throws nf::Error on user-caused failures.
  static std::unique_ptr<Engine> create(const EngineConfig& config);
  // An engine over a backend that is already built. eos_ids finish requests; the tokenizer (may
  // be null) gives outputs their text and enables stop strings.
  Engine(const EngineConfig& config, std::unique_ptr<nf::Backend> backend, std::vector<int32_t> eos_ids,
         std::shared_ptr<const nf::Tokenizer> tokenizer = nullptr);
  ~Engine();

  // Thread-safe. Throws nf::Error for an invalid request (empty prompt, ids outside the model's
  // or the tokenizer's vocabulary in the prompt, logit_bias or stop_token_ids, bad params,
  // min_tokens > max_tokens, longer than the context or the KV pool). A request the engine then
  // fails to serve (a device error) finishes with FinishReason::Error and its message. With params.n > 1 the n completions get the ids
  // first, first + 1, ..., first + n - 1 (RequestOutput::index 0..n-1); the returned id is
  // first. They share the prompt's KV blocks: the others start once the first has computed it.
  RequestId add_request(std::vector<int32_t> prompt, const SamplingParams& params);
  // Thread-safe; the request finishes with FinishReason::Abort and its blocks are freed.
  void abort(RequestId id);
  // Thread-safe: moves the output deltas produced so far into `out`, waiting up to `timeout`
  // for the first. Returns whether any arrived.
  bool poll_outputs(std::vector<RequestOutput>& out, std::chrono::milliseconds timeout);

  // Runs the engine loop on a background thread until stop() (or destruction).
  void start();
  void stop();
  // Without start(): runs one iteration on this thread. Returns false when idle.
  bool step();
  // Without start(): whether any request is queued, running or in flight.
  bool has_unfinished() const;

  // Submits all requests at once so they batch, runs them to completion (on this thread, or
  // waits for the background loop); outputs in input order, n per request with params.n = n.
  std::vector<RequestOutput> generate(const std::vector<GenerateRequest>& batch);

  EngineStats stats() const;
  // The backend's per-op timings of the profiled steps (EngineConfig::profile_first_step), JSON;
  // empty when there are none.
  std::string op_profile_json() const;
  const nf::ModelConfig& model_config() const;
  const std::vector<int32_t>& eos_ids() const;
  const nf::Tokenizer* tokenizer() const;  // null for models without one (dummy)
  // Verifies the KV accounting (no leak, no double owner); aborts on violation. Not thread-safe
  // with a running loop.
  void check_integrity() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nanoflow
