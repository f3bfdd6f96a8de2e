// Test-only writers for the model files the loader reads: GGUF (with ggml's reference Q8_0 /
// Q4_0 / Q4_1 quantizers and llama.cpp's Q/K row permutation), safetensors, and whole tiny
// checkpoints built from a config.json, so tests can craft good and broken inputs on disk.
#pragma once

#include <nanoflow/engine.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "common/half.h"
#include "model/gguf.h"
#include "model/model_config.h"
#include "model/model_loader.h"
#include "model/weight_source.h"

namespace nf::testing {

namespace fs = std::filesystem;

// A fresh empty directory under the system temp dir.
inline fs::path fresh_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() / ("nf_model_test_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

inline void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_bytes(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(f)), {});
}

// ---- ggml reference quantizers (ggml-quants.c quantize_row_*_ref), 32 values per block ------

inline void put_u16(std::vector<uint8_t>& out, uint16_t v) {
  out.push_back(static_cast<uint8_t>(v & 0xff));
  out.push_back(static_cast<uint8_t>(v >> 8));
}

inline std::vector<uint8_t> quantize(GgmlType t, const std::vector<float>& x) {
  std::vector<uint8_t> out;
  if (t == GgmlType::F32) {
    out.resize(x.size() * 4);
    std::memcpy(out.data(), x.data(), out.size());
    return out;
  }
  if (t == GgmlType::F16 || t == GgmlType::BF16) {
    for (float v : x) put_u16(out, t == GgmlType::F16 ? float_to_fp16(v) : float_to_bf16(v));
    return out;
  }
  if (!ggml_can_dequantize(t)) {
    // Another type: zero-filled blocks of the right size (enough for "unsupported" tests).
    const auto [block, block_bytes] = ggml_block_layout(t);
    return std::vector<uint8_t>(x.size() / block * block_bytes);
  }
  for (size_t b = 0; b + 32 <= x.size(); b += 32) {
    const float* v = x.data() + b;
    if (t == GgmlType::Q8_0) {
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(v[j]));
      const float d = amax / 127, id = d ? 1 / d : 0;
      put_u16(out, float_to_fp16(d));
      for (int j = 0; j < 32; ++j)
        out.push_back(static_cast<uint8_t>(static_cast<int8_t>(std::roundf(v[j] * id))));
    } else if (t == GgmlType::Q4_0) {
      float amax = 0, max = 0;
      for (int j = 0; j < 32; ++j)
        if (std::fabs(v[j]) > amax) amax = std::fabs(v[j]), max = v[j];
      const float d = max / -8, id = d ? 1 / d : 0;
      put_u16(out, float_to_fp16(d));
      for (int j = 0; j < 16; ++j) {
        const int q0 = std::min(15, static_cast<int>(static_cast<int8_t>(v[j] * id + 8.5f)));
        const int q1 = std::min(15, static_cast<int>(static_cast<int8_t>(v[j + 16] * id + 8.5f)));
        out.push_back(static_cast<uint8_t>(q0 | (q1 << 4)));
      }
    } else if (t == GgmlType::Q4_1) {
      float lo = v[0], hi = v[0];
      for (int j = 0; j < 32; ++j) lo = std::min(lo, v[j]), hi = std::max(hi, v[j]);
      const float d = (hi - lo) / 15, id = d ? 1 / d : 0;
      put_u16(out, float_to_fp16(d));
      put_u16(out, float_to_fp16(lo));
      for (int j = 0; j < 16; ++j) {
        const int q0 = std::min(15, static_cast<int>(static_cast<int8_t>((v[j] - lo) * id + 0.5f)));
        const int q1 =
            std::min(15, static_cast<int>(static_cast<int8_t>((v[j + 16] - lo) * id + 0.5f)));
        out.push_back(static_cast<uint8_t>(q0 | (q1 << 4)));
      }
    }
  }
  return out;
}

// llama.cpp's convert_hf_to_gguf.py permute(): w.reshape(n_head, 2, hd/2, in).swapaxes(1, 2).
// `w` is the Hugging Face [rows, cols] row-major matrix.
inline std::vector<float> llama_cpp_permute(const std::vector<float>& w, int64_t heads,
                                            int64_t cols) {
  const int64_t rows = static_cast<int64_t>(w.size()) / cols, hd = rows / heads, half = hd / 2;
  std::vector<float> out(w.size());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t i = 0; i < half; ++i)
        std::copy_n(&w[(h * hd + j * half + i) * cols], cols, &out[(h * hd + 2 * i + j) * cols]);
  return out;
}

