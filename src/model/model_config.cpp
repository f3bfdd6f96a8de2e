#include "model/model_config.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <numbers>

#include "common/status.h"
#include "model/gguf.h"

namespace nf {
namespace {

using nlohmann::json;

// The value of `key` in object `o`, or nullptr when it is missing or null.
const json* find_key(const json& o, const std::string& key) {
  auto it = o.find(key);
  return it == o.end() || it->is_null() ? nullptr : &*it;
}

// Typed accessors: `name` is the key as messages show it (e.g. "rope_scaling.factor").
int64_t int_at(const json& v, const std::string& name, const std::string& src) {
  if (v.is_number_integer()) return v.get<int64_t>();
  if (v.is_number_float() && std::nearbyint(v.get<double>()) == v.get<double>())
    return static_cast<int64_t>(v.get<double>());
  fail("{}: key '{}' must be an integer, got {}", src, name, v.dump());
}

int64_t need_int(const json& o, const std::string& key, const std::string& src) {
  const json* v = find_key(o, key);
  if (!v) fail("{}: key '{}' is missing", src, key);
  return int_at(*v, key, src);
}

int64_t opt_int(const json& o, const std::string& key, const std::string& src, int64_t dflt) {
  const json* v = find_key(o, key);
  return v ? int_at(*v, key, src) : dflt;
}

double opt_num(const json& o, const std::string& key, const std::string& src, double dflt,
               const std::string& prefix = "") {
  const json* v = find_key(o, key);
  if (!v) return dflt;
  if (!v->is_number()) fail("{}: key '{}{}' must be a number, got {}", src, prefix, key, v->dump());
  return v->get<double>();
}

bool opt_bool(const json& o, const std::string& key, const std::string& src, bool dflt) {
  const json* v = find_key(o, key);
  if (!v) return dflt;
  if (!v->is_boolean()) fail("{}: key '{}' must be true or false, got {}", src, key, v->dump());
  return v->get<bool>();
}

std::string opt_str(const json& o, const std::string& key, const std::string& src,
                    const std::string& dflt, const std::string& prefix = "") {
  const json* v = find_key(o, key);
  if (!v) return dflt;
  if (!v->is_string()) fail("{}: key '{}{}' must be a string, got {}", src, prefix, key, v->dump());
  return v->get<std::string>();
}

std::vector<int32_t> int_or_list(const json& v, const std::string& key, const std::string& src) {
  if (v.is_null()) return {};
  if (!v.is_array()) return {static_cast<int32_t>(int_at(v, key, src))};
  std::vector<int32_t> out;
  for (const auto& e : v) out.push_back(static_cast<int32_t>(int_at(e, key, src)));
  return out;
}

// Reads a rope_scaling (transformers 4) or rope_parameters (transformers 5) object into `r`.
void parse_rope(const json& o, const std::string& key, const std::string& src, RopeConfig& r) {
  if (o.is_null()) return;
  if (!o.is_object()) fail("{}: key '{}' must be an object, got {}", src, key, o.dump());
  // transformers 5 keys the parameters by layer type for models that mix attention kinds.
  if (const json* full = find_key(o, "full_attention"); full && full->is_object())
    return parse_rope(*full, key + ".full_attention", src, r);
  const std::string p = key + ".";
  const std::string type_key = o.contains("rope_type") ? "rope_type" : "type";
  const std::string type = opt_str(o, type_key, src, "default", p);
  r.theta = opt_num(o, "rope_theta", src, r.theta, p);
  if (type == "default") {
    r.type = "default";
  } else if (type == "linear") {
    r.type = "linear";
    r.factor = opt_num(o, "factor", src, 1, p);
  } else if (type == "llama3") {
    r.type = "llama3";
    r.factor = opt_num(o, "factor", src, 8, p);
    r.low_freq_factor = opt_num(o, "low_freq_factor", src, 1, p);
    r.high_freq_factor = opt_num(o, "high_freq_factor", src, 4, p);
    const json* orig = find_key(o, "original_max_position_embeddings");
    if (!orig) fail("{}: key '{}original_max_position_embeddings' is missing", src, p);
    r.original_max_position_embeddings = int_at(*orig, p + "original_max_position_embeddings", src);
  } else {
    fail("{}: key '{}{}': rope type '{}' is not supported (supported: default, linear, llama3)",
         src, p, type_key, type);
  }
}

std::string gguf_file_type(int64_t ftype) {
  switch (ftype) {
    case 0:
      return "F32";
    case 1:
      return "F16";
    case 2:
      return "Q4_0";
    case 3:
      return "Q4_1";
    case 7:
      return "Q8_0";
    case 32:
      return "BF16";
    default:
      return "ftype " + std::to_string(ftype);
  }
}

// GGUF RoPE settings: <arch>.rope.freq_base, .rope.scaling.{type,factor} (or the older
// .rope.scale_linear), and llama.cpp's rope_freqs.weight tensor for Llama-3.1 scaling.
void gguf_rope(const GgufFile& g, const std::string& arch, ModelConfig& c) {
  const std::string& src = g.path();
  c.rope.theta = g.get_float(arch + ".rope.freq_base").value_or(10000);
  if (const auto dims = g.get_int(arch + ".rope.dimension_count"); dims && *dims != c.head_dim)
    fail(
        "{}: key '{}.rope.dimension_count': partial rotary embeddings ({} of {} dimensions) are "
        "not supported",
        src, arch, *dims, c.head_dim);
  if (const auto s = g.get_float(arch + ".rope.scale_linear"); s && *s != 1.0) {
    c.rope.type = "linear";
    c.rope.factor = *s;
  }
  if (const auto type = g.get_string(arch + ".rope.scaling.type"); type && *type != "none") {
    if (*type != "linear")
      fail(
          "{}: key '{}.rope.scaling.type': rope scaling '{}' is not supported (supported: none, "
          "linear)",
          src, arch, *type);
    c.rope.type = "linear";
    c.rope.factor = g.get_float(arch + ".rope.scaling.factor").value_or(1);
  }
  if (const GgufTensor* t = g.find_tensor("rope_freqs.weight")) {
    if (!ggml_can_dequantize(t->type))
      fail("{}: tensor 'rope_freqs.weight': unsupported quantization {}", src,
           ggml_type_name(t->type));
    if (t->dims.size() != 1 || static_cast<int64_t>(t->dims[0]) != c.head_dim / 2)
      fail("{}: tensor 'rope_freqs.weight': expected {} values, one per rotary frequency", src,
           c.head_dim / 2);
    c.rope.type = "freq_factors";
    c.rope.freq_factors.resize(static_cast<size_t>(t->dims[0]));
    ggml_dequantize(t->type, t->data, c.rope.freq_factors.data(), c.rope.freq_factors.size());
  }
}

}  // namespace

ModelConfig parse_hf_config(const json& j, const std::string& src) {
  if (!j.is_object()) fail("{}: not a JSON object", src);
  ModelConfig c;
  const json* archs = find_key(j, "architectures");
  if (!archs) fail("{}: key 'architectures' is missing", src);
  if (!archs->is_array() || archs->empty() || !(*archs)[0].is_string())
    fail("{}: key 'architectures' must be a non-empty list of strings, got {}", src, archs->dump());
  c.arch_name = (*archs)[0].get<std::string>();
  if (c.arch_name == "LlamaForCausalLM") {
    c.arch = ModelArch::Llama;
  } else if (c.arch_name == "Qwen2ForCausalLM") {
    c.arch = ModelArch::Qwen2;
    c.qkv_bias = true;
  } else if (c.arch_name == "Qwen3ForCausalLM") {
    // Qwen3 (dense): per-head q/k RMSNorm, no QKV bias unless attention_bias, head_dim given
    // apart from hidden_size / heads.
    c.arch = ModelArch::Qwen3;
    c.qk_norm = true;
    c.qkv_bias = opt_bool(j, "attention_bias", src, false);
  } else {
    fail(
        "{}: key 'architectures': unsupported architecture '{}' (supported: LlamaForCausalLM, "
        "Qwen2ForCausalLM, Qwen3ForCausalLM)",
        src, c.arch_name);
  }
  c.vocab_size = need_int(j, "vocab_size", src);
  c.hidden_size = need_int(j, "hidden_size", src);
  c.intermediate_size = need_int(j, "intermediate_size", src);
  c.num_layers = need_int(j, "num_hidden_layers", src);
  c.num_heads = need_int(j, "num_attention_heads", src);
  c.num_kv_heads = opt_int(j, "num_key_value_heads", src, c.num_heads);
  if (find_key(j, "head_dim")) {
    c.head_dim = need_int(j, "head_dim", src);
  } else {
    if (c.num_heads <= 0 || c.hidden_size % c.num_heads != 0)
      fail(
          "{}: key 'head_dim' is missing and hidden_size {} is not a multiple of "
          "num_attention_heads {}",
          src, c.hidden_size, c.num_heads);
    c.head_dim = c.hidden_size / c.num_heads;
  }
  c.max_position_embeddings = opt_int(j, "max_position_embeddings", src, 4096);
  c.rms_norm_eps = opt_num(j, "rms_norm_eps", src, 1e-6);
  c.tie_word_embeddings = opt_bool(j, "tie_word_embeddings", src, false);
  if (const std::string act = opt_str(j, "hidden_act", src, "silu"); act != "silu")
    fail("{}: key 'hidden_act': activation '{}' is not supported (supported: silu)", src, act);
  if (opt_bool(j, "mlp_bias", src, false))
    fail("{}: key 'mlp_bias': MLP biases are not supported", src);
  if (c.arch == ModelArch::Llama && opt_bool(j, "attention_bias", src, false))
    fail("{}: key 'attention_bias': attention biases are not supported for LlamaForCausalLM", src);
  if (c.arch != ModelArch::Llama && opt_bool(j, "use_sliding_window", src, false))
    fail("{}: key 'use_sliding_window': sliding-window attention is not supported", src);
  // transformers 4: rope_theta + rope_scaling; transformers 5: rope_parameters (with rope_theta).
  c.rope.theta = opt_num(j, "rope_theta", src, 10000);
  if (const json* s = find_key(j, "rope_scaling")) parse_rope(*s, "rope_scaling", src, c.rope);
  if (const json* s = find_key(j, "rope_parameters"))
    parse_rope(*s, "rope_parameters", src, c.rope);
  if (const json* b = find_key(j, "bos_token_id"))
    c.bos_token_id = static_cast<int32_t>(int_at(*b, "bos_token_id", src));
  if (const json* e = find_key(j, "eos_token_id"))
    c.eos_token_ids = int_or_list(*e, "eos_token_id", src);
  c.dtype = opt_str(j, "torch_dtype", src, "");
  c.dtype = opt_str(j, "dtype", src, c.dtype);
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
  } else if (*arch == "qwen3") {
    c.arch = ModelArch::Qwen3;
    c.arch_name = "Qwen3ForCausalLM";
    c.qk_norm = true;
    c.qkv_bias = g.find_tensor("blk.0.attn_q.bias") != nullptr;
  } else {
    fail(
        "{}: key 'general.architecture': unsupported architecture '{}' (supported: llama, qwen2, "
        "qwen3)",
        src, *arch);
  }
  auto need = [&](const std::string& key) {
    const auto v = g.get_int(*arch + "." + key);
    if (!v) fail("{}: key '{}.{}' is missing", src, *arch, key);
    return *v;
  };
  c.hidden_size = need("embedding_length");
  c.intermediate_size = need("feed_forward_length");
  c.num_layers = need("block_count");
  c.num_heads = need("attention.head_count");
  c.num_kv_heads = g.get_int(*arch + ".attention.head_count_kv").value_or(c.num_heads);
  c.max_position_embeddings = need("context_length");
  if (c.num_heads <= 0) fail("{}: key '{}.attention.head_count' must be positive", src, *arch);
  c.head_dim =
      g.get_int(*arch + ".attention.key_length")
          .value_or(
              g.get_int(*arch + ".rope.dimension_count").value_or(c.hidden_size / c.num_heads));
  c.rms_norm_eps = g.get_float(*arch + ".attention.layer_norm_rms_epsilon").value_or(1e-5);
  gguf_rope(g, *arch, c);
  // The embedding's row count is the vocabulary the model computes logits over.
  if (const GgufTensor* t = g.find_tensor("token_embd.weight"); t && t->dims.size() == 2) {
    c.vocab_size = static_cast<int64_t>(t->dims[1]);
  } else if (const auto* tokens = g.get_string_array("tokenizer.ggml.tokens")) {
    c.vocab_size = static_cast<int64_t>(tokens->size());
  } else if (const auto v = g.get_int(*arch + ".vocab_size")) {
    c.vocab_size = *v;
  } else {
    fail("{}: tensor 'token_embd.weight' is missing (cannot tell the vocabulary size)", src);
  }
  c.tie_word_embeddings = g.find_tensor("output.weight") == nullptr;
  if (const auto b = g.get_int("tokenizer.ggml.bos_token_id"))
    c.bos_token_id = static_cast<int32_t>(*b);
  if (const auto e = g.get_int("tokenizer.ggml.eos_token_id"))
    c.eos_token_ids = {static_cast<int32_t>(*e)};
  if (const auto e = g.get_int("tokenizer.ggml.eot_token_id");
      e && std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), *e) == c.eos_token_ids.end())
    c.eos_token_ids.push_back(static_cast<int32_t>(*e));
  if (const auto ft = g.get_int("general.file_type")) c.dtype = gguf_file_type(*ft);
  validate_config(c, src);
  return c;
}

