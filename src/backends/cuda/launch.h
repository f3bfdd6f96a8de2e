// Raw kernel launchers: plain pointers and sizes, no argument checks. They exist so that the
// checked launchers (the public API, in *.cpp, compiled by the host compiler with fmt) stay
// apart from the device code (*.cu). Call the public functions, never these.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "backends/cuda/decode_ring.h"

namespace nf::cuda::launch {

using bf16 = __nv_bfloat16;

void embedding(const int32_t* ids, const bf16* table, bf16* out, int32_t* error, int64_t tokens,
               int64_t rows, int64_t first_id, int64_t vocab, int64_t hidden, cudaStream_t stream);

// residual == nullptr: plain RMSNorm of x; else residual += x first and the norm is of residual.
// Qwen3's q/k norm in place: per row of x (row_stride apart), heads [0, q_heads) normed with
// q_weight, [q_heads, q_heads + k_heads) with k_weight (head_dim each).
void head_rms_norm(bf16* x, int64_t row_stride, int64_t tokens, int q_heads, int k_heads,
                   int head_dim, const bf16* q_weight, const bf16* k_weight, float eps,
                   cudaStream_t stream);
void rms_norm(const bf16* x, bf16* residual, const bf16* weight, bf16* out, int64_t tokens,
              int64_t hidden, float eps, cudaStream_t stream);

void rope_kv_write(bf16* qkv, const int32_t* positions, const float* inv_freq, bf16* cache,
                   const int64_t* slots, int64_t tokens, int heads, int kv_heads, int head_dim,
                   int64_t block_size, int64_t num_slots, cudaStream_t stream);
constexpr int kRopeMaxHeadDim = 512;

void silu_and_mul(const bf16* gate_up, bf16* out, int64_t tokens, int64_t inter,
                  cudaStream_t stream);

// Whole-block KV copies (kv_copy.h), passed by value: no metadata upload.
constexpr int kKvCopyMaxLayers = 160;
constexpr int kKvCopyMaxBlocks = 64;  // blocks per call
struct KvBlockCopy {
  std::byte* layers[kKvCopyMaxLayers];
  int32_t blocks[kKvCopyMaxBlocks];
  int num_layers = 0, num_blocks = 0;
  size_t per_layer_bytes = 0;
  std::byte* staging = nullptr;
  bool gather = true;
};
void kv_block_copy(const KvBlockCopy& a, cudaStream_t stream);

}  // namespace nf::cuda::launch

namespace nf::cuda::launch {

// Paged attention (attention.cu). Device pointers and sizes as the public API documents them.
constexpr int kAttentionTile = 64;       // keys per step of the online softmax
constexpr int kAttentionMaxSplits = 64;  // context splits per (token, head)
constexpr int kAttentionMaxGroup = 8;    // query heads one CTA serves (larger groups use chunks)

struct AttentionLaunch {
  const bf16* q = nullptr;  // [T, q_stride], head h at columns [h*D, (h+1)*D)
  int64_t q_stride = 0;
  const bf16* kv = nullptr;  // [num_blocks, 2, kv_heads, block_size, D]
  int kv_heads = 0;
  int64_t block_size = 0;
  const int32_t* positions = nullptr;     // [T]
  const int32_t* seq_indptr = nullptr;    // [num_seqs + 1]
  const int32_t* block_indptr = nullptr;  // [num_seqs + 1]
  const int32_t* block_ids = nullptr;     // [block_indptr[num_seqs]]
  int num_seqs = 0;
  bf16* out = nullptr;  // [T, num_heads * D]
  int64_t tokens = 0;
  int num_heads = 0;
  int head_dim = 0;  // 64 or 128
  float scale = 0.0f;
  int num_splits = 1;
  float* workspace = nullptr;  // attention_workspace_floats(...) floats when num_splits > 1
  int64_t num_blocks = 0;      // blocks in the kv pool
  int sm_count = 0;            // SMs the stream may use (its green partition's); 0: the device's
  int decode_kernel = 0;       // paged_decode_attention: kDecodeStreams or kDecodePerRequest
  DecodeRing stream_ring;      // kDecodeStreams: the ring's shape (attention.h)
  int stream_debug = 0;        // kDecodeStreams experiments: 1 no math, 2 no loads
};

// Workspace of a split run: partial outputs [T, H, S, D] then (max, sum) pairs [T, H, S, 2].
inline int64_t attention_workspace_floats(int64_t tokens, int heads, int head_dim, int splits) {
  return tokens * heads * splits * (head_dim + 2);
}

void paged_attention(const AttentionLaunch& a, cudaStream_t stream);

// Merges split partials (the workspace above) into out [T, H*D] bf16.
void attention_combine(const AttentionLaunch& a, cudaStream_t stream);

// Decode rows on tensor cores (decode_attention.cu).
constexpr int kDecodePage = 16;      // tokens per KV block
constexpr int kDecodeMaxGroup = 16;  // query heads per kv head: the MMA's 16 rows
constexpr int kDecodeStreams = 0;    // persistent CTAs, one TMA-fed stream of work per warp
constexpr int kDecodePerRequest = 1;  // one CTA per (request, kv head, split), cp.async ring
// kv_map: the pool's TMA descriptor (a CUtensorMap, 128 bytes, made by attention.cpp) for
// kDecodeStreams; unused by kDecodePerRequest.
void paged_decode_attention(const AttentionLaunch& a, const void* kv_map, cudaStream_t stream);

}  // namespace nf::cuda::launch

namespace nf::cuda::launch {

// Sampling (sampling.cu); sampling.h documents the semantics.
constexpr int kSampleRowInfoBytes = 16;

struct SampleLaunch {
  const float* logits = nullptr;  // [rows, vocab]
  int64_t rows = 0;
  int vocab = 0;
  const void* params = nullptr;            // [rows] SampleRowParams
  const int32_t* banned_indptr = nullptr;  // [rows + 1] or null
  const int32_t* banned_ids = nullptr;
  int32_t* tokens = nullptr;      // [rows]
  float* logprobs = nullptr;      // [rows]
  int32_t* top_ids = nullptr;     // [rows, top_cols]
  float* top_logprobs = nullptr;  // [rows, top_cols]
  int top_cols = 0;
  void* row_info = nullptr;       // [rows] kSampleRowInfoBytes each
  int32_t* seg_begin = nullptr;   // [rows]
  int32_t* seg_end = nullptr;     // [rows]
  const int32_t* iota = nullptr;  // [sort_rows, vocab]
  float* sorted_keys = nullptr;   // [sort_rows, vocab]
  int32_t* sorted_ids = nullptr;  // [sort_rows, vocab]
  int sort_rows = 0;
  void* cub_temp = nullptr;
  size_t cub_temp_bytes = 0;
  bool sort = true;  // false: no row needs the sort (known from the host's parameters)
};

size_t sample_cub_temp_bytes(int sort_rows, int vocab);
void sample_fill_iota(int32_t* iota, int sort_rows, int vocab, cudaStream_t stream);
void sample(const SampleLaunch& s, cudaStream_t stream);
// logits[r, c] = -inf for every row r < rows and column begin <= c < vocab.
void mask_logit_columns(float* logits, int64_t rows, int vocab, int begin, cudaStream_t stream);

}  // namespace nf::cuda::launch
