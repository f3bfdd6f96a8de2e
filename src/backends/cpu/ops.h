// Reference CPU operators (fp32 in, fp32 accumulate): the test oracle for the CUDA kernels.
// Matrices are row-major. Every op checks its shapes at entry.
#pragma once

#include <cstdint>
#include <span>

#include "common/thread_pool.h"

namespace nf::cpu {

// y[m, n] = x[m, k] @ w[n, k]^T + beta * y  (w in Hugging Face [out, in] layout). OpenBLAS.
// With a pool, the n output columns are split across its threads, each running a
// single-threaded OpenBLAS call (use with openblas_set_num_threads(1): one set of threads for
// everything instead of OpenBLAS's spinning workers competing with the pool's).
void gemm_xwt(const float* x, const float* w, float* y, int64_t m, int64_t n, int64_t k,
              float beta = 0.0f, ThreadPool* pool = nullptr);

// out[t, :] = x[t, :] * rsqrt(mean(x[t, :]^2) + eps) * weight. out may alias x.
void rms_norm(ThreadPool& pool, const float* x, const float* weight, float* out, int64_t tokens,
              int64_t hidden, float eps);

// Qwen3's q/k norm, in place: in each of `tokens` rows of x (row_stride floats apart), the
// first q_heads heads of head_dim get rms_norm with q_weight, the next k_heads with k_weight.
void head_rms_norm(ThreadPool& pool, float* x, int64_t row_stride, int64_t tokens, int64_t q_heads,
                   int64_t k_heads, int64_t head_dim, const float* q_weight, const float* k_weight,
                   float eps);

// Rotary embedding in Hugging Face's rotate-half layout, in place on the first `heads` heads
// of each token's row: for pair i < head_dim/2, (x[i], x[i + head_dim/2]) is rotated by
// positions[t] * inv_freq[i]. x: [tokens, row_stride] with head h at column h * head_dim.
void rope(ThreadPool& pool, float* x, int64_t row_stride, int64_t tokens, int64_t heads,
          int64_t head_dim, std::span<const int32_t> positions, std::span<const float> inv_freq);

// out[t, i] = silu(gate_up[t, i]) * gate_up[t, inter + i]; gate_up: [tokens, 2 * inter].
void silu_and_mul(ThreadPool& pool, const float* gate_up, float* out, int64_t tokens,
                  int64_t inter);

// The paged KV cache of one layer: [num_blocks, 2, kv_heads, block_size, head_dim] fp32.
struct PagedKv {
  float* data = nullptr;
  int64_t num_blocks = 0;
  int64_t kv_heads = 0;
  int64_t block_size = 0;
  int64_t head_dim = 0;
  float* key(int64_t block, int64_t head, int64_t offset) const {
    return data + (((block * 2 + 0) * kv_heads + head) * block_size + offset) * head_dim;
  }
  float* value(int64_t block, int64_t head, int64_t offset) const {
    return data + (((block * 2 + 1) * kv_heads + head) * block_size + offset) * head_dim;
  }
};

// Writes each token's K and V heads into its slot. k, v: rows of [tokens, row_stride].
void kv_cache_write(const PagedKv& cache, const float* k, const float* v, int64_t row_stride,
                    std::span<const int64_t> slot_mapping);

// Causal attention over the paged cache. Request b owns tokens [seq_indptr[b], seq_indptr[b+1])
// and, after this step's write, context_lens[b] tokens of KV; token t at position p attends to
// the request's positions 0..p. q: [tokens, q_stride] with heads*head_dim columns used;
// out: [tokens, heads * head_dim]. GQA: query head h reads KV head h / (heads / kv_heads).
struct AttentionBatch {
  std::span<const int32_t> positions;
  std::span<const int32_t> seq_indptr;
  std::span<const int32_t> block_indptr;
  std::span<const int32_t> block_ids;
};
void paged_attention(ThreadPool& pool, const float* q, int64_t q_stride, const PagedKv& cache,
                     const AttentionBatch& batch, int64_t heads, float scale, float* out);

}  // namespace nf::cpu