std::vector<std::string> preset_names() {
  return {"llama3-8b", "llama3-70b", "llama2-7b", "qwen2-7b", "qwen3-8b", "smollm2-135m"};
}

ModelConfig preset_config(const std::string& name) {
  ModelConfig c;
  c.dtype = "bfloat16";
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
    c.dtype = "float16";
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
  } else if (name == "qwen3-8b") {
    // Qwen/Qwen3-8B's config.json.
    c.arch = ModelArch::Qwen3;
    c.arch_name = "Qwen3ForCausalLM";
    c.qk_norm = true;
    c.vocab_size = 151936;
    c.hidden_size = 4096;
    c.intermediate_size = 12288;
    c.num_layers = 36;
    c.num_heads = 32;
    c.num_kv_heads = 8;
    c.head_dim = 128;
    c.max_position_embeddings = 40960;
    c.rms_norm_eps = 1e-6;
    c.rope.theta = 1e6;
    c.bos_token_id = 151643;
    c.eos_token_ids = {151645};
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
    fail("dummy:{}: unknown preset (presets: {}; or give the path of a config.json)", name, names);
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
  // Upper bounds far above any real model, so a corrupt file fails here instead of asking for
  // billions of tensors.
  auto at_most = [&](int64_t v, int64_t limit, const char* key) {
    if (v > limit) fail("{}: key '{}': {} is implausibly large (at most {})", src, key, v, limit);
  };
  at_most(c.hidden_size, int64_t{1} << 20, "hidden_size");
  at_most(c.intermediate_size, int64_t{1} << 22, "intermediate_size");
  at_most(c.num_layers, 4096, "num_hidden_layers");
  at_most(c.num_heads, 4096, "num_attention_heads");
  at_most(c.head_dim, 4096, "head_dim");
  at_most(c.vocab_size, INT32_MAX, "vocab_size");
  if (c.num_heads % c.num_kv_heads != 0)
    fail("{}: key 'num_key_value_heads': {} query heads are not a multiple of {} KV heads", src,
         c.num_heads, c.num_kv_heads);
  if (c.head_dim % 2 != 0)
    fail("{}: key 'head_dim': {} is odd (RoPE needs pairs)", src, c.head_dim);
  if (c.bos_token_id && (*c.bos_token_id < 0 || *c.bos_token_id >= c.vocab_size))
    fail("{}: key 'bos_token_id': {} is outside the vocabulary of {}", src, *c.bos_token_id,
         c.vocab_size);
  if (!(c.rms_norm_eps > 0)) fail("{}: key 'rms_norm_eps' must be positive", src);
  if (!(c.rope.theta > 0)) fail("{}: key 'rope_theta' must be positive", src);
  if (!(c.rope.factor > 0)) fail("{}: key 'factor' (rope scaling) must be positive", src);
  if (c.rope.type == "llama3" && c.rope.original_max_position_embeddings <= 0)
    fail("{}: key 'original_max_position_embeddings' (llama3 rope scaling) must be positive", src);
  if (c.rope.type == "llama3" && !(c.rope.high_freq_factor > c.rope.low_freq_factor))
    fail("{}: key 'high_freq_factor' (llama3 rope scaling) must exceed low_freq_factor", src);
  if (c.rope.type == "freq_factors") {
    if (static_cast<int64_t>(c.rope.freq_factors.size()) != c.head_dim / 2)
      fail("{}: rope frequency factors: {} values for head_dim {}", src, c.rope.freq_factors.size(),
           c.head_dim);
    for (float f : c.rope.freq_factors)
      if (!(f > 0) || !std::isfinite(f))
        fail("{}: rope frequency factor {} is not positive", src, f);
  }
}

