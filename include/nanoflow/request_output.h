// What the engine reports for a request.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace nanoflow {

using RequestId = uint64_t;

enum class FinishReason { None, Stop, Length, Abort };

inline const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::Stop: return "stop";
    case FinishReason::Length: return "length";
    case FinishReason::Abort: return "abort";
    case FinishReason::None: break;
  }
  return "";
}

// One generated token's top-K (id, log-probability) pairs, log-softmax of the raw logits.
using TopLogprobs = std::vector<std::pair<int32_t, float>>;

struct RequestOutput {
  RequestId id = 0;
  std::vector<int32_t> token_ids;         // all generated tokens so far
  std::vector<float> token_logprobs;      // logprob of each generated token (raw logits)
  std::vector<TopLogprobs> top_logprobs;  // per generated token, when logprobs > 0
  FinishReason finish_reason = FinishReason::None;
  int prompt_tokens = 0;
  bool finished() const { return finish_reason != FinishReason::None; }
};

}  // namespace nanoflow
