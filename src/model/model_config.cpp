#include "model/model_config.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <numbers>

#include "common/status.h"
#include "model/gguf.h"

namespace nf {
namespace {

using nlohmann::json;

int64_t get_int(const json& j, const char* key, const std::string& src) {
  if (!j.contains(key)) fail("{}: missing key '{}'", src, key);
  if (!j[key].is_number_integer()) fail("{}: key '{}' must be an integer", src, key);
  return j[key].get<int64_t>();
}

double get_num(const json& j, const char* key, const std::string& src, double dflt) {
  if (!j.contains(key) || j[key].is_null()) return dflt;
  if (!j[key].is_number()) fail("{}: key '{}' must be a number", src, key);
  return j[key].get<double>();
}

std::vector<int32_t> int_or_list(const json& v, const char* key, const std::string& src) {
  std::vector<int32_t> out;
  if (v.is_null()) return out;
  if (v.is_number_integer()) return {v.get<int32_t>()};
  if (!v.is_array()) fail("{}: key '{}' must be an integer or a list of integers", src, key);
  for (const auto& e : v) {
    if (!e.is_number_integer()) fail("{}: key '{}' must be an integer or a list of integers", src, key);
    out.push_back(e.get<int32_t>());
  }
  return out;
}

// Reads a rope scaling/parameters object into `r`; `key` names it for messages.
void parse_rope(const json& o, const char* key, const std::string& src, RopeConfig& r) {
  if (o.is_null()) return;
  if (!o.is_object()) fail("{}: key '{}' must be an object", src, key);
  std::string type = "default";
  if (o.contains("rope_type")) type = o["rope_type"].get<std::string>();
  else if (o.contains("type")) type = o["type"].get<std::string>();
  if (o.contains("rope_theta")) r.theta = get_num(o, "rope_theta", src, r.theta);
  if (type == "default") {
    r.type = "default";
  } else if (type == "linear") {
    r.type = "linear";
    r.factor = get_num(o, "factor", src, 1);
  } else if (type == "llama3") {
    r.type = "llama3";
    r.factor = get_num(o, "factor", src, 8);
    r.low_freq_factor = get_num(o, "low_freq_factor", src, 1);
    r.high_freq_factor = get_num(o, "high_freq_factor", src, 4);
    if (!o.contains("original_max_position_embeddings"))
      fail("{}: key '{}.original_max_position_embeddings' is missing", src, key);
    r.original_max_position_embeddings = get_int(o, "original_max_position_embeddings", src);
  } else {
    fail("{}: key '{}': rope type '{}' is not supported (supported: default, linear, llama3)", src,
         key, type);
  }
}

}  // namespace

ModelConfig parse_hf_config(const json& j, const std::string& src) {
  if (!j.is_object()) fail("{}: not a JSON object", src);
  ModelConfig c;
  if (!j.contains("architectures") || !j["architectures"].is_array() || j["architectures"].empty())
    fail("{}: key 'architectures' is missing", src);
  c.arch_name = j["architectures"][0].get<std::string>();
  if (c.arch_name == "LlamaForCausalLM") {
    c.arch = ModelArch::Llama;
  } else if (c.arch_name == "Qwen2ForCausalLM") {
    c.arch = ModelArch::Qwen2;
    c.qkv_bias = true;
  } else {
    fail("{}: key 'architectures': unsupported architecture '{}' (supported: LlamaForCausalLM, "
         "Qwen2ForCausalLM)", src, c.arch_name);
  }
  c.vocab_size = get_int(j, "vocab_size", src);
  c.hidden_size = get_int(j, "hidden_size", src);
  c.intermediate_size = get_int(j, "intermediate_size", src);
  c.num_layers = get_int(j, "num_hidden_layers", src);
  c.num_heads = get_int(j, "num_attention_heads", src);
  c.num_kv_heads = j.contains("num_key_value_heads") && !j["num_key_value_heads"].is_null()
                       ? get_int(j, "num_key_value_heads", src)
                       : c.num_heads;
  c.head_dim = j.contains("head_dim") && !j["head_dim"].is_null() ? get_int(j, "head_dim", src)
                                                                  : (c.num_heads > 0 ? c.hidden_size / c.num_heads : 0);
  c.max_position_embeddings = j.contains("max_position_embeddings")
                                  ? get_int(j, "max_position_embeddings", src)
                                  : 4096;
  c.rms_norm_eps = get_num(j, "rms_norm_eps", src, 1e-6);
  c.tie_word_embeddings = j.value("tie_word_embeddings", false);
  if (c.arch == ModelArch::Llama && j.value("attention_bias", false)) c.qkv_bias = true;
  if (j.value("mlp_bias", false)) fail("{}: key 'mlp_bias': MLP biases are not supported", src);
  // transformers 4: rope_theta + rope_scaling; transformers 5: rope_parameters (with rope_theta).
  c.rope.theta = get_num(j, "rope_theta", src, 10000);
  if (j.contains("rope_scaling")) parse_rope(j["rope_scaling"], "rope_scaling", src, c.rope);
  if (j.contains("rope_parameters")) parse_rope(j["rope_parameters"], "rope_parameters", src, c.rope);
  if (j.contains("bos_token_id") && j["bos_token_id"].is_number_integer())
    c.bos_token_id = j["bos_token_id"].get<int32_t>();
  if (j.contains("eos_token_id")) c.eos_token_ids = int_or_list(j["eos_token_id"], "eos_token_id", src);
  validate_config(c, src);
  return c;
}

ModelConfig config_from_gguf(const GgufFile& g) {
  const std::string& src = g.path();
  const auto arch = g.get_string("general.architecture");
  if (!arch) fail("{}: key 'general.architecture' is missing", src);
  ModelConfig c;
  if (*arch == "llama") {
    c.arch = ModelArch::Llama;
    c.arch_name = "LlamaForCausalLM";
  } else if (*arch == "qwen2") {
    c.arch = ModelArch::Qwen2;
    c.arch_name = "Qwen2ForCausalLM";
    c.qkv_bias = true;
  } else {
    fail("{}: key 'general.architecture': unsupported architecture '{}' (supported: llama, qwen2)",
         src, *arch);
  }
  auto need_int = [&](const std::string& key) {
    const auto v = g.get_int(*arch + "." + key);
    if (!v) fail("{}: key '{}.{}' is missing", src, *arch, key);
    return *v;
  };
  c.hidden_size = need_int("embedding_length");
  c.intermediate_size = need_int("feed_forward_length");
  c.num_layers = need_int("block_count");
  c.num_heads = need_int("attention.head_count");
  c.num_kv_heads = g.get_int(*arch + ".attention.head_count_kv").value_or(c.num_heads);
  c.head_dim = g.get_int(*arch + ".attention.key_length").value_or(c.hidden_size / c.num_heads);
  c.max_position_embeddings = need_int("context_length");
  c.rms_norm_eps = g.get_float(*arch + ".attention.layer_norm_rms_epsilon").value_or(1e-5);
  c.rope.theta = g.get_float(*arch + ".rope.freq_base").value_or(10000);
  if (const auto type = g.get_string(*arch + ".rope.scaling.type"); type && *type != "none") {
    if (*type == "linear") {
      c.rope.type = "linear";
      c.rope.factor = g.get_float(*arch + ".rope.scaling.factor").value_or(1);
    } else {
      fail("{}: key '{}.rope.scaling.type': '{}' is not supported", src, *arch, *type);
    }
  }
  if (const auto* tokens = g.get_string_array("tokenizer.ggml.tokens")) {
    c.vocab_size = static_cast<int64_t>(tokens->size());
  } else if (const auto v = g.get_int(*arch + ".vocab_size")) {
    c.vocab_size = *v;
  } else if (const GgufTensor* t = g.find_tensor("token_embd.weight"); t && t->dims.size() == 2) {
    c.vocab_size = static_cast<int64_t>(t->dims[1]);
  } else {
    fail("{}: key 'tokenizer.ggml.tokens' is missing (cannot tell the vocabulary size)", src);
  }
  c.tie_word_embeddings = g.find_tensor("output.weight") == nullptr;
  if (const auto b = g.get_int("tokenizer.ggml.bos_token_id")) c.bos_token_id = static_cast<int32_t>(*b);
  if (const auto e = g.get_int("tokenizer.ggml.eos_token_id")) c.eos_token_ids = {static_cast<int32_t>(*e)};
  if (const auto e = g.get_int("tokenizer.ggml.eot_token_id");
      e && std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), *e) == c.eos_token_ids.end())
    c.eos_token_ids.push_back(static_cast<int32_t>(*e));
  validate_config(c, src);
  return c;
}