// ---- GGUF v3 writer -------------------------------------------------------------------------

class GgufWriter {
 public:
  void add_string(const std::string& key, const std::string& v) {
    kv(key, GgufValueType::String);
    str(meta_, v);
  }
  void add_u32(const std::string& key, uint32_t v) {
    kv(key, GgufValueType::U32);
    pod(meta_, v);
  }
  void add_f32(const std::string& key, float v) {
    kv(key, GgufValueType::F32);
    pod(meta_, v);
  }
  void add_string_array(const std::string& key, const std::vector<std::string>& v) {
    kv(key, GgufValueType::Array);
    pod(meta_, static_cast<uint32_t>(GgufValueType::String));
    pod(meta_, static_cast<uint64_t>(v.size()));
    for (const auto& s : v) str(meta_, s);
  }
  void add_f32_array(const std::string& key, const std::vector<float>& v) {
    kv(key, GgufValueType::Array);
    pod(meta_, static_cast<uint32_t>(GgufValueType::F32));
    pod(meta_, static_cast<uint64_t>(v.size()));
    for (float x : v) pod(meta_, x);
  }
  // `dims` in ggml order (dims[0] = row length); `data` already encoded in `type`.
  void add_tensor(const std::string& name, std::vector<uint64_t> dims, GgmlType type,
                  std::vector<uint8_t> data) {
    tensors_.push_back({name, std::move(dims), type, std::move(data)});
  }
  // `hf_shape` in Hugging Face order; values quantized to `type`.
  void add_tensor_f32(const std::string& name, const std::vector<int64_t>& hf_shape,
                      const std::vector<float>& values, GgmlType type = GgmlType::F32) {
    add_tensor(name, std::vector<uint64_t>(hf_shape.rbegin(), hf_shape.rend()), type,
               quantize(type, values));
  }

  std::string bytes(const char* magic = "GGUF") const {
    std::string out(magic, 4);
    pod(out, uint32_t{3});
    pod(out, static_cast<uint64_t>(tensors_.size()));
    pod(out, n_kv_);
    out += meta_;
    uint64_t offset = 0;
    std::vector<uint64_t> offsets;
    for (const auto& t : tensors_) {
      str(out, t.name);
      pod(out, static_cast<uint32_t>(t.dims.size()));
      for (uint64_t d : t.dims) pod(out, d);
      pod(out, static_cast<uint32_t>(t.type));
      pod(out, offset);
      offsets.push_back(offset);
      offset = (offset + t.data.size() + 31) / 32 * 32;
    }
    out.resize((out.size() + 31) / 32 * 32, '\0');
    const size_t base = out.size();
    for (size_t i = 0; i < tensors_.size(); ++i) {
      out.resize(base + offsets[i], '\0');
      out.append(reinterpret_cast<const char*>(tensors_[i].data.data()), tensors_[i].data.size());
    }
    return out;
  }
  void write(const fs::path& p) const { write_bytes(p, bytes()); }

 private:
  struct Tensor {
    std::string name;
    std::vector<uint64_t> dims;
    GgmlType type;
    std::vector<uint8_t> data;
  };
  template <typename T>
  static void pod(std::string& out, T v) {
    out.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  static void str(std::string& out, const std::string& s) {
    pod(out, static_cast<uint64_t>(s.size()));
    out += s;
  }
  void kv(const std::string& key, GgufValueType t) {
    str(meta_, key);
    pod(meta_, static_cast<uint32_t>(t));
    ++n_kv_;
  }

  std::string meta_;
  uint64_t n_kv_ = 0;
  std::vector<Tensor> tensors_;
};

// ---- safetensors writer ---------------------------------------------------------------------

struct StTensor {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
  std::string dtype = "F32";  // F32 | F16 | BF16 | anything else: zero bytes of width 4
};

inline std::string safetensors_bytes(const std::vector<StTensor>& tensors) {
  nlohmann::json h = nlohmann::json::object();
  h["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const auto& t : tensors) {
    const size_t begin = data.size();
    for (float v : t.values) {
      if (t.dtype == "F16" || t.dtype == "BF16") {
        const uint16_t b = t.dtype == "F16" ? float_to_fp16(v) : float_to_bf16(v);
        data.append(reinterpret_cast<const char*>(&b), 2);
      } else {
        data.append(reinterpret_cast<const char*>(&v), 4);
      }
    }
    h[t.name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {begin, data.size()}}};
  }
  const std::string header = h.dump();
  const uint64_t n = header.size();
  return std::string(reinterpret_cast<const char*>(&n), 8) + header + data;
}

