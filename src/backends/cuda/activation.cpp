#include "backends/cuda/activation.h"

#include "backends/cuda/launch.h"
#include "common/status.h"

namespace nf::cuda {

void silu_and_mul(const TensorView& gate_up, const TensorView& out, cudaStream_t stream) {
  constexpr const char* op = "silu_and_mul";
  check_tensor(gate_up, op, "gate_up", DType::kBf16, 2);
  check_tensor(out, op, "out", DType::kBf16, 2);
  const int64_t tokens = gate_up.size(0), inter = gate_up.size(1) / 2;
  NF_CHECK(gate_up.size(1) % 2 == 0, "{}: gate_up {} has an odd row", op, gate_up.str());
  check_dim(out, op, "out", 0, tokens);
  check_dim(out, op, "out", 1, inter);
  NF_CHECK(tokens <= INT32_MAX && inter <= int64_t{65535} * 256, "{}: gate_up {} is too large", op,
           gate_up.str());
  if (tokens == 0 || inter == 0) return;
  launch::silu_and_mul(gate_up.ptr<launch::bf16>(), out.ptr<launch::bf16>(), tokens, inter, stream);
}

}  // namespace nf::cuda
