#include "model/weight_source.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <map>
#include <random>

#include "common/half.h"
#include "common/mapped_file.h"
#include "common/status.h"
#include "model/gguf.h"

namespace nf {

std::vector<TensorSpec> expected_tensors(const ModelConfig& c) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, hd = c.head_dim;
  const int64_t q = c.num_heads * hd, kv = c.num_kv_heads * hd;
  std::vector<TensorSpec> t;
  t.push_back({"model.embed_tokens.weight", {c.vocab_size, H}});
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    t.push_back({p + "input_layernorm.weight", {H}});
    t.push_back({p + "self_attn.q_proj.weight", {q, H}});
    t.push_back({p + "self_attn.k_proj.weight", {kv, H}});
    t.push_back({p + "self_attn.v_proj.weight", {kv, H}});
    if (c.qkv_bias) {
      t.push_back({p + "self_attn.q_proj.bias", {q}});
      t.push_back({p + "self_attn.k_proj.bias", {kv}});
      t.push_back({p + "self_attn.v_proj.bias", {kv}});
    }
    t.push_back({p + "self_attn.o_proj.weight", {H, q}});
    t.push_back({p + "post_attention_layernorm.weight", {H}});
    t.push_back({p + "mlp.gate_proj.weight", {I, H}});
    t.push_back({p + "mlp.up_proj.weight", {I, H}});
    t.push_back({p + "mlp.down_proj.weight", {H, I}});
  }
  t.push_back({"model.norm.weight", {H}});
  if (!c.tie_word_embeddings) t.push_back({"lm_head.weight", {c.vocab_size, H}});
  return t;
}