std::vector<std::string> preset_names() {
  return {"llama3-8b", "llama3-70b", "llama2-7b", "qwen2-7b", "smollm2-135m"};
}

ModelConfig preset_config(const std::string& name) {
  ModelConfig c;
  auto llama3 = [&](int64_t hidden, int64_t inter, int64_t layers, int64_t heads) {
    c.vocab_size = 128256;
    c.hidden_size = hidden;
    c.intermediate_size = inter;
    c.num_layers = layers;
    c.num_heads = heads;
    c.num_kv_heads = 8;
    c.head_dim = 128;
    c.max_position_embeddings = 8192;
    c.rms_norm_eps = 1e-5;
    c.rope.theta = 500000;
    c.bos_token_id = 128000;
    c.eos_token_ids = {128001, 128009};
  };
  if (name == "llama3-8b") {
    llama3(4096, 14336, 32, 32);
  } else if (name == "llama3-70b") {
    llama3(8192, 28672, 80, 64);
  } else if (name == "llama2-7b") {
    c.vocab_size = 32000;
    c.hidden_size = 4096;
    c.intermediate_size = 11008;
    c.num_layers = 32;
    c.num_heads = c.num_kv_heads = 32;
    c.head_dim = 128;
    c.max_position_embeddings = 4096;
    c.rms_norm_eps = 1e-5;
    c.rope.theta = 10000;
    c.bos_token_id = 1;
    c.eos_token_ids = {2};
  } else if (name == "qwen2-7b") {
    c.arch = ModelArch::Qwen2;
    c.arch_name = "Qwen2ForCausalLM";
    c.qkv_bias = true;
    c.vocab_size = 152064;
    c.hidden_size = 3584;
    c.intermediate_size = 18944;
    c.num_layers = 28;
    c.num_heads = 28;
    c.num_kv_heads = 4;
    c.head_dim = 128;
    c.max_position_embeddings = 32768;
    c.rms_norm_eps = 1e-6;
    c.rope.theta = 1e6;
    c.eos_token_ids = {151643, 151645};
  } else if (name == "smollm2-135m") {
    c.vocab_size = 49152;
    c.hidden_size = 576;
    c.intermediate_size = 1536;
    c.num_layers = 30;
    c.num_heads = 9;
    c.num_kv_heads = 3;
    c.head_dim = 64;
    c.max_position_embeddings = 8192;
    c.rms_norm_eps = 1e-5;
    c.rope.theta = 100000;
    c.tie_word_embeddings = true;
    c.bos_token_id = 1;
    c.eos_token_ids = {2};
  } else {
    std::string names;
    for (const auto& n : preset_names()) names += (names.empty() ? "" : ", ") + n;
    fail("dummy:{}: unknown preset (presets: {}; or give a config.json path)", name, names);
  }
  validate_config(c, "dummy:" + name);
  return c;
}

