// GGUF tensors under their Hugging Face names. GGUF stores dims fastest-first (dims[0] is the
// row length), so the Hugging Face shape is the reversed dims; the bytes are the same row-major
// matrix. llama.cpp's converter also permutes the rows of llama Q/K weights; see unpermute_rows.
#include <cstring>
#include <utility>

#include "common/status.h"
#include "model/gguf.h"
#include "model/weight_source.h"

namespace nf {
namespace {

// Hugging Face name -> GGUF name ("model.layers.3.mlp.up_proj.weight" -> "blk.3.ffn_up.weight").
std::string gguf_name(const std::string& hf) {
  static const std::pair<const char*, const char*> kLayer[] = {
      {"input_layernorm.weight", "attn_norm.weight"},
      {"self_attn.q_proj.weight", "attn_q.weight"},
      {"self_attn.k_proj.weight", "attn_k.weight"},
      {"self_attn.v_proj.weight", "attn_v.weight"},
      {"self_attn.q_proj.bias", "attn_q.bias"},
      {"self_attn.k_proj.bias", "attn_k.bias"},
      {"self_attn.v_proj.bias", "attn_v.bias"},
      {"self_attn.q_norm.weight", "attn_q_norm.weight"},
      {"self_attn.k_norm.weight", "attn_k_norm.weight"},
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
  if (hf.starts_with(prefix)) {
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

// Design note: llama.cpp's converter (convert_hf_to_gguf.py, LlamaModel.permute) reorders the
// rows of each Q/K head from Hugging Face's rotate-half layout (first half of the head's
// dimensions, then the second half) to interleaved pairs:
//   w.reshape(n_head, 2, hd/2, in).swapaxes(1, 2).reshape(out, in)
// so GGUF row h*hd + 2*i + j holds Hugging Face row h*hd + j*hd/2 + i (i < hd/2, j < 2).
// This puts every row back. `w` is [heads * hd, cols] row-major.
void unpermute_rows(std::span<float> w, int64_t heads, int64_t cols) {
  const int64_t rows = static_cast<int64_t>(w.size()) / cols;
  NF_CHECK(heads > 0 && rows % heads == 0 && (rows / heads) % 2 == 0,
           "cannot un-permute {} rows into {} heads", rows, heads);
  const int64_t hd = rows / heads, half = hd / 2;
  const std::vector<float> src(w.begin(), w.end());
  for (int64_t h = 0; h < heads; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j)
        std::memcpy(&w[static_cast<size_t>((h * hd + j * half + i) * cols)],
                    &src[static_cast<size_t>((h * hd + 2 * i + j) * cols)],
                    static_cast<size_t>(cols) * sizeof(float));
}

class GgufSource final : public WeightSource {
 public:
  GgufSource(std::shared_ptr<const GgufFile> g, const ModelConfig& c) : g_(std::move(g)), c_(c) {}

  bool has(const std::string& n) const override { return g_->find_tensor(gguf_name(n)) != nullptr; }
  std::vector<int64_t> shape(const std::string& n) const override {
    const GgufTensor& t = get(n);
    return std::vector<int64_t>(t.dims.rbegin(), t.dims.rend());
  }
  std::string dtype_name(const std::string& n) const override {
    return ggml_type_name(get(n).type);
  }
  std::string describe() const override { return g_->path(); }
  std::string tensor_label(const std::string& n) const override {
    return fmt::format("{}: tensor '{}'", g_->path(), gguf_name(n));
  }

  void check_readable(const std::string& n) const override {
    const GgufTensor& t = get(n);
    if (!ggml_can_dequantize(t.type))
      fail("{}: unsupported quantization {} (supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)",
           tensor_label(n), ggml_type_name(t.type));
  }

  void read_f32(const std::string& n, std::span<float> dst) const override {
    check_readable(n);
    const GgufTensor& t = get(n);
    if (dst.size() != t.numel())
      fail("{}: has {} elements, the destination {}", tensor_label(n), t.numel(), dst.size());
    ggml_dequantize(t.type, t.data, dst.data(), dst.size());
    if (c_.arch == ModelArch::Llama && t.dims.size() == 2) {
      if (n.ends_with("self_attn.q_proj.weight")) unpermute(n, t, dst, c_.num_heads);
      if (n.ends_with("self_attn.k_proj.weight")) unpermute(n, t, dst, c_.num_kv_heads);
    }
  }

 private:
  const GgufTensor& get(const std::string& n) const {
    const GgufTensor* t = g_->find_tensor(gguf_name(n));
    if (!t) fail("{}: tensor '{}' is missing", g_->path(), gguf_name(n));
    return *t;
  }

  void unpermute(const std::string& n, const GgufTensor& t, std::span<float> w,
                 int64_t heads) const {
    const int64_t rows = static_cast<int64_t>(t.dims[1]);
    if (rows != heads * c_.head_dim)
      fail("{}: {} rows, expected {} heads of {}", tensor_label(n), rows, heads, c_.head_dim);
    unpermute_rows(w, heads, static_cast<int64_t>(t.dims[0]));
  }

  std::shared_ptr<const GgufFile> g_;
  ModelConfig c_;
};

}  // namespace

std::unique_ptr<WeightSource> open_gguf_weights(std::shared_ptr<const GgufFile> gguf,
                                                const ModelConfig& c) {
  return std::make_unique<GgufSource>(std::move(gguf), c);
}

}  // namespace nf