namespace {

int64_t numel_of(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---- safetensors -------------------------------------------------------------------------

class SafetensorsSource final : public WeightSource {
 public:
  SafetensorsSource(std::string dir, const std::vector<std::string>& files) : dir_(std::move(dir)) {
    for (const auto& f : files) open_file(f);
  }

  bool has(const std::string& n) const override { return tensors_.count(n) != 0; }
  std::vector<int64_t> shape(const std::string& n) const override { return get(n).shape; }
  std::string dtype_name(const std::string& n) const override { return get(n).dtype; }
  bool can_read(const std::string& n) const override {
    const auto& d = get(n).dtype;
    return d == "F32" || d == "F16" || d == "BF16";
  }
  void read_f32(const std::string& n, std::span<float> dst) const override {
    const Entry& e = get(n);
    const int64_t count = numel_of(e.shape);
    if (static_cast<int64_t>(dst.size()) != count)
      fail("{}: tensor '{}': has {} elements, expected {}", e.file->path(), n, count, dst.size());
    const uint8_t* p = e.data;
    if (e.dtype == "F32") {
      std::memcpy(dst.data(), p, count * 4);
    } else if (e.dtype == "F16") {
      for (int64_t i = 0; i < count; ++i) dst[i] = fp16_to_float(load16(p + 2 * i));
    } else if (e.dtype == "BF16") {
      for (int64_t i = 0; i < count; ++i) dst[i] = bf16_to_float(load16(p + 2 * i));
    } else {
      fail("{}: tensor '{}': dtype {} is not supported (supported: F32, F16, BF16)", e.file->path(),
           n, e.dtype);
    }
  }
  std::string describe() const override { return dir_; }

 private:
  struct Entry {
    const MappedFile* file;
    std::string dtype;
    std::vector<int64_t> shape;
    const uint8_t* data;
  };

  static uint16_t load16(const uint8_t* p) {
    uint16_t v;
    std::memcpy(&v, p, 2);
    return v;
  }

  const Entry& get(const std::string& n) const {
    auto it = tensors_.find(n);
    if (it == tensors_.end()) fail("{}: tensor '{}' is missing", dir_, n);
    return it->second;
  }

  void open_file(const std::string& path) {
    files_.push_back(std::make_unique<MappedFile>(path));
    const MappedFile& f = *files_.back();
    if (f.size() < 8) fail("{}: truncated safetensors file (no header)", path);
    uint64_t hlen;
    std::memcpy(&hlen, f.data(), 8);
    if (hlen > f.size() - 8) fail("{}: truncated safetensors file (header of {} bytes)", path, hlen);
    nlohmann::json h;
    try {
      h = nlohmann::json::parse(f.data() + 8, f.data() + 8 + hlen);
    } catch (const nlohmann::json::exception& e) {
      fail("{}: not a safetensors file (bad header: {})", path, e.what());
    }
    if (!h.is_object()) fail("{}: not a safetensors file (header is not an object)", path);
    const uint64_t base = 8 + hlen;
    for (const auto& [name, v] : h.items()) {
      if (name == "__metadata__") continue;
      if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
        fail("{}: tensor '{}': malformed header entry", path, name);
      Entry e;
      e.file = &f;
      e.dtype = v["dtype"].get<std::string>();
      e.shape = v["shape"].get<std::vector<int64_t>>();
      const auto off = v["data_offsets"].get<std::vector<uint64_t>>();
      if (off.size() != 2 || off[1] < off[0]) fail("{}: tensor '{}': bad data_offsets", path, name);
      if (off[1] > f.size() - base)
        fail("{}: truncated safetensors file: tensor '{}' ends at byte {} of {}", path, name,
             base + off[1], f.size());
      static const std::map<std::string, int> kSizes = {
          {"F64", 8}, {"F32", 4}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4}, {"I16", 2},
          {"I8", 1},  {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
      const auto sz = kSizes.find(e.dtype);
      if (sz != kSizes.end() &&
          static_cast<uint64_t>(numel_of(e.shape)) * sz->second != off[1] - off[0])
        fail("{}: tensor '{}': {} bytes for shape of {} {} elements", path, name, off[1] - off[0],
             numel_of(e.shape), e.dtype);
      e.data = f.data() + base + off[0];
      if (tensors_.count(name)) fail("{}: tensor '{}' appears in two files", path, name);
      tensors_.emplace(name, std::move(e));
    }
  }

  std::string dir_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::map<std::string, Entry> tensors_;
};

// ---- GGUF --------------------------------------------------------------------------------

// Hugging Face name -> GGUF name ("model.layers.3.mlp.up_proj.weight" -> "blk.3.ffn_up.weight").
std::string gguf_name(const std::string& hf) {
  static const std::vector<std::pair<std::string, std::string>> kLayer = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},
      {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},
      {"self_attn.o_proj.weight", "attn_output.weight"},
      {"post_attention_layernorm.weight", "ffn_norm.weight"},
      {"mlp.gate_proj.weight", "ffn_gate.weight"},
      {"mlp.up_proj.weight", "ffn_up.weight"},
      {"mlp.down_proj.weight", "ffn_down.weight"},
  };
  if (hf == "model.embed_tokens.weight") return "token_embd.weight";
  if (hf == "model.norm.weight") return "output_norm.weight";
  if (hf == "lm_head.weight") return "output.weight";
  const std::string prefix = "model.layers.";
  if (hf.rfind(prefix, 0) == 0) {
    const size_t dot = hf.find('.', prefix.size());
    if (dot != std::string::npos) {
      const std::string layer = hf.substr(prefix.size(), dot - prefix.size());
      const std::string rest = hf.substr(dot + 1);
      for (const auto& [h, g] : kLayer)
        if (rest == h) return "blk." + layer + "." + g;
    }
  }
  return hf;
}

class GgufSource final : public WeightSource {
 public:
  GgufSource(std::shared_ptr<const GgufFile> g, const ModelConfig& c) : g_(std::move(g)), c_(c) {}

  bool has(const std::string& n) const override { return g_->find_tensor(gguf_name(n)) != nullptr; }
  std::vector<int64_t> shape(const std::string& n) const override {
    const GgufTensor& t = get(n);
    return std::vector<int64_t>(t.dims.rbegin(), t.dims.rend());
  }
  std::string dtype_name(const std::string& n) const override { return ggml_type_name(get(n).type); }
  bool can_read(const std::string& n) const override { return ggml_can_dequantize(get(n).type); }
  void read_f32(const std::string& n, std::span<float> dst) const override {
    const GgufTensor& t = get(n);
    if (!ggml_can_dequantize(t.type))
      fail("{}: tensor '{}': unsupported quantization {} (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)",
           g_->path(), t.name, ggml_type_name(t.type));
    if (dst.size() != t.numel())
      fail("{}: tensor '{}': has {} elements, expected {}", g_->path(), t.name, t.numel(), dst.size());
    ggml_dequantize(t.type, t.data, dst.data(), dst.size());
    // llama.cpp's converter stores each Q/K head's rows interleaved ([hd/2, 2]) instead of
    // Hugging Face's rotate-half halves ([2, hd/2]); undo it: HF row h*hd + j*hd/2 + i is GGUF
    // row h*hd + 2*i + j.
    if (c_.arch == ModelArch::Llama) {
      const bool is_q = n.ends_with("self_attn.q_proj.weight");
      const bool is_k = n.ends_with("self_attn.k_proj.weight");
      if (is_q || is_k) unpermute(dst, is_q ? c_.num_heads : c_.num_kv_heads, static_cast<int64_t>(t.dims[0]));
    }
  }
  std::string describe() const override { return g_->path(); }

