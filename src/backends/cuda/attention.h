// Paged attention over the bf16 KV cache: causal, GQA, head_dim 64 or 128, fp32 online softmax.
// The plain kernel of our own, the test twin of the library kernels that come later.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "backends/cuda/decode_ring.h"
#include "backends/cuda/tensor.h"

namespace nf::cuda {

// Request b owns tokens [seq_indptr[b], seq_indptr[b+1]) and the blocks
// block_ids[block_indptr[b] .. block_indptr[b+1]) in position order; token t attends to its
// request's positions 0..positions[t] (the cache already holds this step's K and V). Query head
// h reads kv head h / (H / KVH). A token whose position lies outside its block table gets NaN.
struct PagedAttentionArgs {
  TensorView q;             // [T, q_cols] bf16, q_cols >= H*D; head h at columns [h*D, (h+1)*D)
                            // (so q may be the packed qkv rows)
  TensorView kv_cache;      // [num_blocks, 2, KVH, block_size, D] bf16, one layer
  TensorView positions;     // [T] i32
  TensorView seq_indptr;    // [B+1] i32
  TensorView block_indptr;  // [B+1] i32
  TensorView block_ids;     // [block_indptr[B]] i32
  TensorView out;           // [T, H*D] bf16
  TensorView workspace;     // u8 [>= paged_attention_workspace_bytes(...)], when num_splits > 1
  int num_heads = 0;        // H
  float scale = 0.0f;       // softmax scale, usually 1/sqrt(D)
  int num_splits = 1;       // context splits per (token, head), from paged_attention_num_splits
  // paged_decode_attention only:
  int sm_count = 0;       // SMs the stream may use (its green partition's); 0: the whole device's
  int decode_kernel = 0;  // launch::kDecodeStreams (default) or launch::kDecodePerRequest
  // The streaming kernel's experiments (kernel benchmarks only; the defaults are the measured
  // best, docs/nano-batch.md): its ring shape, and stream_debug 1 (no math) or 2 (no loads:
  // the output is then meaningless).
  launch::DecodeRing stream_ring;
  int stream_debug = 0;
};

// Splits that keep every SM busy when few (token, kv head) pairs have long contexts;
// 1 when the batch alone fills the GPU. max_context: the longest context in the batch.
int paged_attention_num_splits(int64_t tokens, int num_heads, int num_kv_heads, int64_t max_context,
                               int sm_count);

// Workspace for a run with num_splits > 1 (0 bytes for one split).
size_t paged_attention_workspace_bytes(int64_t tokens, int num_heads, int head_dim, int num_splits);

void paged_attention(const PagedAttentionArgs& args, cudaStream_t stream);

// The same for a batch of decode rows only (each request has one query token), on tensor cores
// (decode_attention.cu): blocks of 16 tokens, up to 16 query heads per kv head. Splits as
// above (each request's context is cut into num_splits ranges of whole key tiles). seq_indptr
// must be 0, 1, ..., B (the streaming kernel takes row b for request b). The default kernel runs
// one persistent CTA per SM of `sm_count` (its grid must fit the stream's SMs).
void paged_decode_attention(const PagedAttentionArgs& args, cudaStream_t stream);

}  // namespace nf::cuda
