#include "engine/sampling_json.h"

#include <nlohmann/json.hpp>

#include "common/status.h"

namespace nf {

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
    if (!j[key].is_number_integer()) fail("{}: field '{}': expected an integer", where, key);
    const int64_t v = j[key].get<int64_t>();
    if (v < lo || v > hi) fail("{}: field '{}': {} is outside [{}, {}]", where, key, v, lo, hi);
    out = static_cast<std::remove_reference_t<decltype(out)>>(v);
  };
  integer("max_tokens", p.max_tokens, 1, 1 << 24);
  integer("min_tokens", p.min_tokens, 0, 1 << 24);
  num("temperature", p.temperature, 0, 100);
  num("top_p", p.top_p, 1e-9, 1);
  integer("top_k", p.top_k, -1, 1 << 24);
  num("min_p", p.min_p, 0, 1);
  integer("n", p.n, 1, 128);
  integer("logprobs", p.logprobs, 0, 20);
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
    for (const auto& x : j["stop_token_ids"]) {
      if (!x.is_number_integer()) fail("{}: field 'stop_token_ids': expected a list of integers", where);
      p.stop_token_ids.push_back(x.get<int32_t>());
    }
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
