// The kernel of peer_allreduce.h (the host side is peer_allreduce.cpp).
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/common.cuh"
#include "backends/cuda/peer_allreduce.h"

namespace nf::cuda {
namespace {

using kernels::bf16;
constexpr int kThreads = 512;
constexpr int kUnroll = 4;  // 16-byte chunks per thread in flight

__device__ __forceinline__ void store_release_sys(uint32_t* p, uint32_t v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}

__device__ __forceinline__ uint32_t load_acquire_sys(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ void add8(float (&acc)[8], const uint4& raw) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&raw);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __bfloat1622float2(h[i]);
    acc[2 * i] += f.x;
    acc[2 * i + 1] += f.y;
  }
}

__global__ void __launch_bounds__(kThreads) peer_allreduce_kernel(const PeerAllReduce::Args a) {
  const int b = blockIdx.x, tid = threadIdx.x;
  __shared__ uint32_t s_epoch;
  if (tid == 0) s_epoch = a.epochs[b] + 1;
  __syncthreads();
  const uint32_t e = s_epoch;
  const int64_t half = (e & 1) * a.cap;
  const int64_t per = (a.chunks + gridDim.x - 1) / gridDim.x;
  const int64_t c0 = min(a.chunks, b * per), c1 = min(a.chunks, c0 + per);
  uint4* x = static_cast<uint4*>(a.x);
  uint4* mine = reinterpret_cast<uint4*>(static_cast<bf16*>(a.staging[a.rank]) + half);

  // 1. Stage this CTA's slice of the rank's partial sums.
  for (int64_t c = c0 + tid; c < c1; c += kThreads) mine[c] = x[c];
  __syncthreads();
  // 2. Thread p signals peer p and waits for it.
  if (tid < a.world && tid != a.rank) {
    __threadfence_system();  // the CTA's staged slice before the flag, for every peer
    store_release_sys(a.flags[tid] + a.rank * PeerAllReduce::kMaxCtas + b, e);
    const uint32_t* mine_flag = a.flags[a.rank] + tid * PeerAllReduce::kMaxCtas + b;
    while (static_cast<int32_t>(load_acquire_sys(mine_flag) - e) < 0) {
    }
  }
  __syncthreads();
  // 3. Sum over the ranks in rank order, kUnroll chunks per thread at a time.
  for (int64_t base = c0 + tid; base < c1; base += static_cast<int64_t>(kThreads) * kUnroll) {
    float acc[kUnroll][8] = {};
#pragma unroll 1
    for (int p = 0; p < a.world; ++p) {
      const uint4* src =
          reinterpret_cast<const uint4*>(static_cast<const bf16*>(a.staging[p]) + half);
      uint4 raw[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        const int64_t c = base + static_cast<int64_t>(u) * kThreads;
        if (c < c1) raw[u] = p == a.rank ? src[c] : __ldcv(src + c);  // peers: never cached
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u)
        if (base + static_cast<int64_t>(u) * kThreads < c1) add8(acc[u], raw[u]);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t c = base + static_cast<int64_t>(u) * kThreads;
      if (c < c1) kernels::store_bf16x8(reinterpret_cast<bf16*>(x + c), acc[u]);
    }
  }
  if (tid == 0) a.epochs[b] = e;
}

}  // namespace

void PeerAllReduce::launch(const Args& a, int ctas, cudaStream_t stream) {
  peer_allreduce_kernel<<<ctas, kThreads, 0, stream>>>(a);
  NF_CUDA_CHECK_LAUNCH();
}

}  // namespace nf::cuda
