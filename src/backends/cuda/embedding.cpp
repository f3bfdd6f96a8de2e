#include "backends/cuda/embedding.h"

#include "backends/cuda/launch.h"
#include "common/status.h"

namespace nf::cuda {

void embedding_lookup(const TensorView& ids, const TensorView& table, const TensorView& out,
                      const TensorView& error, cudaStream_t stream, int64_t first_id,
                      int64_t vocab) {
  constexpr const char* op = "embedding_lookup";
  check_tensor(ids, op, "ids", DType::kI32, 1);
  check_tensor(table, op, "table", DType::kBf16, 2);
  check_tensor(out, op, "out", DType::kBf16, 2);
  check_tensor(error, op, "error", DType::kI32, 1);
  check_dim(error, op, "error", 0, 1);
  const int64_t tokens = ids.size(0), rows = table.size(0), hidden = table.size(1);
  if (vocab < 0) vocab = rows;
  NF_CHECK(first_id >= 0 && first_id <= vocab, "{}: first id {} of a vocabulary of {}", op,
           first_id, vocab);
  check_dim(out, op, "out", 0, tokens);
  check_dim(out, op, "out", 1, hidden);
  NF_CHECK(tokens <= INT32_MAX, "{}: {} tokens", op, tokens);
  if (tokens == 0 || hidden == 0) return;
  launch::embedding(ids.ptr<int32_t>(), table.ptr<launch::bf16>(), out.ptr<launch::bf16>(),
                    error.ptr<int32_t>(), tokens, rows, first_id, vocab, hidden, stream);
}

}  // namespace nf::cuda
