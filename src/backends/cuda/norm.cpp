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

void head_rms_norm(const TensorView& qkv, int q_heads, int k_heads, int head_dim,
                   const TensorView& q_weight, const TensorView& k_weight, float eps,
                   cudaStream_t stream) {
  constexpr const char* op = "head_rms_norm";
  check_tensor(qkv, op, "qkv", DType::kBf16, 2);
  check_tensor(q_weight, op, "q_weight", DType::kBf16, 1);
  check_tensor(k_weight, op, "k_weight", DType::kBf16, 1);
  NF_CHECK(q_heads >= 0 && k_heads >= 0 && head_dim > 0, "{}: {} + {} heads of {}", op, q_heads,
           k_heads, head_dim);
  NF_CHECK(static_cast<int64_t>(q_heads + k_heads) * head_dim <= qkv.size(1),
           "{}: {} heads of {} exceed qkv {}", op, q_heads + k_heads, head_dim, qkv.str());
  check_dim(q_weight, op, "q_weight", 0, head_dim);
  check_dim(k_weight, op, "k_weight", 0, head_dim);
  if (qkv.size(0) == 0) return;
  launch::head_rms_norm(qkv.ptr<launch::bf16>(), qkv.size(1), qkv.size(0), q_heads, k_heads,
                        head_dim, q_weight.ptr<launch::bf16>(), k_weight.ptr<launch::bf16>(), eps,
                        stream);
}

}  // namespace nf::cuda
