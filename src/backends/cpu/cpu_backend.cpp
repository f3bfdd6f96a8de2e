#include "backends/cpu/cpu_backend.h"

#include <cblas.h>

#include <cmath>
#include <string>

#include "common/status.h"

namespace nf {
namespace {

// Reads tensor `name` into a new vector, checking its element count.
std::vector<float> read(const WeightSource& w, const std::string& name, int64_t numel) {
  std::vector<float> out(static_cast<size_t>(numel));
  w.read_f32(name, out);
  return out;
}

// Reads tensors into consecutive row ranges of one matrix (fused QKV, fused gate/up).
std::vector<float> read_concat(const WeightSource& w, const std::vector<std::string>& names,
                               const std::vector<int64_t>& numels) {
  int64_t total = 0;
  for (int64_t n : numels) total += n;
  std::vector<float> out(static_cast<size_t>(total));
  int64_t off = 0;
  for (size_t i = 0; i < names.size(); ++i) {
    w.read_f32(names[i], std::span<float>(out.data() + off, static_cast<size_t>(numels[i])));
    off += numels[i];
  }
  return out;
}

void grow(std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
}

}  // namespace

CpuBackend::CpuBackend(const ModelConfig& c, const WeightSource& w, const CpuBackendConfig& opts)
    : config_(c), opts_(opts), pool_(opts.threads) {
  // GEMMs are split across pool_ (see cpu::gemm_xwt): OpenBLAS itself runs single-threaded.
  openblas_set_num_threads(1);
  NF_CHECK(opts_.block_size > 0, "block size {}", opts_.block_size);
  const int64_t H = c.hidden_size, hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t I = c.intermediate_size, V = c.vocab_size;
  const int64_t kv_block_floats = 2 * nkv * opts_.block_size * hd;
  num_blocks_ = opts_.num_kv_blocks;
  if (num_blocks_ <= 0) {
    const double bytes_per_block = static_cast<double>(kv_block_floats) * 4 * c.num_layers;
    num_blocks_ = static_cast<int64_t>(opts_.kv_cache_gb * (1 << 30) / bytes_per_block);
  }
  if (num_blocks_ < 1) fail("--kv-cache-gb {} is too small for one KV block", opts_.kv_cache_gb);

  embed_ = read(w, "model.embed_tokens.weight", V * H);
  final_norm_ = read(w, "model.norm.weight", H);
  if (!c.tie_word_embeddings) lm_head_ = read(w, "lm_head.weight", V * H);
  inv_freq_ = rope_inv_freq(c.rope, hd);
  layers_.resize(static_cast<size_t>(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    Layer& l = layers_[static_cast<size_t>(i)];
    l.attn_norm = read(w, p + "input_layernorm.weight", H);
    l.w_qkv = read_concat(w, {p + "self_attn.q_proj.weight", p + "self_attn.k_proj.weight",
                              p + "self_attn.v_proj.weight"},
                          {nh * hd * H, nkv * hd * H, nkv * hd * H});
    if (c.qkv_bias) {
      l.b_qkv = read_concat(w, {p + "self_attn.q_proj.bias", p + "self_attn.k_proj.bias",
                                p + "self_attn.v_proj.bias"},
                            {nh * hd, nkv * hd, nkv * hd});
    }
    l.w_o = read(w, p + "self_attn.o_proj.weight", H * nh * hd);
    l.ffn_norm = read(w, p + "post_attention_layernorm.weight", H);
    l.w_gate_up = read_concat(w, {p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"},
                              {I * H, I * H});
    l.w_down = read(w, p + "mlp.down_proj.weight", H * I);
    try {
      l.kv.assign(static_cast<size_t>(num_blocks_ * kv_block_floats), 0.0f);
    } catch (const std::bad_alloc&) {
      fail("cannot allocate a {:.2f} GiB KV cache in host memory (lower --kv-cache-gb)",
           opts_.kv_cache_gb);
    }
  }
}

cpu::PagedKv CpuBackend::layer_cache(Layer& l) {
  return cpu::PagedKv{l.kv.data(), num_blocks_, config_.num_kv_heads, opts_.block_size,
                      config_.head_dim};
}

void CpuBackend::forward(const ScheduledBatch& b, std::span<float> logits) {
  const ModelConfig& c = config_;
  const int64_t T = b.num_tokens(), S = static_cast<int64_t>(b.sample_rows.size());
  const int64_t H = c.hidden_size, hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t I = c.intermediate_size, V = c.vocab_size;
  const int64_t qkv_w = (nh + 2 * nkv) * hd;
  NF_CHECK(static_cast<int64_t>(b.positions.size()) == T && static_cast<int64_t>(b.slot_mapping.size()) == T,
           "forward: {} tokens, {} positions, {} slots", T, b.positions.size(), b.slot_mapping.size());
  NF_CHECK(static_cast<int64_t>(b.seq_indptr.size()) == b.num_requests() + 1 && b.seq_indptr.back() == T,
           "forward: seq_indptr does not cover the {} tokens", T);
  NF_CHECK(static_cast<int64_t>(logits.size()) == S * V, "forward: logits holds {} floats, need {}x{}",
           logits.size(), S, V);
  if (T == 0) return;
  grow(x_, T * H);
  grow(h_, T * H);
  grow(qkv_, T * qkv_w);
  grow(attn_, T * nh * hd);
  grow(gate_up_, T * 2 * I);
  grow(act_, T * I);

  for (int64_t t = 0; t < T; ++t) {
    const int32_t id = b.token_ids[t];
    NF_CHECK(id >= 0 && id < V, "forward: token id {} outside the vocabulary of {}", id, V);
    std::copy_n(embed_.data() + id * H, H, x_.data() + t * H);
  }
  const cpu::AttentionBatch ab{b.positions, b.seq_indptr, b.block_indptr, b.block_ids};
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const float eps = static_cast<float>(c.rms_norm_eps);
  for (Layer& l : layers_) {
    cpu::rms_norm(pool_, x_.data(), l.attn_norm.data(), h_.data(), T, H, eps);
    cpu::gemm_xwt(h_.data(), l.w_qkv.data(), qkv_.data(), T, qkv_w, H, 0.0f, &pool_);
    if (!l.b_qkv.empty()) {
      for (int64_t t = 0; t < T; ++t)
        for (int64_t i = 0; i < qkv_w; ++i) qkv_[t * qkv_w + i] += l.b_qkv[i];
    }
    // Rotate Q and K heads together: they are adjacent in each qkv row.
    cpu::rope(pool_, qkv_.data(), qkv_w, T, nh + nkv, hd, b.positions, inv_freq_);
    const cpu::PagedKv cache = layer_cache(l);
    cpu::kv_cache_write(cache, qkv_.data() + nh * hd, qkv_.data() + (nh + nkv) * hd, qkv_w,
                        b.slot_mapping);
    cpu::paged_attention(pool_, qkv_.data(), qkv_w, cache, ab, nh, scale, attn_.data());
    cpu::gemm_xwt(attn_.data(), l.w_o.data(), x_.data(), T, H, nh * hd, 1.0f, &pool_);
    cpu::rms_norm(pool_, x_.data(), l.ffn_norm.data(), h_.data(), T, H, eps);
    cpu::gemm_xwt(h_.data(), l.w_gate_up.data(), gate_up_.data(), T, 2 * I, H, 0.0f, &pool_);
    cpu::silu_and_mul(pool_, gate_up_.data(), act_.data(), T, I);
    cpu::gemm_xwt(act_.data(), l.w_down.data(), x_.data(), T, H, I, 1.0f, &pool_);
  }
  // Final norm and LM head only for the sampled rows.
  grow(rows_, S * H);
  for (int64_t s = 0; s < S; ++s) {
    const int32_t r = b.sample_rows[s];
    NF_CHECK(r >= 0 && r < T, "forward: sample row {} outside {} tokens", r, T);
    std::copy_n(x_.data() + r * H, H, rows_.data() + s * H);
  }
  cpu::rms_norm(pool_, rows_.data(), final_norm_.data(), rows_.data(), S, H, eps);
  const float* head = lm_head_.empty() ? embed_.data() : lm_head_.data();
  cpu::gemm_xwt(rows_.data(), head, logits.data(), S, V, H, 0.0f, &pool_);
}

}  // namespace nf
