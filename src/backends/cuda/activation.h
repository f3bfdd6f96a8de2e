// Gated activations on the GPU.
#pragma once

#include <cuda_runtime_api.h>

#include "backends/cuda/tensor.h"

namespace nf::cuda {

// out[t, i] = silu(gate_up[t, i]) * gate_up[t, I + i], in fp32, rounded once to bf16.
//   gate_up: [T, 2*I] bf16, each row [gate | up]
//   out:     [T, I] bf16
void silu_and_mul(const TensorView& gate_up, const TensorView& out, cudaStream_t stream);

}  // namespace nf::cuda
