#include <cuda_runtime.h>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/device.h"

namespace nf::cuda {

std::vector<DeviceInfo> list_devices() {
  std::vector<DeviceInfo> out;
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no device" error
    return out;
  }
  // Free memory needs each device current in turn: the caller's current device is restored
  // after (on a multi-GPU host, leaving the last one current would send the caller's later
  // allocations and launches to another GPU than its earlier ones).
  const CurrentDeviceGuard keep;
  for (int i = 0; i < n; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    DeviceInfo d;
    d.index = i;
    d.name = prop.name;
    d.sm_major = prop.major;
    d.sm_minor = prop.minor;
    d.multiprocessors = prop.multiProcessorCount;
    d.total_memory = prop.totalGlobalMem;
    if (cudaSetDevice(i) == cudaSuccess) cudaMemGetInfo(&d.free_memory, &d.total_memory);
    out.push_back(d);
  }
  return out;
}

}  // namespace nf::cuda
