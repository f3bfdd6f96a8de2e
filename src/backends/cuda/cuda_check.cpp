#include "backends/cuda/cuda_check.h"

#include <cuda.h>
#include <fmt/format.h>

#include "common/status.h"

namespace nf::cuda {

void cuda_call_failed(cudaError_t err, const char* expr, const char* file, int line) {
  check_failed(file, line, expr,
               fmt::format("CUDA error {}: {}", cudaGetErrorName(err), cudaGetErrorString(err)));
}

void cublas_call_failed(cublasStatus_t st, const char* expr, const char* file, int line) {
  check_failed(
      file, line, expr,
      fmt::format("cuBLAS {}: {}", cublasLtGetStatusName(st), cublasLtGetStatusString(st)));
}

void* driver_entry_point(const char* name) {
  void* p = nullptr;
  cudaDriverEntryPointQueryResult q{};
  if (cudaGetDriverEntryPointByVersion(name, &p, CUDA_VERSION, cudaEnableDefault, &q) !=
          cudaSuccess ||
      q != cudaDriverEntryPointSuccess)
    return nullptr;
  return p;
}

}  // namespace nf::cuda
