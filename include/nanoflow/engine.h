// The engine: requests in, generated tokens out. Offline use: Engine::create, then generate().
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nanoflow/request_output.h>
#include <nanoflow/sampling_params.h>

namespace nf {
class Backend;
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
  int64_t num_kv_blocks = 0;       // exact KV pool size; overrides kv_cache_gb (tests)
  int threads = 0;                 // CPU backend threads; 0: all hardware threads
};

struct GenerateRequest {
  std::vector<int32_t> prompt;
  SamplingParams params;
};

class Engine {
 public:
  // Loads the model and builds the backend. Throws nf::Error on user-caused failures.
  static std::unique_ptr<Engine> create(const EngineConfig& config);
  // An engine over a backend that is already built (tests). eos_ids finish requests.
  Engine(const EngineConfig& config, std::unique_ptr<nf::Backend> backend,
         std::vector<int32_t> eos_ids);
  ~Engine();

  RequestId add_request(std::vector<int32_t> prompt, const SamplingParams& params);
  void abort(RequestId id);
  bool has_unfinished() const;
  // Runs one iteration; returns the state of every request that produced a token or finished.
  std::vector<RequestOutput> step();
  // Submits all requests at once so they batch, runs to completion; outputs in input order.
  std::vector<RequestOutput> generate(const std::vector<GenerateRequest>& batch);

  const nf::ModelConfig& model_config() const;
  const std::vector<int32_t>& eos_ids() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nanoflow
