#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/common.cuh"
#include "backends/cuda/launch.h"

namespace nf::cuda {
namespace {

using kernels::bf16;

constexpr int kThreads = 128;
constexpr int kMaxHalf = launch::kRopeMaxHeadDim / 2;

// One CTA per token. cos/sin of the token's angles go to shared memory once; then each thread
// rotates 8-element chunks (x1 = x[i..i+8), x2 = x[half+i..half+i+8)) of the q and k heads,
// writing k chunks to the cache as well, and finally copies the v heads.
__global__ void __launch_bounds__(kThreads)
    rope_kv_kernel(bf16* __restrict__ qkv, const int32_t* __restrict__ positions,
                   const float* __restrict__ inv_freq, bf16* __restrict__ cache,
                   const int64_t* __restrict__ slots, int heads, int kv_heads, int head_dim,
                   int64_t block_size, int64_t num_slots) {
  __shared__ float cos_s[kMaxHalf], sin_s[kMaxHalf];
  const int64_t t = blockIdx.x;
  const int half = head_dim / 2;
  const float pos = static_cast<float>(positions[t]);
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float a = pos * inv_freq[i];  // fp32 angle, as transformers computes it
    sincosf(a, &sin_s[i], &cos_s[i]);
  }
  __syncthreads();

  const int64_t row_len = static_cast<int64_t>(heads + 2 * kv_heads) * head_dim;
  bf16* row = qkv + t * row_len;
  const int64_t slot = slots[t];
  const bool write = slot >= 0 && slot < num_slots;
  const int64_t block = write ? slot / block_size : 0, offset = write ? slot % block_size : 0;
  // Element (kind, kv_head, d) of the cache for this token's slot; kind 0 = K, 1 = V.
  auto cache_at = [&](int kind, int kvh) {
    return cache + (((block * 2 + kind) * kv_heads + kvh) * block_size + offset) * head_dim;
  };

  const int chunks = half / 8;
  const int rot_items = (heads + kv_heads) * chunks;
  for (int it = threadIdx.x; it < rot_items; it += blockDim.x) {
    const int h = it / chunks, c = (it % chunks) * 8;
    bf16* v = row + static_cast<int64_t>(h) * head_dim;
    float x1[8], x2[8], y1[8], y2[8];
    kernels::load_bf16x8(v + c, x1);
    kernels::load_bf16x8(v + half + c, x2);
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float cs = cos_s[c + j], sn = sin_s[c + j];
      y1[j] = x1[j] * cs - x2[j] * sn;
      y2[j] = x2[j] * cs + x1[j] * sn;
    }
    kernels::store_bf16x8(v + c, y1);
    kernels::store_bf16x8(v + half + c, y2);
    if (h >= heads && write) {
      bf16* k = cache_at(0, h - heads);
      kernels::store_bf16x8(k + c, y1);
      kernels::store_bf16x8(k + half + c, y2);
    }
  }
  if (!write) return;
  const int vchunks = head_dim / 8;
  const bf16* vsrc = row + static_cast<int64_t>(heads + kv_heads) * head_dim;
  for (int it = threadIdx.x; it < kv_heads * vchunks; it += blockDim.x) {
    const int h = it / vchunks, c = (it % vchunks) * 8;
    *reinterpret_cast<uint4*>(cache_at(1, h) + c) =
        *reinterpret_cast<const uint4*>(vsrc + static_cast<int64_t>(h) * head_dim + c);
  }
}

}  // namespace

void launch::rope_kv_write(bf16* qkv, const int32_t* positions, const float* inv_freq, bf16* cache,
                           const int64_t* slots, int64_t tokens, int heads, int kv_heads,
                           int head_dim, int64_t block_size, int64_t num_slots,
                           cudaStream_t stream) {
  rope_kv_kernel<<<static_cast<unsigned>(tokens), kThreads, 0, stream>>>(
      qkv, positions, inv_freq, cache, slots, heads, kv_heads, head_dim, block_size, num_slots);
  NF_CUDA_CHECK_LAUNCH();
}

}  // namespace nf::cuda