void validate_config(const ModelConfig& c, const std::string& src) {
  auto positive = [&](int64_t v, const char* key) {
    if (v <= 0) fail("{}: key '{}' must be positive, got {}", src, key, v);
  };
  positive(c.vocab_size, "vocab_size");
  positive(c.hidden_size, "hidden_size");
  positive(c.intermediate_size, "intermediate_size");
  positive(c.num_layers, "num_hidden_layers");
  positive(c.num_heads, "num_attention_heads");
  positive(c.num_kv_heads, "num_key_value_heads");
  positive(c.head_dim, "head_dim");
  positive(c.max_position_embeddings, "max_position_embeddings");
  if (c.num_heads % c.num_kv_heads != 0)
    fail("{}: key 'num_key_value_heads': {} query heads are not a multiple of {} KV heads", src,
         c.num_heads, c.num_kv_heads);
  if (c.head_dim % 2 != 0) fail("{}: key 'head_dim': {} is odd (RoPE needs pairs)", src, c.head_dim);
  if (!(c.rms_norm_eps > 0)) fail("{}: key 'rms_norm_eps' must be positive", src);
  if (!(c.rope.theta > 0)) fail("{}: key 'rope_theta' must be positive", src);
  if (!(c.rope.factor > 0)) fail("{}: rope scaling factor must be positive", src);
  if (c.rope.type == "llama3" && (c.rope.original_max_position_embeddings <= 0 ||
                                  !(c.rope.high_freq_factor > c.rope.low_freq_factor)))
    fail("{}: llama3 rope scaling needs original_max_position_embeddings > 0 and "
         "high_freq_factor > low_freq_factor", src);
}

std::vector<float> rope_inv_freq(const RopeConfig& r, int64_t head_dim) {
  std::vector<float> f(static_cast<size_t>(head_dim / 2));
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    // transformers: 1 / base ** (arange(0, dim, 2).float() / dim), in float32.
    const float expo = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    f[i] = 1.0f / std::pow(static_cast<float>(r.theta), expo);
  }
  if (r.type == "linear") {
    for (auto& x : f) x = static_cast<float>(x / r.factor);
  } else if (r.type == "llama3") {
    // Llama-3.1: long wavelengths are divided by `factor`, short ones kept, and the band in
    // between interpolated smoothly (transformers' _compute_llama3_parameters).
    const double old_ctx = static_cast<double>(r.original_max_position_embeddings);
    const double low_wavelen = old_ctx / r.low_freq_factor;
    const double high_wavelen = old_ctx / r.high_freq_factor;
    for (auto& x : f) {
      const double wavelen = 2 * std::numbers::pi / x;
      if (wavelen > low_wavelen) {
        x = static_cast<float>(x / r.factor);
      } else if (wavelen >= high_wavelen) {
        const double smooth = (old_ctx / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
        x = static_cast<float>((1 - smooth) * x / r.factor + smooth * x);
      }
    }
  }
  return f;
}

}  // namespace nf