// ---- whole tiny checkpoints ------------------------------------------------------------------

// A tiny Llama config.json: vocab 64, hidden 32, 2 layers, 4 heads / 2 KV heads of 8.
inline nlohmann::json tiny_llama_config() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"vocab_size", 64},
          {"hidden_size", 32},
          {"intermediate_size", 48},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4},
          {"num_key_value_heads", 2},
          {"max_position_embeddings", 128},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 10000.0},
          {"tie_word_embeddings", false},
          {"bos_token_id", 1},
          {"eos_token_id", 2}};
}

// Deterministic values for every tensor the config needs (Hugging Face layout).
inline std::vector<StTensor> tiny_tensors(const ModelConfig& c, uint32_t seed = 1) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<StTensor> out;
  for (const TensorSpec& s : expected_tensors(c)) {
    StTensor t{s.name, s.shape, std::vector<float>(static_cast<size_t>(tensor_numel(s.shape)))};
    for (auto& v : t.values) v = u(rng);
    out.push_back(std::move(t));
  }
  return out;
}

// A GGUF file holding `tensors` (Hugging Face names and layout) the way llama.cpp's converter
// writes them: GGUF names, reversed dims, Q/K rows permuted for llama. num_tokens > 0: a
// SentencePiece ("llama") tokenizer of that many tokens, fewer than the embedding's rows when
// the embedding is padded; else a token list without a tokenizer model.
inline GgufWriter tiny_gguf(const ModelConfig& c, const std::vector<StTensor>& tensors,
                            GgmlType type = GgmlType::F32, int64_t num_tokens = 0) {
  const std::string arch = c.arch == ModelArch::Llama   ? "llama"
                           : c.arch == ModelArch::Qwen3 ? "qwen3"
                                                        : "qwen2";
  GgufWriter w;
  w.add_string("general.architecture", arch);
  w.add_u32(arch + ".context_length", static_cast<uint32_t>(c.max_position_embeddings));
  w.add_u32(arch + ".embedding_length", static_cast<uint32_t>(c.hidden_size));
  w.add_u32(arch + ".feed_forward_length", static_cast<uint32_t>(c.intermediate_size));
  w.add_u32(arch + ".block_count", static_cast<uint32_t>(c.num_layers));
  w.add_u32(arch + ".attention.head_count", static_cast<uint32_t>(c.num_heads));
  w.add_u32(arch + ".attention.head_count_kv", static_cast<uint32_t>(c.num_kv_heads));
  w.add_f32(arch + ".attention.layer_norm_rms_epsilon", static_cast<float>(c.rms_norm_eps));
  w.add_f32(arch + ".rope.freq_base", static_cast<float>(c.rope.theta));
  w.add_u32(arch + ".rope.dimension_count", static_cast<uint32_t>(c.head_dim));
  std::vector<std::string> vocab;
  for (int64_t i = 0; i < (num_tokens > 0 ? num_tokens : c.vocab_size); ++i)
    vocab.push_back("t" + std::to_string(i));
  w.add_string_array("tokenizer.ggml.tokens", vocab);
  if (num_tokens > 0) {
    w.add_string("tokenizer.ggml.model", "llama");
    w.add_f32_array("tokenizer.ggml.scores", std::vector<float>(vocab.size(), 0.0f));
  }
  w.add_u32("tokenizer.ggml.bos_token_id", 1);
  w.add_u32("tokenizer.ggml.eos_token_id", 2);
  auto gname = [](std::string n) {
    static const std::pair<const char*, const char*> kMap[] = {
        {"model.embed_tokens.weight", "token_embd.weight"},
        {"model.norm.weight", "output_norm.weight"},
        {"lm_head.weight", "output.weight"},
        {"model.layers.", "blk."},
        {"input_layernorm", "attn_norm"},
        {"post_attention_layernorm", "ffn_norm"},
        {"self_attn.q_proj", "attn_q"},
        {"self_attn.k_proj", "attn_k"},
        {"self_attn.v_proj", "attn_v"},
        {"self_attn.o_proj", "attn_output"},
        {"self_attn.q_norm", "attn_q_norm"},
        {"self_attn.k_norm", "attn_k_norm"},
        {"mlp.gate_proj", "ffn_gate"},
        {"mlp.up_proj", "ffn_up"},
        {"mlp.down_proj", "ffn_down"}};
    for (const auto& [from, to] : kMap)
      if (auto p = n.find(from); p != std::string::npos) n.replace(p, std::strlen(from), to);
    return n;
  };
  for (const StTensor& t : tensors) {
    std::vector<float> v = t.values;
    if (c.arch == ModelArch::Llama && t.name.ends_with("q_proj.weight"))
      v = llama_cpp_permute(v, c.num_heads, t.shape[1]);
    if (c.arch == ModelArch::Llama && t.name.ends_with("k_proj.weight"))
      v = llama_cpp_permute(v, c.num_kv_heads, t.shape[1]);
    // ggml keeps 1-D tensors (norms, biases) in F32, as llama.cpp's converter does.
    w.add_tensor_f32(gname(t.name), t.shape, v, t.shape.size() == 1 ? GgmlType::F32 : type);
  }
  return w;
}

