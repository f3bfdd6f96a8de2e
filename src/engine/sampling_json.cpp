#include "engine/sampling_json.h"

#include <algorithm>
#include <climits>
#include <nlohmann/json.hpp>

#include "common/status.h"

namespace nf {

int64_t json_integer(const nlohmann::json& v, int64_t lo, int64_t hi, const std::string& what) {
  if (!v.is_number_integer()) fail("{}: expected an integer", what);
  // Compare before any narrowing: 2^32 + 5 must not pass as 5, nor 2^64 - 1 as -1.
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::max<int64_t>(hi, 0)))
      fail("{}: {} is outside [{}, {}]", what, u, lo, hi);
    return static_cast<int64_t>(u);
  }
  const int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) fail("{}: {} is outside [{}, {}]", what, x, lo, hi);
  return x;
}

nanoflow::SamplingParams sampling_params_from_json(const nlohmann::json& j, const std::string& where) {
  using nlohmann::json;
  if (!j.is_object()) fail("{}: expected a JSON object", where);
  nanoflow::SamplingParams p;
  auto num = [&](const char* key, auto& out, double lo, double hi) {
    if (!j.contains(key) || j[key].is_null()) return;
    if (!j[key].is_number()) fail("{}: field '{}': expected a number", where, key);
    const double v = j[key].get<double>();
    if (!(v >= lo && v <= hi)) fail("{}: field '{}': {} is outside [{}, {}]", where, key, v, lo, hi);
    out = static_cast<std::remove_reference_t<decltype(out)>>(v);
  };
  auto integer = [&](const char* key, auto& out, int64_t lo, int64_t hi) {
    if (!j.contains(key) || j[key].is_null()) return;
    out = static_cast<std::remove_reference_t<decltype(out)>>(
        json_integer(j[key], lo, hi, fmt::format("{}: field '{}'", where, key)));
  };
  integer("max_tokens", p.max_tokens, 1, 1 << 24);
  integer("min_tokens", p.min_tokens, 0, 1 << 24);
  num("temperature", p.temperature, 0, 100);
  num("top_p", p.top_p, 1e-9, 1);
  integer("top_k", p.top_k, -1, 1 << 24);
  num("min_p", p.min_p, 0, 1);
  integer("n", p.n, 1, 128);
  integer("logprobs", p.logprobs, 0, 20);
  if (j.contains("max_tokens") && !j["max_tokens"].is_null() && p.min_tokens > p.max_tokens)
    fail("{}: field 'min_tokens': {} exceeds max_tokens ({})", where, p.min_tokens, p.max_tokens);
  num("presence_penalty", p.presence_penalty, -2, 2);
  num("frequency_penalty", p.frequency_penalty, -2, 2);
  num("repetition_penalty", p.repetition_penalty, 1e-6, 100);
  if (j.contains("seed") && !j["seed"].is_null()) {
    if (!j["seed"].is_number_integer()) fail("{}: field 'seed': expected an integer", where);
    p.seed = static_cast<uint64_t>(j["seed"].get<int64_t>());
  }
  if (j.contains("ignore_eos") && !j["ignore_eos"].is_null()) {
    if (!j["ignore_eos"].is_boolean()) fail("{}: field 'ignore_eos': expected true or false", where);
    p.ignore_eos = j["ignore_eos"].get<bool>();
  }
  if (j.contains("stop") && !j["stop"].is_null()) {
    const json& s = j["stop"];
    if (s.is_string()) {
      p.stop = {s.get<std::string>()};
    } else if (s.is_array()) {
      for (const auto& x : s) {
        if (!x.is_string()) fail("{}: field 'stop': expected a string or a list of strings", where);
        p.stop.push_back(x.get<std::string>());
      }
    } else {
      fail("{}: field 'stop': expected a string or a list of strings", where);
    }
  }
  if (j.contains("stop_token_ids") && !j["stop_token_ids"].is_null()) {
    if (!j["stop_token_ids"].is_array()) fail("{}: field 'stop_token_ids': expected a list of integers", where);
    for (const auto& x : j["stop_token_ids"])
      p.stop_token_ids.push_back(static_cast<int32_t>(
          json_integer(x, 0, INT32_MAX, fmt::format("{}: field 'stop_token_ids'", where))));
  }
  if (j.contains("logit_bias") && !j["logit_bias"].is_null()) {
    if (!j["logit_bias"].is_object()) fail("{}: field 'logit_bias': expected an object of token id -> bias", where);
    for (const auto& [k, v] : j["logit_bias"].items()) {
      int32_t id;
      try {
        size_t used = 0;
        id = std::stoi(k, &used);
        if (used != k.size()) throw std::invalid_argument(k);
      } catch (const std::exception&) {
        fail("{}: field 'logit_bias': key '{}' is not a token id", where, k);
      }
      if (!v.is_number()) fail("{}: field 'logit_bias': bias of {} is not a number", where, k);
      const float b = v.get<float>();
      if (!(b >= -100 && b <= 100)) fail("{}: field 'logit_bias': bias {} is outside [-100, 100]", where, b);
      p.logit_bias.emplace_back(id, b);
    }
  }
  return p;
}

}  // namespace nf
