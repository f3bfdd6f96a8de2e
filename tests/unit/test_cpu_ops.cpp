// The CPU reference ops against straightforward double-precision formulas.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
#include <random>

#include "backends/cpu/ops.h"

namespace nf {
namespace {

std::vector<float> randn(size_t n, std::mt19937& rng) {
  std::normal_distribution<float> d;
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(CpuOps, GemmMatchesNaive) {
  std::mt19937 rng(1);
  const int m = 7, n = 13, k = 33;
  auto x = randn(m * k, rng), w = randn(n * k, rng), y = randn(m * n, rng);
  auto y0 = y;
  cpu::gemm_xwt(x.data(), w.data(), y.data(), m, n, k, 1.0f);
  for (int i = 0; i < m; ++i)
    for (int j = 0; j < n; ++j) {
      double s = y0[i * n + j];
      for (int l = 0; l < k; ++l) s += static_cast<double>(x[i * k + l]) * w[j * k + l];
      EXPECT_NEAR(y[i * n + j], s, 1e-4);
    }
}

TEST(CpuOps, RmsNormAndSilu) {
  ThreadPool pool(2);
  std::mt19937 rng(2);
  const int t = 5, h = 64;
  auto x = randn(t * h, rng), w = randn(h, rng);
  std::vector<float> out(t * h);
  cpu::rms_norm(pool, x.data(), w.data(), out.data(), t, h, 1e-5f);
  for (int i = 0; i < t; ++i) {
    double ss = 0;
    for (int j = 0; j < h; ++j) ss += x[i * h + j] * x[i * h + j];
    const double inv = 1 / std::sqrt(ss / h + 1e-5);
    for (int j = 0; j < h; ++j) EXPECT_NEAR(out[i * h + j], w[j] * x[i * h + j] * inv, 1e-5);
  }
  auto gu = randn(t * 2 * h, rng);
  std::vector<float> act(t * h);
  cpu::silu_and_mul(pool, gu.data(), act.data(), t, h);
  for (int i = 0; i < t; ++i)
    for (int j = 0; j < h; ++j) {
      const double g = gu[i * 2 * h + j], u = gu[i * 2 * h + h + j];
      EXPECT_NEAR(act[i * h + j], g / (1 + std::exp(-g)) * u, 1e-5);
    }
}

TEST(CpuOps, RopeRotatesHalves) {
  ThreadPool pool(2);
  const int hd = 8;
  std::vector<float> x(2 * hd);
  std::iota(x.begin(), x.end(), 1.0f);
  auto x0 = x;
  const std::vector<float> inv_freq = {1.0f, 0.1f, 0.01f, 0.001f};
  const std::vector<int32_t> pos = {3};
  cpu::rope(pool, x.data(), 2 * hd, 1, 2, hd, pos, inv_freq);
  for (int h = 0; h < 2; ++h)
    for (int i = 0; i < hd / 2; ++i) {
      const double a = 3 * inv_freq[i];
      const double x1 = x0[h * hd + i], x2 = x0[h * hd + i + hd / 2];
      EXPECT_NEAR(x[h * hd + i], x1 * std::cos(a) - x2 * std::sin(a), 1e-5);
      EXPECT_NEAR(x[h * hd + i + hd / 2], x2 * std::cos(a) + x1 * std::sin(a), 1e-5);
    }
}

// Paged attention over a shuffled block table equals dense causal attention, for several
// requests of odd lengths (1, 7, 97) and GQA ratios 1, 4.
class PagedAttention : public ::testing::TestWithParam<int> {};

TEST_P(PagedAttention, MatchesDenseCausal) {
  const int group = GetParam();
  const int kv_heads = 2, heads = kv_heads * group, hd = 16, bs = 16;
  const std::vector<int> lens = {1, 7, 97};
  ThreadPool pool(2);
  std::mt19937 rng(5 + group);
  int total = 0;
  for (int l : lens) total += l;
  int64_t num_blocks = 0;
  for (int l : lens) num_blocks += (l + bs - 1) / bs;
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::vector<float> cache_data(num_blocks * 2 * kv_heads * bs * hd, NAN);
  cpu::PagedKv cache{cache_data.data(), num_blocks, kv_heads, bs, hd};

  const int q_stride = (heads + 2 * kv_heads) * hd;
  auto qkv = randn(static_cast<size_t>(total) * q_stride, rng);
  std::vector<int32_t> positions, seq_indptr = {0}, block_indptr = {0}, block_ids;
  std::vector<int64_t> slots;
  int next_block = 0;
  for (int l : lens) {
    const int nb = (l + bs - 1) / bs;
    for (int b = 0; b < nb; ++b) block_ids.push_back(perm[next_block++]);
    for (int p = 0; p < l; ++p) {
      positions.push_back(p);
      slots.push_back(static_cast<int64_t>(block_ids[block_indptr.back() + p / bs]) * bs + p % bs);
    }
    seq_indptr.push_back(seq_indptr.back() + l);
    block_indptr.push_back(static_cast<int32_t>(block_ids.size()));
  }
  cpu::kv_cache_write(cache, qkv.data() + heads * hd, qkv.data() + (heads + kv_heads) * hd, q_stride, slots);
  std::vector<float> out(static_cast<size_t>(total) * heads * hd);
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  cpu::paged_attention(pool, qkv.data(), q_stride, cache, {positions, seq_indptr, block_indptr, block_ids},
                       heads, scale, out.data());
  for (size_t s = 0; s < lens.size(); ++s) {
    for (int t = seq_indptr[s]; t < seq_indptr[s + 1]; ++t) {
      for (int h = 0; h < heads; ++h) {
        const int kvh = h / group;
        std::vector<double> w;
        double mx = -1e300;
        for (int u = seq_indptr[s]; u <= t; ++u) {
          double d = 0;
          for (int i = 0; i < hd; ++i)
            d += static_cast<double>(qkv[t * q_stride + h * hd + i]) * qkv[u * q_stride + (heads + kvh) * hd + i];
          w.push_back(d * scale);
          mx = std::max(mx, w.back());
        }
        double z = 0;
        for (auto& x : w) z += x = std::exp(x - mx);
        for (int i = 0; i < hd; ++i) {
          double o = 0;
          for (size_t u = 0; u < w.size(); ++u)
            o += w[u] / z * qkv[(seq_indptr[s] + u) * q_stride + (heads + kv_heads + kvh) * hd + i];
          ASSERT_NEAR(out[t * heads * hd + h * hd + i], o, 1e-5) << "seq " << s << " t " << t << " h " << h;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Gqa, PagedAttention, ::testing::Values(1, 4));

}  // namespace
}  // namespace nf

namespace nf {
namespace {

// Every index in [0, n) is visited exactly once, and no chunk is empty, for any n.
TEST(ThreadPool, ChunksCoverTheRangeExactly) {
  ThreadPool pool(2);
  for (int64_t n = 1; n < 300; ++n) {
    std::vector<std::atomic<int>> seen(n);
    std::atomic<int> empty{0};
    pool.parallel_for(n, [&](int64_t b, int64_t e) {
      if (e <= b) ++empty;
      for (int64_t i = b; i < e; ++i) ++seen[i];
    });
    EXPECT_EQ(empty.load(), 0) << n;
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[i].load(), 1) << n;
  }
}

TEST(CpuOps, GemmSplitAcrossThreadsMatchesOneCall) {
  ThreadPool pool(2);
  std::mt19937 rng(9);
  for (int64_t n : {128, 130, 577, 1000}) {
    const int m = 5, k = 48;
    auto x = randn(m * k, rng), w = randn(n * k, rng);
    std::vector<float> a(m * n), b(m * n);
    cpu::gemm_xwt(x.data(), w.data(), a.data(), m, n, k);
    cpu::gemm_xwt(x.data(), w.data(), b.data(), m, n, k, 0.0f, &pool);
    for (int64_t i = 0; i < m * n; ++i) ASSERT_NEAR(a[i], b[i], 1e-4) << n;
  }
}

}  // namespace
}  // namespace nf
