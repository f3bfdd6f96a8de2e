// RMSNorm on the GPU, plain and fused with the residual add. bf16 in and out, fp32 math.
#pragma once

#include <cuda_runtime_api.h>

#include "backends/cuda/tensor.h"

namespace nf::cuda {

// out[t, :] = x[t, :] * rsqrt(mean(x[t, :]^2) + eps) * weight.
//   x: [T, hidden] bf16; weight: [hidden] bf16; out: [T, hidden] bf16 (may alias x).
void rms_norm(const TensorView& x, const TensorView& weight, const TensorView& out, float eps,
              cudaStream_t stream);

// residual[t, :] += x[t, :] (rounded to bf16, as a bf16 model does), then
// out[t, :] = rms_norm(residual[t, :]) * weight.
//   x: [T, hidden] bf16 (may alias out); residual: [T, hidden] bf16, updated in place;
//   weight: [hidden] bf16; out: [T, hidden] bf16.
void add_rms_norm(const TensorView& x, const TensorView& residual, const TensorView& weight,
                  const TensorView& out, float eps, cudaStream_t stream);

// Qwen3's q/k norm, in place on the packed qkv rows: in each row of qkv, the first q_heads
// heads of head_dim are rms_norm'd with q_weight, the next k_heads with k_weight.
//   qkv: [T, >= (q_heads + k_heads) * head_dim] bf16; q_weight, k_weight: [head_dim] bf16.
void head_rms_norm(const TensorView& qkv, int q_heads, int k_heads, int head_dim,
                   const TensorView& q_weight, const TensorView& k_weight, float eps,
                   cudaStream_t stream);

}  // namespace nf::cuda
