// Token embedding lookup on the GPU.
#pragma once

#include <cuda_runtime_api.h>

#include "backends/cuda/tensor.h"

namespace nf::cuda {

// out[t, :] = table[ids[t], :].
//   ids:   [T] i32 token ids
//   table: [vocab, hidden] bf16
//   out:   [T, hidden] bf16
//   error: [1] i32; set to 1 when some id is outside [0, vocab) (that row of out becomes zeros).
//          Never cleared here: the caller zeroes it and reads it after the stream synchronizes.
void embedding_lookup(const TensorView& ids, const TensorView& table, const TensorView& out,
                      const TensorView& error, cudaStream_t stream);

}  // namespace nf::cuda
