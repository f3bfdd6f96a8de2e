#include "backends/cuda/norm.h"

#include "backends/cuda/launch.h"
#include "common/status.h"

namespace nf::cuda {
namespace {

void check_norm_args(const char* op, const TensorView& x, const TensorView& weight,
                     const TensorView& out) {
  check_tensor(x, op, "x", DType::kBf16, 2);
  check_tensor(weight, op, "weight", DType::kBf16, 1);
  check_tensor(out, op, "out", DType::kBf16, 2);
  NF_CHECK(x.size(1) > 0, "{}: x {} has empty rows", op, x.str());
  NF_CHECK(x.size(0) <= INT32_MAX, "{}: {} tokens", op, x.size(0));
  check_dim(weight, op, "weight", 0, x.size(1));
  check_dim(out, op, "out", 0, x.size(0));
  check_dim(out, op, "out", 1, x.size(1));
}

}  // namespace

void rms_norm(const TensorView& x, const TensorView& weight, const TensorView& out, float eps,
              cudaStream_t stream) {
  check_norm_args("rms_norm", x, weight, out);
  if (x.size(0) == 0) return;
  launch::rms_norm(x.ptr<launch::bf16>(), nullptr, weight.ptr<launch::bf16>(),
                   out.ptr<launch::bf16>(), x.size(0), x.size(1), eps, stream);
}

void add_rms_norm(const TensorView& x, const TensorView& residual, const TensorView& weight,
                  const TensorView& out, float eps, cudaStream_t stream) {
  constexpr const char* op = "add_rms_norm";
  check_norm_args(op, x, weight, out);
  check_tensor(residual, op, "residual", DType::kBf16, 2);
  check_dim(residual, op, "residual", 0, x.size(0));
  check_dim(residual, op, "residual", 1, x.size(1));
  NF_CHECK(residual.data != out.data && residual.data != x.data,
           "{}: residual must not alias x or out", op);
  if (x.size(0) == 0) return;
  launch::rms_norm(x.ptr<launch::bf16>(), residual.ptr<launch::bf16>(), weight.ptr<launch::bf16>(),
                   out.ptr<launch::bf16>(), x.size(0), x.size(1), eps, stream);
}

}  // namespace nf::cuda
