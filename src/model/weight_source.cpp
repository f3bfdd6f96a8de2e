#include "model/weight_source.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <thread>

#include "common/status.h"

namespace nf {

std::string WeightSource::tensor_label(const std::string& name) const {
  return fmt::format("{}: tensor '{}'", describe(), name);
}

// The row width of a tensor seen as [shape[0], rest], after checking a row range and dst.
int64_t checked_row_width(const WeightSource& w, const std::string& name, int64_t row_begin,
                          int64_t row_end, size_t dst_size) {
  const std::vector<int64_t> s = w.shape(name);
  const int64_t numel = tensor_numel(s), rows = s.empty() ? 1 : s[0];
  const int64_t cols = rows > 0 ? numel / rows : 0;
  if (row_begin < 0 || row_end < row_begin || row_end > rows)
    fail("{}: rows [{}, {}) of a tensor of {} rows", w.tensor_label(name), row_begin, row_end,
         rows);
  if (static_cast<int64_t>(dst_size) != (row_end - row_begin) * cols)
    fail("{}: rows [{}, {}) are {} elements, the destination {}", w.tensor_label(name), row_begin,
         row_end, (row_end - row_begin) * cols, dst_size);
  return cols;
}

void WeightSource::read_rows_f32(const std::string& name, int64_t row_begin, int64_t row_end,
                                 std::span<float> dst) const {
  const int64_t cols = checked_row_width(*this, name, row_begin, row_end, dst.size());
  const int64_t numel = tensor_numel(shape(name));
  if (row_begin == 0 && row_end * cols == numel) return read_f32(name, dst);
  std::vector<float> all(static_cast<size_t>(numel));
  read_f32(name, all);
  std::copy_n(all.begin() + row_begin * cols, dst.size(), dst.begin());
}

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
    if (c.qk_norm) {
      t.push_back({p + "self_attn.q_norm.weight", {hd}});
      t.push_back({p + "self_attn.k_norm.weight", {hd}});
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

int64_t tensor_numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Design note: element i of a tensor is a pure function of (seed, name, i) (a counter-based
// generator), so any thread split gives the same values and nothing is stored. Norm weights are
// ~1, biases small, matrices uniform with variance 1/in_features (the embedding too, so tied
// logits have unit scale): activations keep their scale and logits stay finite and spread out.
class DummySource final : public WeightSource {
 public:
  DummySource(const ModelConfig& c, std::string name, uint64_t seed)
      : name_(std::move(name)), seed_(seed) {
    for (auto& t : expected_tensors(c)) shapes_[t.name] = t.shape;
  }

  bool has(const std::string& n) const override { return shapes_.count(n) != 0; }
  std::vector<int64_t> shape(const std::string& n) const override { return get(n); }
  std::string dtype_name(const std::string& n) const override {
    get(n);
    return "F32";
  }
  void check_readable(const std::string& n) const override { get(n); }
  std::string describe() const override { return name_; }

  void read_f32(const std::string& n, std::span<float> dst) const override {
    const auto& s = get(n);
    if (static_cast<int64_t>(dst.size()) != tensor_numel(s))
      fail("{}: has {} elements, the destination {}", tensor_label(n), tensor_numel(s), dst.size());
    fill(n, 0, dst);
  }

  // Element i of the tensor is a function of i alone, so a row range is generated directly.
  void read_rows_f32(const std::string& n, int64_t row_begin, int64_t row_end,
                     std::span<float> dst) const override {
    const int64_t cols = checked_row_width(*this, n, row_begin, row_end, dst.size());
    fill(n, static_cast<size_t>(row_begin * cols), dst);
  }

 private:
  // dst[j] = element first + j of tensor n.
  void fill(const std::string& n, size_t first, std::span<float> dst) const {
    const auto& s = get(n);
    float lo, hi;
    if (s.size() == 1 && n.ends_with("norm.weight")) {
      lo = 0.9f, hi = 1.1f;
    } else if (s.size() == 1) {
      lo = -0.1f, hi = 0.1f;
    } else {
      hi = std::sqrt(3.0f / static_cast<float>(s[1]));
      lo = -hi;
    }
    uint64_t key = 1469598103934665603ull ^ splitmix64(seed_);  // FNV-1a of the name
    for (char ch : n) key = (key ^ static_cast<uint8_t>(ch)) * 1099511628211ull;
    auto range = [&](size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i) {
        const uint64_t h = splitmix64(key + first + i);
        const float u = static_cast<float>(h >> 40) * (1.0f / 16777216.0f);  // [0, 1)
        dst[i] = lo + (hi - lo) * u;
      }
    };
    const size_t total = dst.size();
    const size_t threads = std::min<size_t>(std::max(1u, std::thread::hardware_concurrency()), 16);
    if (total < (size_t{1} << 20) || threads == 1) return range(0, total);
    std::vector<std::thread> pool;
    const size_t chunk = (total + threads - 1) / threads;
    for (size_t t = 0; t < threads; ++t)
      pool.emplace_back(range, std::min(total, t * chunk), std::min(total, (t + 1) * chunk));
    for (auto& th : pool) th.join();
  }

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

std::unique_ptr<WeightSource> open_dummy_weights(const ModelConfig& c, const std::string& name,
                                                 uint64_t seed) {
  return std::make_unique<DummySource>(c, name, seed);
}

}  // namespace nf
