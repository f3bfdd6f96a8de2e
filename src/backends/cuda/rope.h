// Rotary position embedding fused with the paged KV-cache write.
#pragma once

#include <cuda_runtime_api.h>

#include "backends/cuda/tensor.h"

namespace nf::cuda {

struct RopeKvShape {
  int num_heads = 0;     // query heads H
  int num_kv_heads = 0;  // key/value heads KVH
  int head_dim = 0;      // D, a multiple of 16
};

// For each token t (Hugging Face rotate-half layout, fp32 angle = positions[t] * inv_freq[i]):
// rotates the H query heads and KVH key heads of qkv[t] in place, then writes the rotated key
// heads and the value heads into the paged cache at slot_mapping[t] (block = slot / block_size,
// offset = slot % block_size). A negative slot (padding) writes nothing to the cache.
//   qkv:          [T, (H + 2*KVH) * D] bf16, each row [q heads | k heads | v heads]
//   positions:    [T] i32
//   inv_freq:     [D/2] f32 (precomputed, scaled frequencies included)
//   kv_cache:     [num_blocks, 2, KVH, block_size, D] bf16 (one layer; index 0 = K, 1 = V)
//   slot_mapping: [T] i64; slots at or beyond num_blocks * block_size are skipped too
void rope_kv_write(const RopeKvShape& shape, const TensorView& qkv, const TensorView& positions,
                   const TensorView& inv_freq, const TensorView& kv_cache,
                   const TensorView& slot_mapping, cudaStream_t stream);

}  // namespace nf::cuda
