// Embedding, RMSNorm (plain and fused with the residual add), SiLU-and-mul and RoPE + KV-cache
// write on the GPU against the CPU reference ops.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <tuple>

#include "backends/cpu/ops.h"
#include "backends/cuda/activation.h"
#include "backends/cuda/embedding.h"
#include "backends/cuda/norm.h"
#include "backends/cuda/rope.h"
#include "kernel_test_util.h"

namespace nf {
namespace {

using cuda::DType;
using cuda::TensorView;
using test::download;
using test::download_bf16;
using test::upload;
using test::upload_bf16;

// Error budgets, relative Frobenius norm ||out - ref|| / ||ref||. bf16 outputs of fp32 math:
// rounding alone is ~2^-9 (0.2%) per element.
constexpr double kBf16Budget = 1e-2;

const int kTokenCounts[] = {1, 7, 97, 1000, 4097};

class Elementwise : public test::KernelTest {};

// embedding_lookup of `ids` in `table` ([rows, hidden], ids [first, first + rows); vocab < 0:
// rows), into a poisoned output: the output rows and the error flag.
struct Lookup {
  std::vector<float> out;
  int32_t error = 0;
};
Lookup lookup(const std::vector<int32_t>& ids, const std::vector<float>& table, int64_t rows,
              int64_t hidden, int64_t first = 0, int64_t vocab = -1) {
  const int64_t tokens = static_cast<int64_t>(ids.size());
  auto d_table = upload_bf16(table);
  auto d_ids = upload(ids);
  cuda::DeviceBuffer d_out(tokens * hidden * 2), d_err(4);
  test::poison(d_out);
  NF_CUDA_CHECK(cudaMemset(d_err.data(), 0, 4));
  cuda::embedding_lookup(TensorView(d_ids.data(), DType::kI32, {tokens}),
                         TensorView(d_table.data(), DType::kBf16, {rows, hidden}),
                         TensorView(d_out.data(), DType::kBf16, {tokens, hidden}),
                         TensorView(d_err.data(), DType::kI32, {1}), nullptr, first, vocab);
  test::sync();
  return {download_bf16(d_out, tokens * hidden), download<int32_t>(d_err, 1)[0]};
}

TEST_F(Elementwise, EmbeddingGathersRows) {
  for (int64_t hidden : {4096, 97}) {  // 16-byte path and scalar path
    for (int tokens : kTokenCounts) {
      SCOPED_TRACE(testing::Message() << "hidden " << hidden << " tokens " << tokens);
      const int64_t vocab = 1000;
      const auto table = test::randn_bf16(vocab * hidden, rng_);
      std::vector<int32_t> ids(tokens);
      std::uniform_int_distribution<int32_t> pick(0, vocab - 1);
      for (auto& id : ids) id = pick(rng_);
      const Lookup r = lookup(ids, table, vocab, hidden);
      size_t mismatches = 0;
      for (int t = 0; t < tokens; ++t)
        for (int64_t i = 0; i < hidden; ++i)
          mismatches += !(r.out[t * hidden + i] == table[ids[t] * hidden + i]);  // NaN never equal
      EXPECT_EQ(mismatches, 0u);
      EXPECT_EQ(r.error, 0);
    }
  }
}

TEST_F(Elementwise, EmbeddingFlagsOutOfRangeIds) {
  const int64_t vocab = 50, hidden = 64;
  const auto table = test::randn_bf16(vocab * hidden, rng_);
  const std::vector<int32_t> ids = {3, -1, 49, 50, 1 << 30, 0};
  const int64_t tokens = static_cast<int64_t>(ids.size());
  const Lookup r = lookup(ids, table, vocab, hidden);
  EXPECT_EQ(r.error, 1);
  for (int64_t t = 0; t < tokens; ++t) {
    const bool valid = ids[t] >= 0 && ids[t] < vocab;
    for (int64_t i = 0; i < hidden; ++i)
      ASSERT_EQ(r.out[t * hidden + i], valid ? table[ids[t] * hidden + i] : 0.0f)
          << "token " << t << " column " << i;
  }
}

// A tensor-parallel rank's block of the vocabulary: ids in [first, first + rows) take their
// row, the other valid ids zeros (another rank's rows), and only ids outside the whole
// vocabulary raise the error flag. The last rank's block is short (zero padding rows).
TEST_F(Elementwise, EmbeddingVocabularyBlock) {
  const int64_t vocab = 50, rows = 13, hidden = 64;  // 4 ranks of 13 rows: 13, 13, 13, 11
  const std::vector<int32_t> ids = {0, 12, 13, 25, 26, 38, 39, 49, 7, 45};
  const int64_t tokens = static_cast<int64_t>(ids.size());
  for (int64_t first : {int64_t{0}, int64_t{13}, int64_t{39}}) {
    SCOPED_TRACE(testing::Message() << "first id " << first);
    const auto table = test::randn_bf16(rows * hidden, rng_);
    const Lookup r = lookup(ids, table, rows, hidden, first, vocab);
    EXPECT_EQ(r.error, 0);
    for (int64_t t = 0; t < tokens; ++t) {
      const int64_t row = ids[t] - first;
      const bool mine = row >= 0 && row < rows;
      for (int64_t i = 0; i < hidden; ++i)
        ASSERT_EQ(r.out[t * hidden + i], mine ? table[row * hidden + i] : 0.0f)
            << "token " << t << " column " << i;
    }
  }
  // An id past the whole vocabulary is an error on every rank, also one whose block it is not.
  EXPECT_EQ(lookup({50}, test::randn_bf16(rows * hidden, rng_), rows, hidden, 0, vocab).error, 1);
}

TEST_F(Elementwise, RmsNormMatchesCpu) {
  const float eps = 1e-5f;
  for (int64_t hidden : {4096, 1000, 97}) {
    for (int tokens : kTokenCounts) {
      if (hidden == 97 && tokens > 1000) continue;
      SCOPED_TRACE(testing::Message() << "hidden " << hidden << " tokens " << tokens);
      const auto x = test::randn_bf16(tokens * hidden, rng_, 2.0f);
      const auto w = test::randn_bf16(hidden, rng_);
      std::vector<float> ref(x.size());
      cpu::rms_norm(test::host_pool(), x.data(), w.data(), ref.data(), tokens, hidden, eps);
      auto d_x = upload_bf16(x), d_w = upload_bf16(w);
      cuda::DeviceBuffer d_out(x.size() * 2);
      test::poison(d_out);
      cuda::rms_norm(TensorView(d_x.data(), DType::kBf16, {tokens, hidden}),
                     TensorView(d_w.data(), DType::kBf16, {hidden}),
                     TensorView(d_out.data(), DType::kBf16, {tokens, hidden}), eps, nullptr);
      test::sync();
      test::expect_close(download_bf16(d_out, x.size()), ref, kBf16Budget, "rms_norm");
      // In place: out aliases x.
      cuda::rms_norm(TensorView(d_x.data(), DType::kBf16, {tokens, hidden}),
                     TensorView(d_w.data(), DType::kBf16, {hidden}),
                     TensorView(d_x.data(), DType::kBf16, {tokens, hidden}), eps, nullptr);
      test::sync();
      test::expect_close(download_bf16(d_x, x.size()), ref, kBf16Budget, "rms_norm in place");
    }
  }
}

// Qwen3's q/k norm on packed qkv rows (q heads, k heads, then v heads, which stay as they are).
TEST_F(Elementwise, HeadRmsNormMatchesCpu) {
  const float eps = 1e-6f;
  for (const auto& [nq, nk, hd] : {std::tuple{32, 8, 128}, std::tuple{4, 2, 64}, std::tuple{3, 1, 96}}) {
    const int64_t stride = static_cast<int64_t>(nq + 2 * nk) * hd;
    for (int tokens : kTokenCounts) {
      SCOPED_TRACE(testing::Message() << nq << "/" << nk << " heads of " << hd << ", " << tokens
                                      << " tokens");
      const auto x = test::randn_bf16(tokens * stride, rng_, 2.0f);
      const auto qw = test::randn_bf16(hd, rng_), kw = test::randn_bf16(hd, rng_);
      std::vector<float> ref = x;
      cpu::head_rms_norm(test::host_pool(), ref.data(), stride, tokens, nq, nk, hd, qw.data(),
                         kw.data(), eps);
      auto d_x = upload_bf16(x), d_q = upload_bf16(qw), d_k = upload_bf16(kw);
      cuda::head_rms_norm(TensorView(d_x.data(), DType::kBf16, {tokens, stride}), nq, nk,
                          static_cast<int>(hd), TensorView(d_q.data(), DType::kBf16, {hd}),
                          TensorView(d_k.data(), DType::kBf16, {hd}), eps, nullptr);
      test::sync();
      test::expect_close(download_bf16(d_x, x.size()), ref, kBf16Budget, "head_rms_norm");
    }
  }
}

TEST_F(Elementwise, AddRmsNormMatchesCpu) {
  const float eps = 1e-6f;
  for (int64_t hidden : {4096, 97}) {
    for (int tokens : kTokenCounts) {
      if (hidden == 97 && tokens > 1000) continue;
      SCOPED_TRACE(testing::Message() << "hidden " << hidden << " tokens " << tokens);
      const auto x = test::randn_bf16(tokens * hidden, rng_);
      const auto res = test::randn_bf16(tokens * hidden, rng_, 3.0f);
      const auto w = test::randn_bf16(hidden, rng_);
      std::vector<float> sum(x.size()), ref(x.size());
      for (size_t i = 0; i < x.size(); ++i) sum[i] = test::bf16_round(x[i] + res[i]);
      cpu::rms_norm(test::host_pool(), sum.data(), w.data(), ref.data(), tokens, hidden, eps);
      auto d_x = upload_bf16(x), d_res = upload_bf16(res), d_w = upload_bf16(w);
      cuda::DeviceBuffer d_out(x.size() * 2);
      test::poison(d_out);
      cuda::add_rms_norm(TensorView(d_x.data(), DType::kBf16, {tokens, hidden}),
                         TensorView(d_res.data(), DType::kBf16, {tokens, hidden}),
                         TensorView(d_w.data(), DType::kBf16, {hidden}),
                         TensorView(d_out.data(), DType::kBf16, {tokens, hidden}), eps, nullptr);
      test::sync();
      const auto new_res = download_bf16(d_res, x.size());
      size_t mismatches = 0;
      for (size_t i = 0; i < x.size(); ++i) mismatches += !(new_res[i] == sum[i]);
      EXPECT_EQ(mismatches, 0u) << "residual must be bf16(x + residual) exactly";
      test::expect_close(download_bf16(d_out, x.size()), ref, kBf16Budget, "add_rms_norm");
    }
  }
}

TEST_F(Elementwise, SiluAndMulMatchesCpu) {
  for (int64_t inter : {1024, 3584, 97}) {
    for (int tokens : kTokenCounts) {
      if (inter != 1024 && tokens > 1000) continue;
      SCOPED_TRACE(testing::Message() << "inter " << inter << " tokens " << tokens);
      const auto gu = test::randn_bf16(tokens * 2 * inter, rng_, 3.0f);
      std::vector<float> ref(tokens * inter);
      cpu::silu_and_mul(test::host_pool(), gu.data(), ref.data(), tokens, inter);
      auto d_gu = upload_bf16(gu);
      cuda::DeviceBuffer d_out(ref.size() * 2);
      test::poison(d_out);
      cuda::silu_and_mul(TensorView(d_gu.data(), DType::kBf16, {tokens, 2 * inter}),
                         TensorView(d_out.data(), DType::kBf16, {tokens, inter}), nullptr);
      test::sync();
      test::expect_close(download_bf16(d_out, ref.size()), ref, kBf16Budget, "silu_and_mul");
    }
  }
}

// Llama-3.1's scaled frequencies (rope_type "llama3"), as transformers precomputes them.
std::vector<float> llama31_inv_freq(int head_dim) {
  const double theta = 500000.0, factor = 8.0, low = 1.0, high = 4.0, original = 8192.0;
  std::vector<float> f(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i) {
    const double inv = 1.0 / std::pow(theta, 2.0 * i / head_dim);
    const double wavelen = 2 * M_PI / inv;
    double out = inv;
    if (wavelen > original / low) {
      out = inv / factor;
    } else if (wavelen >= original / high) {
      const double smooth = (original / wavelen - low) / (high - low);
      out = (1 - smooth) * inv / factor + smooth * inv;
    }
    f[i] = static_cast<float>(out);
  }
  return f;
}

std::vector<float> plain_inv_freq(int head_dim, double theta) {
  std::vector<float> f(head_dim / 2);
  for (int i = 0; i < head_dim / 2; ++i)
    f[i] = static_cast<float>(1.0 / std::pow(theta, 2.0 * i / head_dim));
  return f;
}

struct RopeCase {
  int heads, kv_heads, head_dim;
};

TEST_F(Elementwise, RopeKvWriteMatchesCpu) {
  const int block_size = 16;
  for (const RopeCase rc :
       {RopeCase{8, 8, 128}, RopeCase{32, 8, 128}, RopeCase{16, 2, 64}, RopeCase{14, 2, 64}}) {
    for (int tokens : {1, 7, 97, 1000}) {
      for (bool llama31 : {false, true}) {
        SCOPED_TRACE(testing::Message()
                     << "H " << rc.heads << " KVH " << rc.kv_heads << " D " << rc.head_dim
                     << " tokens " << tokens << " llama3.1 " << llama31);
        const int H = rc.heads, KVH = rc.kv_heads, D = rc.head_dim;
        const int64_t row = static_cast<int64_t>(H + 2 * KVH) * D;
        const int64_t num_blocks = tokens / block_size + 9;
        const auto inv_freq = llama31 ? llama31_inv_freq(D) : plain_inv_freq(D, 10000.0);
        const auto qkv = test::randn_bf16(tokens * row, rng_);
        std::vector<int32_t> positions(tokens);
        std::uniform_int_distribution<int32_t> pos(0, 131071);
        for (auto& p : positions) p = pos(rng_);
        // Distinct random slots; about one token in eight is padding (slot -1).
        std::vector<int64_t> slots(num_blocks * block_size);
        std::iota(slots.begin(), slots.end(), 0);
        std::shuffle(slots.begin(), slots.end(), rng_);
        slots.resize(tokens);
        for (auto& s : slots)
          if (rng_() % 8 == 0) s = -1;

        // Reference: rotate q and k in fp32, round to bf16 as the device stores them, then write.
        std::vector<float> ref = qkv;
        cpu::rope(test::host_pool(), ref.data(), row, tokens, H + KVH, D, positions, inv_freq);
        for (auto& v : ref) v = test::bf16_round(v);
        const int64_t cache_elems = num_blocks * 2 * KVH * block_size * D;
        std::vector<float> ref_cache(cache_elems, NAN);
        cpu::PagedKv kv{ref_cache.data(), num_blocks, KVH, block_size, D};
        for (int t = 0; t < tokens; ++t) {
          if (slots[t] < 0) continue;
          cpu::kv_cache_write(kv, ref.data() + t * row + H * D,
                              ref.data() + t * row + (H + KVH) * D, row,
                              std::span<const int64_t>(&slots[t], 1));
        }

        auto d_qkv = upload_bf16(qkv);
        auto d_pos = upload(positions);
        auto d_freq = upload(inv_freq);
        auto d_slots = upload(slots);
        cuda::DeviceBuffer d_cache(cache_elems * 2);
        test::poison(d_cache);
        cuda::rope_kv_write(
            {H, KVH, D}, TensorView(d_qkv.data(), DType::kBf16, {tokens, row}),
            TensorView(d_pos.data(), DType::kI32, {tokens}),
            TensorView(d_freq.data(), DType::kF32, {D / 2}),
            TensorView(d_cache.data(), DType::kBf16, {num_blocks, 2, KVH, block_size, D}),
            TensorView(d_slots.data(), DType::kI64, {tokens}), nullptr);
        test::sync();
        test::expect_close(download_bf16(d_qkv, qkv.size()), ref, kBf16Budget, "rotated qkv");
        // The cache: written slots match; every other slot is untouched (still NaN).
        const auto cache = download_bf16(d_cache, cache_elems);
        std::vector<float> got, want;
        size_t stray = 0;
        for (int64_t i = 0; i < cache_elems; ++i) {
          if (std::isnan(ref_cache[i])) {
            stray += !std::isnan(cache[i]);
          } else {
            got.push_back(cache[i]);
            want.push_back(ref_cache[i]);
          }
        }
        EXPECT_EQ(stray, 0u) << "cache elements written outside the mapped slots";
        test::expect_close(got, want, kBf16Budget, "kv cache");
      }
    }
  }
}

}  // namespace
}  // namespace nf
