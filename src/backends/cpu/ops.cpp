#include "backends/cpu/ops.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common/status.h"

namespace nf::cpu {

void gemm_xwt(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k,
              float beta, ThreadPool* pool) {
  NF_CHECK(m >= 0 && n > 0 && k > 0, "gemm_xwt: bad shape m={} n={} k={}", m, n, k);
  if (m == 0) return;
  auto cols = [&](int64_t j0, int64_t j1) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(m),
                static_cast<blasint>(j1 - j0), static_cast<blasint>(k), 1.0f, x,
                static_cast<blasint>(k), w + j0 * k, static_cast<blasint>(k), beta, y + j0,
                static_cast<blasint>(n));
  };
  if (!pool || pool->size() == 1 || n < 128) {
    cols(0, n);
    return;
  }
  // Column chunks of 64, so each call still gets full micro-kernel tiles.
  const int64_t blocks = (n + 63) / 64;
  pool->parallel_for(blocks, [&](int64_t b0, int64_t b1) { cols(b0 * 64, std::min(n, b1 * 64)); });
}

void rms_norm(ThreadPool& pool, const float* x, const float* weight, float* out, int64_t tokens,
              int64_t hidden, float eps) {
  NF_CHECK(tokens >= 0 && hidden > 0, "rms_norm: bad shape {}x{}", tokens, hidden);
  pool.parallel_for(tokens, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const float* xr = x + t * hidden;
      float* o = out + t * hidden;
      double ss = 0;
      for (int64_t i = 0; i < hidden; ++i) ss += static_cast<double>(xr[i]) * xr[i];
      const float inv = 1.0f / std::sqrt(static_cast<float>(ss / hidden) + eps);
      for (int64_t i = 0; i < hidden; ++i) o[i] = weight[i] * (xr[i] * inv);
    }
  }, 4);
}

namespace {
// One row of rms_norm (the same arithmetic, so that a head normed here equals rms_norm's).
void rms_norm_row(const float* x, const float* weight, float* out, int64_t n, float eps) {
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) ss += static_cast<double>(x[i]) * x[i];
  const float inv = 1.0f / std::sqrt(static_cast<float>(ss / n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = weight[i] * (x[i] * inv);
}
}  // namespace

void head_rms_norm(ThreadPool& pool, float* x, int64_t row_stride, int64_t tokens, int64_t q_heads,
                   int64_t k_heads, int64_t head_dim, const float* q_weight, const float* k_weight,
                   float eps) {
  NF_CHECK((q_heads + k_heads) * head_dim <= row_stride, "head_rms_norm: {} heads of {} exceed row {}",
           q_heads + k_heads, head_dim, row_stride);
  pool.parallel_for(tokens, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      float* row = x + t * row_stride;
      for (int64_t h = 0; h < q_heads + k_heads; ++h)
        rms_norm_row(row + h * head_dim, h < q_heads ? q_weight : k_weight, row + h * head_dim,
                     head_dim, eps);
    }
  }, 4);
}

void rope(ThreadPool& pool, float* x, int64_t row_stride, int64_t tokens, int64_t heads,
          int64_t head_dim, std::span<const int32_t> positions, std::span<const float> inv_freq) {
  NF_CHECK(head_dim % 2 == 0 && static_cast<int64_t>(inv_freq.size()) == head_dim / 2,
           "rope: head_dim {} needs {} frequencies, got {}", head_dim, head_dim / 2,
           inv_freq.size());
  NF_CHECK(static_cast<int64_t>(positions.size()) == tokens, "rope: {} positions for {} tokens",
           positions.size(), tokens);
  NF_CHECK(heads * head_dim <= row_stride, "rope: {} heads of {} exceed row {}", heads, head_dim,
           row_stride);
  const int64_t half = head_dim / 2;
  pool.parallel_for(tokens, [&](int64_t b, int64_t e) {
    std::vector<float> cs(half), sn(half);
    for (int64_t t = b; t < e; ++t) {
      const float pos = static_cast<float>(positions[t]);
      for (int64_t i = 0; i < half; ++i) {
        const float a = pos * inv_freq[i];  // fp32 angle, as transformers computes it
        cs[i] = std::cos(a);
        sn[i] = std::sin(a);
      }
      for (int64_t h = 0; h < heads; ++h) {
        float* v = x + t * row_stride + h * head_dim;
        for (int64_t i = 0; i < half; ++i) {
          const float x1 = v[i], x2 = v[i + half];
          v[i] = x1 * cs[i] - x2 * sn[i];
          v[i + half] = x2 * cs[i] + x1 * sn[i];
        }
      }
    }
  }, 1);
}

