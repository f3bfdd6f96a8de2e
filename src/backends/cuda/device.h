// CUDA device discovery. The CUDA backend itself (GEMMs, attention, kernels) is built on this.
#pragma once

#include <string>
#include <vector>

namespace nf::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int sm_major = 0, sm_minor = 0;
  int multiprocessors = 0;
  size_t total_memory = 0;
  size_t free_memory = 0;
};

// The visible CUDA devices; empty when there is no driver or no device. Never throws.
std::vector<DeviceInfo> list_devices();

}  // namespace nf::cuda