// Design note: transformers computes the frequencies in float32 tensors
// (inv_freq = 1 / theta ** (arange(0, d, 2) / d)); the scaling below follows
// _compute_llama3_parameters step by step in float32 so the results agree to the last bit or so.
std::vector<float> rope_inv_freq(const RopeConfig& r, int64_t head_dim) {
  std::vector<float> f(static_cast<size_t>(head_dim / 2));
  for (int64_t i = 0; i < head_dim / 2; ++i) {
    const float expo = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    f[i] = 1.0f / std::pow(static_cast<float>(r.theta), expo);
  }
  if (r.type == "linear") {
    for (auto& x : f) x = x / static_cast<float>(r.factor);
  } else if (r.type == "llama3") {
    // Llama-3.1: long wavelengths are divided by `factor`, short ones kept, and the band in
    // between interpolated smoothly.
    const float factor = static_cast<float>(r.factor);
    const float old_ctx = static_cast<float>(r.original_max_position_embeddings);
    const double low_wavelen =
        static_cast<double>(r.original_max_position_embeddings) / r.low_freq_factor;
    const double high_wavelen =
        static_cast<double>(r.original_max_position_embeddings) / r.high_freq_factor;
    for (auto& x : f) {
      const float wavelen = static_cast<float>(2 * std::numbers::pi) / x;
      if (wavelen > low_wavelen) {
        x = x / factor;
      } else if (wavelen >= high_wavelen) {
        const float smooth = (old_ctx / wavelen - static_cast<float>(r.low_freq_factor)) /
                             static_cast<float>(r.high_freq_factor - r.low_freq_factor);
        x = (1 - smooth) * x / factor + smooth * x;
      }
    }
  } else if (r.type == "freq_factors") {
    NF_CHECK(r.freq_factors.size() == f.size(), "{} rope factors for {} frequencies",
             r.freq_factors.size(), f.size());
    for (size_t i = 0; i < f.size(); ++i) f[i] /= r.freq_factors[i];
  }
  return f;
}

}  // namespace nf
