// SamplingParams from a JSON object with OpenAI's field names (batch files, and later the
// server): max_tokens, min_tokens, temperature, top_p, top_k, min_p, n, seed, stop,
// stop_token_ids, ignore_eos, logprobs, presence_penalty, frequency_penalty,
// repetition_penalty, logit_bias. Unknown fields are ignored.
#pragma once

#include <nanoflow/sampling_params.h>

#include <nlohmann/json_fwd.hpp>

#include <string>

namespace nf {

// Throws nf::Error "<where>: field '<name>': <problem>" for a wrong type or range.
nanoflow::SamplingParams sampling_params_from_json(const nlohmann::json& j, const std::string& where);

}  // namespace nf
