// bf16 GEMM through cuBLASLt: y[m, n] = x[m, k] @ w[n, k]^T (+ bias[n]) (+ beta * y), fp32
// accumulate (CUBLAS_COMPUTE_32F). Row-major tensors; w in Hugging Face [out, in] layout.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "backends/cuda/tensor.h"

struct cublasLtContext;

namespace nf::cuda {

struct GemmArgs {
  TensorView x;       // [m, k] bf16
  TensorView w;       // [n, k] bf16
  TensorView y;       // [m, n] bf16 or f32 (f32 e.g. for logits)
  TensorView bias;    // [n] with y's dtype; empty: no bias
  float beta = 0.0f;  // 0: y is write-only (it may hold garbage, NaN included)
};

// One cuBLASLt handle, a workspace and the cached plans. The algorithm of each shape (m, n, k,
// bias, beta != 0, out dtype, pointer alignment, SM target) is chosen once by cuBLASLt's
// heuristic and cached. Not thread-safe: one Gemm per thread (or stream) at a time.
class Gemm {
 public:
  static constexpr size_t kDefaultWorkspace = size_t{32} << 20;  // Hopper's recommended 32 MiB

  explicit Gemm(size_t workspace_bytes = kDefaultWorkspace);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  void run(const GemmArgs& args, cudaStream_t stream);

  // Asks cuBLASLt to plan for `sms` SMs (CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET), leaving the rest
  // to work on another stream; 0 means the whole device. Plans are cached per target.
  void set_sm_count_target(int sms);
  int sm_count_target() const { return sm_count_target_; }
  size_t cached_plans() const { return plans_.size(); }

 private:
  struct Plan;
  // (m, n, k, has_bias, has_beta, out dtype, alignment, sm target)
  using Key = std::tuple<int64_t, int64_t, int64_t, bool, bool, int, int, int>;

  Plan& plan_for(const GemmArgs& args, const Key& key);

  cublasLtContext* handle_ = nullptr;
  DeviceBuffer workspace_;
  int sm_count_target_ = 0;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace nf::cuda
