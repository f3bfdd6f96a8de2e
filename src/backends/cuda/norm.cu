#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/common.cuh"
#include "backends/cuda/launch.h"

namespace nf::cuda {
namespace {

using kernels::bf16;

// Loads and stores kVec consecutive bf16 values (kVec 8: one 16-byte access).
template <int kVec>
__device__ __forceinline__ void load_vec(const bf16* p, float (&v)[kVec]) {
  if constexpr (kVec == 8) {
    kernels::load_bf16x8(p, v);
  } else {
    v[0] = __bfloat162float(*p);
  }
}

template <int kVec>
__device__ __forceinline__ void store_vec(bf16* p, const float (&v)[kVec]) {
  if constexpr (kVec == 8) {
    kernels::store_bf16x8(p, v);
  } else {
    *p = __float2bfloat16(v[0]);
  }
}

// One CTA per token. Pass 1 (with kAdd: residual += x, stored rounded to bf16) sums the squares;
// pass 2 re-reads the row (each thread its own elements, so x may alias out) and writes
// w * (v * inv_rms).
template <int kVec, bool kAdd>
__global__ void rms_norm_kernel(const bf16* x, bf16* residual, const bf16* __restrict__ weight,
                                bf16* out, int64_t hidden, float eps) {
  __shared__ float scratch[32];
  const int64_t row = static_cast<int64_t>(blockIdx.x) * hidden;
  const int64_t n = hidden / kVec;
  const bf16* src = kAdd ? residual + row : x + row;
  float ss = 0.0f;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    float v[kVec];
    load_vec<kVec>(x + row + i * kVec, v);
    if constexpr (kAdd) {
      float r[kVec];
      load_vec<kVec>(residual + row + i * kVec, r);
#pragma unroll
      for (int j = 0; j < kVec; ++j) v[j] = __bfloat162float(__float2bfloat16(v[j] + r[j]));
      store_vec<kVec>(residual + row + i * kVec, v);
    }
#pragma unroll
    for (int j = 0; j < kVec; ++j) ss += v[j] * v[j];
  }
  ss = kernels::block_sum(ss, scratch);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(hidden) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    float v[kVec], w[kVec];
    load_vec<kVec>(src + i * kVec, v);
    load_vec<kVec>(weight + i * kVec, w);
#pragma unroll
    for (int j = 0; j < kVec; ++j) v[j] = w[j] * (v[j] * inv);
    store_vec<kVec>(out + row + i * kVec, v);
  }
}

bool aligned16(const void* p) {
  return reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

template <bool kAdd>
void launch_rms_norm(const bf16* x, bf16* residual, const bf16* weight, bf16* out, int64_t tokens,
                     int64_t hidden, float eps, cudaStream_t stream) {
  const bool vec = hidden % 8 == 0 && aligned16(x) && aligned16(weight) && aligned16(out) &&
                   (!kAdd || aligned16(residual));
  const int64_t per_row = vec ? hidden / 8 : hidden;
  const int threads = static_cast<int>(std::min<int64_t>(512, kernels::ceil_div(per_row, 32) * 32));
  const dim3 grid(static_cast<unsigned>(tokens));
  if (vec) {
    rms_norm_kernel<8, kAdd><<<grid, threads, 0, stream>>>(x, residual, weight, out, hidden, eps);
  } else {
    rms_norm_kernel<1, kAdd><<<grid, threads, 0, stream>>>(x, residual, weight, out, hidden, eps);
  }
  NF_CUDA_CHECK_LAUNCH();
}

// One warp per (token, head): the head's sum of squares by shuffles, then w * (v * inv_rms),
// fp32 math as rms_norm_kernel, in place.
constexpr int kHeadNormWarps = 4;
__global__ void head_rms_norm_kernel(bf16* x, int64_t row_stride, int64_t tokens, int q_heads,
                                     int k_heads, int head_dim, const bf16* __restrict__ q_weight,
                                     const bf16* __restrict__ k_weight, float eps) {
  const int heads = q_heads + k_heads;
  const int lane = threadIdx.x % 32;
  const int64_t item = static_cast<int64_t>(blockIdx.x) * kHeadNormWarps + threadIdx.x / 32;
  if (item >= tokens * heads) return;
  const int64_t t = item / heads;
  const int h = static_cast<int>(item % heads);
  bf16* row = x + t * row_stride + static_cast<int64_t>(h) * head_dim;
  const bf16* w = h < q_heads ? q_weight : k_weight;
  float ss = 0.0f;
  for (int i = lane; i < head_dim; i += 32) {
    const float v = __bfloat162float(row[i]);
    ss += v * v;
  }
#pragma unroll
  for (int o = 16; o > 0; o /= 2) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  const float inv = 1.0f / sqrtf(ss / static_cast<float>(head_dim) + eps);
  for (int i = lane; i < head_dim; i += 32)
    row[i] = __float2bfloat16(__bfloat162float(w[i]) * (__bfloat162float(row[i]) * inv));
}

}  // namespace

void launch::head_rms_norm(bf16* x, int64_t row_stride, int64_t tokens, int q_heads, int k_heads,
                           int head_dim, const bf16* q_weight, const bf16* k_weight, float eps,
                           cudaStream_t stream) {
  const int64_t items = tokens * (q_heads + k_heads);
  if (items == 0) return;
  const auto blocks = static_cast<unsigned>(kernels::ceil_div(items, kHeadNormWarps));
  head_rms_norm_kernel<<<blocks, 32 * kHeadNormWarps, 0, stream>>>(
      x, row_stride, tokens, q_heads, k_heads, head_dim, q_weight, k_weight, eps);
  NF_CUDA_CHECK_LAUNCH();
}

void launch::rms_norm(const bf16* x, bf16* residual, const bf16* weight, bf16* out, int64_t tokens,
                      int64_t hidden, float eps, cudaStream_t stream) {
  if (residual == nullptr) {
    launch_rms_norm<false>(x, nullptr, weight, out, tokens, hidden, eps, stream);
  } else {
    launch_rms_norm<true>(x, residual, weight, out, tokens, hidden, eps, stream);
  }
}

}  // namespace nf::cuda