 private:
  const GgufTensor& get(const std::string& n) const {
    const GgufTensor* t = g_->find_tensor(gguf_name(n));
    if (!t) fail("{}: tensor '{}' (Hugging Face '{}') is missing", g_->path(), gguf_name(n), n);
    return *t;
  }

  void unpermute(std::span<float> w, int64_t heads, int64_t cols) const {
    const int64_t rows = static_cast<int64_t>(w.size()) / cols;
    const int64_t hd = rows / heads, half = hd / 2;
    std::vector<float> src(w.begin(), w.end());
    for (int64_t h = 0; h < heads; ++h)
      for (int64_t i = 0; i < half; ++i)
        for (int64_t j = 0; j < 2; ++j)
          std::memcpy(&w[(h * hd + j * half + i) * cols], &src[(h * hd + 2 * i + j) * cols], cols * 4);
  }

  std::shared_ptr<const GgufFile> g_;
  ModelConfig c_;
};

// ---- dummy ---------------------------------------------------------------------------------

class DummySource final : public WeightSource {
 public:
  DummySource(const ModelConfig& c, std::string name, uint64_t seed) : name_(std::move(name)), seed_(seed) {
    for (auto& t : expected_tensors(c)) shapes_[t.name] = t.shape;
  }
  bool has(const std::string& n) const override { return shapes_.count(n) != 0; }
  std::vector<int64_t> shape(const std::string& n) const override { return get(n); }
  std::string dtype_name(const std::string&) const override { return "random"; }
  bool can_read(const std::string&) const override { return true; }
  // Norm weights ~1; biases small; matrices uniform with variance 1/in_features (so
  // activations keep their scale and logits stay finite and non-degenerate).
  void read_f32(const std::string& n, std::span<float> dst) const override {
    const auto& s = get(n);
    NF_CHECK(static_cast<int64_t>(dst.size()) == numel_of(s), "dummy '{}': size mismatch", n);
    uint64_t h = 1469598103934665603ull ^ seed_;  // FNV-1a of the name
    for (char ch : n) h = (h ^ static_cast<uint8_t>(ch)) * 1099511628211ull;
    std::mt19937 rng(static_cast<uint32_t>(h ^ (h >> 32)));
    float lo, hi;
    if (s.size() == 1 && n.ends_with("norm.weight")) {
      lo = 0.9f, hi = 1.1f;
    } else if (s.size() == 1) {
      lo = -0.1f, hi = 0.1f;
    } else if (n == "model.embed_tokens.weight") {
      lo = -1.0f, hi = 1.0f;
    } else {
      hi = std::sqrt(3.0f / static_cast<float>(s[1]));
      lo = -hi;
    }
    std::uniform_real_distribution<float> d(lo, hi);
    for (auto& x : dst) x = d(rng);
  }
  std::string describe() const override { return name_; }

 private:
  const std::vector<int64_t>& get(const std::string& n) const {
    auto it = shapes_.find(n);
    if (it == shapes_.end()) fail("{}: tensor '{}' is missing", name_, n);
    return it->second;
  }
  std::string name_;
  uint64_t seed_;
  std::map<std::string, std::vector<int64_t>> shapes_;
};

}  // namespace

std::unique_ptr<WeightSource> open_safetensors(const std::string& dir, const std::vector<std::string>& files) {
  return std::make_unique<SafetensorsSource>(dir, files);
}

std::unique_ptr<WeightSource> open_gguf_weights(std::shared_ptr<const GgufFile> gguf, const ModelConfig& c) {
  return std::make_unique<GgufSource>(std::move(gguf), c);
}

std::unique_ptr<WeightSource> open_dummy_weights(const ModelConfig& c, const std::string& name, uint64_t seed) {
  return std::make_unique<DummySource>(c, name, seed);
}

}  // namespace nf
