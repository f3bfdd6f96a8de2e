// SamplingParams from a JSON object with OpenAI's field names (batch files, and later the
// server): max_tokens, min_tokens, temperature, top_p, top_k, min_p, n, seed, stop,
// stop_token_ids, ignore_eos, logprobs, presence_penalty, frequency_penalty,
// repetition_penalty, logit_bias. Unknown fields are ignored.
#pragma once

#include <nanoflow/sampling_params.h>

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <string>

namespace nf {

// Throws nf::Error "<where>: field '<name>': <problem>" for a wrong type or range (min_tokens
// above a given max_tokens included).
nanoflow::SamplingParams sampling_params_from_json(const nlohmann::json& j, const std::string& where);

// v as an integer in [lo, hi], compared before any narrowing; else nf::Error "<what>: ...".
int64_t json_integer(const nlohmann::json& v, int64_t lo, int64_t hi, const std::string& what);

}  // namespace nf
