// Token embedding lookup on the GPU.
#pragma once

#include <cuda_runtime_api.h>

#include "backends/cuda/tensor.h"

namespace nf::cuda {

// out[t, :] = table[ids[t] - first_id, :], zeros where ids[t] is not one of the table's rows.
//   ids:   [T] i32 token ids
//   table: [rows, hidden] bf16, the embeddings of ids [first_id, first_id + rows) (a
//          tensor-parallel rank's block of the vocabulary; the whole of it by default)
//   out:   [T, hidden] bf16
//   error: [1] i32; set to 1 when some id is outside [0, vocab) (vocab < 0: rows) (that row of
//          out becomes zeros). Never cleared here: the caller zeroes it and reads it after the
//          stream synchronizes.
void embedding_lookup(const TensorView& ids, const TensorView& table, const TensorView& out,
                      const TensorView& error, cudaStream_t stream, int64_t first_id = 0,
                      int64_t vocab = -1);

}  // namespace nf::cuda
