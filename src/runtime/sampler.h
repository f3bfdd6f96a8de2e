// Token sampling on the host from one row of logits.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

#include <nanoflow/request_output.h>
#include <nanoflow/sampling_params.h>

namespace nf {

struct SampleResult {
  int32_t token = -1;
  float logprob = 0;               // of `token`, log-softmax of the raw logits
  nanoflow::TopLogprobs top;       // top-K of the raw logits, when params.logprobs > 0
};

// What one row needs besides its logits.
struct SampleContext {
  const nanoflow::SamplingParams* params = nullptr;
  std::span<const int32_t> prompt;  // for the repetition penalty
  std::span<const int32_t> output;  // tokens generated so far (penalties)
  std::span<const int32_t> banned;  // ids that get no probability (EOS/stop before min_tokens)
  uint64_t seed = 0;                // the request's seed
};

// The generator for a request's step-th token: a pure function of (seed, step), so a seeded
// request gives the same tokens whatever else is batched with it and wherever it is sampled.
std::mt19937_64 step_rng(uint64_t seed, uint64_t step);

// Reusable scratch buffers; one per thread.
class Sampler {
 public:
  SampleResult sample(std::span<const float> logits, const SampleContext& ctx);

 private:
  std::vector<float> work_;
  std::vector<int32_t> idx_;
  std::vector<double> probs_;
  std::vector<uint32_t> counts_;
};

// Log-softmax normalizer of a logits row: logsumexp(logits).
double log_sum_exp(std::span<const float> logits);

}  // namespace nf
