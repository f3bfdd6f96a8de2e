#include "backends/cuda/gemm.h"

#include <cublasLt.h>

#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "common/status.h"

namespace nf::cuda {

// Row-major y = x w^T is, in cuBLASLt's column-major view, y^T[n, m] = (w^T)^T[n, k] x^T[k, m]:
// A = w as a k x n column-major matrix (ld k) with op T, B = x as k x m (ld k) with op N,
// C = D = y as n x m (ld n). The bias epilogue adds a vector over D's rows, i.e. over n.
struct Gemm::Plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};

  ~Plan() {
    if (a != nullptr) NF_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(a));
    if (b != nullptr) NF_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(b));
    if (c != nullptr) NF_CUBLAS_CHECK(cublasLtMatrixLayoutDestroy(c));
    if (desc != nullptr) NF_CUBLAS_CHECK(cublasLtMatmulDescDestroy(desc));
  }
};

namespace {

cudaDataType_t cuda_type(DType t) {
  return t == DType::kF32 ? CUDA_R_32F : CUDA_R_16BF;
}

// The largest power of two <= 256 dividing every address (what the algorithm may assume).
int common_alignment(const GemmArgs& args) {
  uintptr_t bits = reinterpret_cast<uintptr_t>(args.x.data) |
                   reinterpret_cast<uintptr_t>(args.w.data) |
                   reinterpret_cast<uintptr_t>(args.y.data) | 256;
  if (!args.bias.empty()) bits |= reinterpret_cast<uintptr_t>(args.bias.data);
  return static_cast<int>(bits & (~bits + 1));
}

}  // namespace

Gemm::Gemm(size_t workspace_bytes) : workspace_(workspace_bytes) {
  NF_CUBLAS_CHECK(cublasLtCreate(&handle_));
}

Gemm::~Gemm() {
  plans_.clear();
  if (handle_ != nullptr) NF_CUBLAS_CHECK(cublasLtDestroy(handle_));
}

void Gemm::set_sm_count_target(int sms) {
  NF_CHECK(sms >= 0, "Gemm::set_sm_count_target: {} SMs", sms);
  sm_count_target_ = sms;
}

Gemm::Plan& Gemm::plan_for(const GemmArgs& args, const Key& key) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;
  const auto [m, n, k, has_bias, has_beta, dtype, align, sms] = key;
  auto plan = std::make_unique<Plan>();
  const cudaDataType_t out_type = cuda_type(args.y.dtype);
  NF_CUBLAS_CHECK(cublasLtMatmulDescCreate(&plan->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const int32_t op_t = CUBLAS_OP_T, op_n = CUBLAS_OP_N;
  NF_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_t, sizeof(op_t)));
  NF_CUBLAS_CHECK(
      cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_n, sizeof(op_n)));
  if (has_bias) {
    const uint32_t epilogue = CUBLASLT_EPILOGUE_BIAS;
    const int32_t bias_type = out_type;
    const void* bias = args.bias.data;
    NF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                   &epilogue, sizeof(epilogue)));
    NF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                   &bias_type, sizeof(bias_type)));
    NF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                   &bias, sizeof(bias)));
  }
  if (sms > 0) {
    const int32_t target = sms;
    NF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan->desc, CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET,
                                                   &target, sizeof(target)));
  }
  NF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->a, CUDA_R_16BF, static_cast<uint64_t>(k),
                                             static_cast<uint64_t>(n), k));
  NF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->b, CUDA_R_16BF, static_cast<uint64_t>(k),
                                             static_cast<uint64_t>(m), k));
  NF_CUBLAS_CHECK(cublasLtMatrixLayoutCreate(&plan->c, out_type, static_cast<uint64_t>(n),
                                             static_cast<uint64_t>(m), n));

  cublasLtMatmulPreference_t pref = nullptr;
  NF_CUBLAS_CHECK(cublasLtMatmulPreferenceCreate(&pref));
  const uint64_t ws = workspace_.bytes();
  const uint32_t align_bytes = static_cast<uint32_t>(align);
  NF_CUBLAS_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
  for (auto attr :
       {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
    NF_CUBLAS_CHECK(
        cublasLtMatmulPreferenceSetAttribute(pref, attr, &align_bytes, sizeof(align_bytes)));
  }
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(
      handle_, plan->desc, plan->a, plan->b, plan->c, plan->c, pref, 1, &result, &found);
  NF_CUBLAS_CHECK(cublasLtMatmulPreferenceDestroy(pref));
  NF_CHECK(st == CUBLAS_STATUS_SUCCESS && found > 0,
           "Gemm: cuBLASLt has no algorithm for m={} n={} k={} bias={} beta={} out={} align={} "
           "(status {})",
           m, n, k, has_bias, has_beta, dtype_name(args.y.dtype), align, cublasLtGetStatusName(st));
  plan->algo = result.algo;
  return *plans_.emplace(key, std::move(plan)).first->second;
}

void Gemm::run(const GemmArgs& args, cudaStream_t stream) {
  constexpr const char* op = "Gemm::run";
  check_tensor(args.x, op, "x", DType::kBf16, 2);
  check_tensor(args.w, op, "w", DType::kBf16, 2);
  NF_CHECK(args.y.dtype == DType::kBf16 || args.y.dtype == DType::kF32,
           "{}: y {} must be bf16 or f32", op, args.y.str());
  check_tensor(args.y, op, "y", args.y.dtype, 2);
  const int64_t m = args.x.size(0), k = args.x.size(1), n = args.w.size(0);
  NF_CHECK(n > 0 && k > 0, "{}: empty weight {}", op, args.w.str());
  check_dim(args.w, op, "w", 1, k);
  check_dim(args.y, op, "y", 0, m);
  check_dim(args.y, op, "y", 1, n);
  const bool has_bias = !args.bias.empty();
  if (has_bias) {
    check_tensor(args.bias, op, "bias", args.y.dtype, 1);
    check_dim(args.bias, op, "bias", 0, n);
  }
  NF_CHECK(std::max({m, n, k}) <= INT32_MAX, "{}: m={} n={} k={} too large", op, m, n, k);
  if (m == 0) return;
  const int align = common_alignment(args);
  NF_CHECK(align >= static_cast<int>(dtype_size(args.y.dtype)),
           "{}: operands are not aligned to their element size", op);
  const Key key{m,
                n,
                k,
                has_bias,
                args.beta != 0.0f,
                static_cast<int>(args.y.dtype),
                align,
                sm_count_target_};
  Plan& plan = plan_for(args, key);
  if (has_bias) {
    const void* bias = args.bias.data;
    NF_CUBLAS_CHECK(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                   &bias, sizeof(bias)));
  }
  const float alpha = 1.0f, beta = args.beta;
  NF_CUBLAS_CHECK(cublasLtMatmul(handle_, plan.desc, &alpha, args.w.data, plan.a, args.x.data,
                                 plan.b, &beta, args.y.data, plan.c, args.y.data, plan.c,
                                 &plan.algo, workspace_.data(), workspace_.bytes(), stream));
}

}  // namespace nf::cuda
