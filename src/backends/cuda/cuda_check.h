// Checked CUDA and cuBLAS calls. A failing call is an internal error: it aborts with the call,
// the error's name and message, and the file and line (through nf::check_failed).
// This header stays free of fmt so that nvcc-compiled files can use it (nvcc's front end rejects
// fmt's consteval format strings); the failure paths are formatted in cuda_check.cpp.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

namespace nf::cuda {

[[noreturn]] void cuda_call_failed(cudaError_t err, const char* expr, const char* file, int line);
[[noreturn]] void cublas_call_failed(cublasStatus_t st, const char* expr, const char* file,
                                     int line);

// A CUDA driver function, at the ABI of the headers compiled against (CUDA_VERSION), resolved at
// run time so that nothing links libcuda; null when this driver lacks it.
void* driver_entry_point(const char* name);

// Restores the calling thread's current device when it goes out of scope: for code that makes
// each GPU current in turn (setting up several GPUs), so that its caller's later allocations and
// launches stay on the caller's device.
class CurrentDeviceGuard {
 public:
  CurrentDeviceGuard() { ok_ = cudaGetDevice(&device_) == cudaSuccess; }
  ~CurrentDeviceGuard() {
    if (ok_) cudaSetDevice(device_);
  }
  CurrentDeviceGuard(const CurrentDeviceGuard&) = delete;
  CurrentDeviceGuard& operator=(const CurrentDeviceGuard&) = delete;

 private:
  int device_ = 0;
  bool ok_ = false;
};

}  // namespace nf::cuda

#define NF_CUDA_CHECK(expr)                                                  \
  do {                                                                       \
    const cudaError_t nf_cuda_err_ = (expr);                                 \
    if (nf_cuda_err_ != cudaSuccess)                                         \
      ::nf::cuda::cuda_call_failed(nf_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define NF_CUBLAS_CHECK(expr)                                                   \
  do {                                                                          \
    const cublasStatus_t nf_cublas_st_ = (expr);                                \
    if (nf_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                 \
      ::nf::cuda::cublas_call_failed(nf_cublas_st_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: catches bad launch configurations (not asynchronous faults).
#define NF_CUDA_CHECK_LAUNCH() NF_CUDA_CHECK(cudaGetLastError())
