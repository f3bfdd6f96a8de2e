#include "backends/cuda/launch.h"

namespace nf::cuda::launch {
namespace {

__global__ void touch_kernel(const char* base, size_t count, size_t stride) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= count) return;
  unsigned v;
  // volatile: the load must happen although its value is unused.
  asm volatile("ld.global.cg.u32 %0, [%1];" : "=r"(v) : "l"(base + i * stride));
}

}  // namespace

void touch_pages(const void* base, size_t count, size_t stride, cudaStream_t stream) {
  constexpr unsigned kThreads = 256;
  const unsigned blocks = static_cast<unsigned>((count + kThreads - 1) / kThreads);
  touch_kernel<<<blocks, kThreads, 0, stream>>>(static_cast<const char*>(base), count, stride);
}

}  // namespace nf::cuda::launch
