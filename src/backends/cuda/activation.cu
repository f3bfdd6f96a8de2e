#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/common.cuh"
#include "backends/cuda/launch.h"

namespace nf::cuda {
namespace {

using kernels::bf16;

constexpr int kThreads = 256;

__device__ __forceinline__ float silu_mul(float g, float u) {
  return g / (1.0f + expf(-g)) * u;
}

// grid.x = token, grid.y = chunk of kThreads * kVec elements of the row.
template <int kVec>
__global__ void __launch_bounds__(kThreads)
    silu_and_mul_kernel(const bf16* __restrict__ gate_up, bf16* __restrict__ out, int64_t inter) {
  const int64_t t = blockIdx.x;
  const int64_t i = (static_cast<int64_t>(blockIdx.y) * kThreads + threadIdx.x) * kVec;
  if (i >= inter) return;
  const bf16* g = gate_up + t * 2 * inter + i;
  const bf16* u = g + inter;
  bf16* o = out + t * inter + i;
  if constexpr (kVec == 8) {
    float gv[8], uv[8];
    kernels::load_bf16x8(g, gv);
    kernels::load_bf16x8(u, uv);
#pragma unroll
    for (int j = 0; j < 8; ++j) gv[j] = silu_mul(gv[j], uv[j]);
    kernels::store_bf16x8(o, gv);
  } else {
    *o = __float2bfloat16(silu_mul(__bfloat162float(*g), __bfloat162float(*u)));
  }
}

}  // namespace

void launch::silu_and_mul(const bf16* gate_up, bf16* out, int64_t tokens, int64_t inter,
                          cudaStream_t stream) {
  const bool vec = inter % 8 == 0 && reinterpret_cast<uintptr_t>(gate_up) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const int vec_len = vec ? 8 : 1;
  const int64_t chunks = kernels::ceil_div(inter, int64_t{kThreads} * vec_len);
  const dim3 grid(static_cast<unsigned>(tokens), static_cast<unsigned>(chunks));
  if (vec) {
    silu_and_mul_kernel<8><<<grid, kThreads, 0, stream>>>(gate_up, out, inter);
  } else {
    silu_and_mul_kernel<1><<<grid, kThreads, 0, stream>>>(gate_up, out, inter);
  }
  NF_CUDA_CHECK_LAUNCH();
}

}  // namespace nf::cuda
