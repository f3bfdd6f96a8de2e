// Per-request sampling parameters (OpenAI/vLLM semantics).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace nanoflow {

struct SamplingParams {
  int max_tokens = 16;             // stop after this many generated tokens ("length")
  int min_tokens = 0;              // EOS and stop ids are masked until this many tokens exist
  float temperature = 1.0f;        // 0 means greedy
  int top_k = 0;                   // 0 or negative: off
  float top_p = 1.0f;              // 1: off
  float min_p = 0.0f;              // 0: off
  std::optional<uint64_t> seed;    // same seed, same output, whatever else is batched
  bool ignore_eos = false;         // do not stop at the model's EOS tokens
  std::vector<int32_t> stop_token_ids;  // extra token ids that finish the request ("stop")
  std::vector<std::string> stop;   // stop strings, matched on the text (never streamed)
  int n = 1;                       // completions of the same prompt (they share its KV blocks)
  int logprobs = 0;                // top-K log-probabilities of the raw logits per generated token
  float repetition_penalty = 1.0f; // >1 discourages tokens seen in the prompt or output (1: off)
  float frequency_penalty = 0.0f;  // subtracts count(token in output) * this from its logit
  float presence_penalty = 0.0f;   // subtracts this from the logit of every token in the output
  std::vector<std::pair<int32_t, float>> logit_bias;  // added to the logits before sampling

  bool greedy() const { return temperature <= 0.0f || top_k == 1; }
};

}  // namespace nanoflow