// A copy of the Hugging Face model in `src` (tokenizer files included) with its embedding and
// LM head padded by `extra` rows past the tokenizer, as Qwen2 checkpoints are (152,064 rows
// for 151,665 tokens). The padded LM-head rows are +-100 along the first hidden dimensions, so
// that, were they not masked, they would win nearly every sampling step.
inline fs::path padded_vocab_model(const fs::path& src, const std::string& name, int64_t extra) {
  const fs::path dir = fresh_dir(name);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json"})
    if (fs::exists(src / f)) fs::copy_file(src / f, dir / f);
  nlohmann::json cfg = nlohmann::json::parse(read_bytes(src / "config.json"));
  const int64_t V = cfg["vocab_size"].get<int64_t>(), P = V + extra;
  cfg["vocab_size"] = P;
  std::ofstream(dir / "config.json") << cfg.dump();
  auto m = load_model(src.string()).take();
  const ModelConfig padded = parse_hf_config(cfg, "config.json");
  std::vector<StTensor> tensors;
  for (const TensorSpec& s : expected_tensors(padded)) {
    StTensor t{s.name, s.shape, std::vector<float>(static_cast<size_t>(tensor_numel(s.shape)))};
    const bool vocab = s.name == "model.embed_tokens.weight" || s.name == "lm_head.weight";
    const int64_t H = vocab ? s.shape[1] : 0;
    std::span<float> real(t.values.data(), vocab ? static_cast<size_t>(V * H) : t.values.size());
    m.weights->read_f32(s.name, real);
    if (s.name == "lm_head.weight")
      for (int64_t r = V; r < P; ++r) t.values[r * H + (r - V) / 2] = (r % 2 ? -100.0f : 100.0f);
    tensors.push_back(std::move(t));
  }
  write_bytes(dir / "model.safetensors", safetensors_bytes(tensors));
  return dir;
}

// Requests for padded_vocab_model: greedy and sampled (top-k past the vocabulary, top-p
// near 1) rows with logprobs, so that every way a padded id could leak is taken.
inline std::vector<nanoflow::GenerateRequest> padded_vocab_requests(int max_tokens) {
  std::vector<nanoflow::GenerateRequest> reqs;
  for (int i = 0; i < 6; ++i) {
    nanoflow::GenerateRequest r;
    r.prompt = {1, static_cast<int32_t>(20 + 7 * i), 30, 40};
    r.params.max_tokens = max_tokens;
    r.params.ignore_eos = true;
    r.params.logprobs = 5;
    r.params.temperature = i % 2 ? 1.0f : 0.0f;
    if (i == 3) r.params.top_k = 600;
    if (i == 5) r.params.top_p = 0.999f;
    r.params.seed = 7 + i;
    reqs.push_back(r);
  }
  return reqs;
}

}  // namespace nf::testing
