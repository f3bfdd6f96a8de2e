// What the engine reports for a request.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace nanoflow {

using RequestId = uint64_t;

// Error: the engine could not serve this request (RequestOutput::error says why); the engine
// and every other request go on.
enum class FinishReason { None, Stop, Length, Abort, Error };

inline const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Abort: return "abort";
    case FinishReason::Error: return "error";
    case FinishReason::None: break;
  }
  return "";
}

// One generated token's top-K (id, log-probability) pairs, log-softmax of the raw logits.
using TopLogprobs = std::vector<std::pair<int32_t, float>>;

// From the output stream: the tokens generated since the request's previous RequestOutput (a
// delta). From generate(): everything the request generated.
struct RequestOutput {
  RequestId id = 0;
  int index = 0;                          // which of the n completions of one add_request
  std::vector<int32_t> token_ids;         // generated tokens
  std::vector<float> token_logprobs;      // logprob of each (raw logits)
  std::vector<TopLogprobs> top_logprobs;  // per token, when SamplingParams::logprobs > 0
  std::string text;                       // detokenized text (when the model has a tokenizer)
  FinishReason finish_reason = FinishReason::None;
  int prompt_tokens = 0;                  // usage
  int completion_tokens = 0;              // usage: all generated so far
  int cached_prompt_tokens = 0;           // prompt tokens served from the prefix cache
  std::string error;                      // with FinishReason::Error: what went wrong
  bool finished() const { return finish_reason != FinishReason::None; }
  // Appends a later delta of the same request.
  void append(const RequestOutput& delta) {
    token_ids.insert(token_ids.end(), delta.token_ids.begin(), delta.token_ids.end());
    token_logprobs.insert(token_logprobs.end(), delta.token_logprobs.begin(), delta.token_logprobs.end());
    top_logprobs.insert(top_logprobs.end(), delta.top_logprobs.begin(), delta.top_logprobs.end());
    text += delta.text;
    finish_reason = delta.finish_reason;
    completion_tokens = delta.completion_tokens;
    cached_prompt_tokens = delta.cached_prompt_tokens;
    if (!delta.error.empty()) error = delta.error;
  }
};

}  // namespace nanoflow