void silu_and_mul(ThreadPool& pool, const float* gate_up, float* out, int64_t tokens,
                  int64_t inter) {
  pool.parallel_for(tokens, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const float* g = gate_up + t * 2 * inter;
      const float* u = g + inter;
      float* o = out + t * inter;
      for (int64_t i = 0; i < inter; ++i) o[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
    }
  }, 1);
}

void kv_cache_write(const PagedKv& cache, const float* k, const float* v, int64_t row_stride,
                    std::span<const int64_t> slot_mapping) {
  const int64_t hd = cache.head_dim;
  for (size_t t = 0; t < slot_mapping.size(); ++t) {
    const int64_t slot = slot_mapping[t];
    const int64_t block = slot / cache.block_size, off = slot % cache.block_size;
    NF_CHECK(slot >= 0 && block < cache.num_blocks, "kv_cache_write: slot {} outside {} blocks",
             slot, cache.num_blocks);
    for (int64_t h = 0; h < cache.kv_heads; ++h) {
      std::copy_n(k + t * row_stride + h * hd, hd, cache.key(block, h, off));
      std::copy_n(v + t * row_stride + h * hd, hd, cache.value(block, h, off));
    }
  }
}

void paged_attention(ThreadPool& pool, const float* q, int64_t q_stride, const PagedKv& cache,
                     const AttentionBatch& batch, int64_t heads, float scale, float* out) {
  const int64_t hd = cache.head_dim, bs = cache.block_size;
  NF_CHECK(cache.kv_heads > 0 && heads % cache.kv_heads == 0,
           "paged_attention: {} query heads over {} kv heads", heads, cache.kv_heads);
  const int64_t group = heads / cache.kv_heads;
  const int64_t num_seqs = static_cast<int64_t>(batch.seq_indptr.size()) - 1;
  const int64_t tokens = batch.seq_indptr[num_seqs];
  NF_CHECK(static_cast<int64_t>(batch.positions.size()) == tokens,
           "paged_attention: {} positions for {} tokens", batch.positions.size(), tokens);
  // Token -> request, so the parallel loop can run over (token, head) pairs.
  std::vector<int32_t> token_seq(tokens);
  for (int64_t s = 0; s < num_seqs; ++s)
    for (int32_t t = batch.seq_indptr[s]; t < batch.seq_indptr[s + 1]; ++t) token_seq[t] = s;
  pool.parallel_for(tokens * heads, [&](int64_t b, int64_t e) {
    std::vector<float> scores;
    std::vector<double> acc(hd);
    for (int64_t job = b; job < e; ++job) {
      const int64_t t = job / heads, h = job % heads, kvh = h / group;
      const int64_t s = token_seq[t];
      const int64_t n_ctx = batch.positions[t] + 1;
      const int32_t* blocks = batch.block_ids.data() + batch.block_indptr[s];
      NF_CHECK(n_ctx <= (batch.block_indptr[s + 1] - batch.block_indptr[s]) * bs,
               "paged_attention: position {} beyond the block table", n_ctx - 1);
      const float* qv = q + t * q_stride + h * hd;
      scores.resize(n_ctx);
      float mx = -INFINITY;
      for (int64_t p = 0; p < n_ctx; ++p) {
        const float* kv = cache.key(blocks[p / bs], kvh, p % bs);
        float dot = 0;
        for (int64_t i = 0; i < hd; ++i) dot += qv[i] * kv[i];
        scores[p] = dot * scale;
        mx = std::max(mx, scores[p]);
      }
      double denom = 0;
      std::fill(acc.begin(), acc.end(), 0.0);
      for (int64_t p = 0; p < n_ctx; ++p) {
        const float w = std::exp(scores[p] - mx);
        denom += w;
        const float* vv = cache.value(blocks[p / bs], kvh, p % bs);
        for (int64_t i = 0; i < hd; ++i) acc[i] += static_cast<double>(w) * vv[i];
      }
      float* o = out + t * heads * hd + h * hd;
      for (int64_t i = 0; i < hd; ++i) o[i] = static_cast<float>(acc[i] / denom);
    }
  }, 1);
}

}  // namespace nf::cpu
