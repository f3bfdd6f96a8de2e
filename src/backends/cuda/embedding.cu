#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/common.cuh"
#include "backends/cuda/launch.h"

namespace nf::cuda {
namespace {

using kernels::bf16;

// One CTA per token. kVec elements per access: 8 (16-byte) when the row allows it, else 1.
template <int kVec>
__global__ void embedding_kernel(const int32_t* __restrict__ ids, const bf16* __restrict__ table,
                                 bf16* __restrict__ out, int32_t* __restrict__ error, int64_t rows,
                                 int64_t first_id, int64_t vocab, int64_t hidden) {
  const int64_t t = blockIdx.x;
  const int32_t id = ids[t];
  if ((id < 0 || id >= vocab) && threadIdx.x == 0) *error = 1;
  const int64_t row = static_cast<int64_t>(id) - first_id;
  const bool valid = id >= 0 && id < vocab && row >= 0 && row < rows;
  bf16* dst = out + t * hidden;
  const bf16* src = table + (valid ? row : 0) * hidden;
  const int64_t n = hidden / kVec;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    if constexpr (kVec == 8) {
      const uint4 v = valid ? reinterpret_cast<const uint4*>(src)[i] : make_uint4(0, 0, 0, 0);
      reinterpret_cast<uint4*>(dst)[i] = v;
    } else {
      dst[i] = valid ? src[i] : __float2bfloat16(0.0f);
    }
  }
}

}  // namespace

void launch::embedding(const int32_t* ids, const bf16* table, bf16* out, int32_t* error,
                       int64_t tokens, int64_t rows, int64_t first_id, int64_t vocab,
                       int64_t hidden, cudaStream_t stream) {
  const bool vec = hidden % 8 == 0 && reinterpret_cast<uintptr_t>(table) % 16 == 0 &&
                   reinterpret_cast<uintptr_t>(out) % 16 == 0;
  const int64_t per_row = vec ? hidden / 8 : hidden;
  const int threads = static_cast<int>(std::min<int64_t>(256, kernels::ceil_div(per_row, 32) * 32));
  const dim3 grid(static_cast<unsigned>(tokens));
  if (vec) {
    embedding_kernel<8>
        <<<grid, threads, 0, stream>>>(ids, table, out, error, rows, first_id, vocab, hidden);
  } else {
    embedding_kernel<1>
        <<<grid, threads, 0, stream>>>(ids, table, out, error, rows, first_id, vocab, hidden);
  }
  NF_CUDA_CHECK_LAUNCH();
}

}  // namespace nf::cuda
