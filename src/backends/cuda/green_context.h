// Hard SM partitions: CUDA green contexts (driver API, CUDA 12.5+), each with a stream that the
// runtime API and cuBLASLt launch on like any other; a kernel there runs only on its
// partition's SMs. The driver entry points are looked up at run time, so nothing links libcuda.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

namespace nf::cuda {

class GreenPartitions {
 public:
  // Carves device `device`'s SMs in order: each count n > 0 takes n SMs (rounded up to the
  // driver's granularity) from what the partitions before left, -1 all that is left. Returns
  // null with the reason in *why when the driver has no green contexts or the split fails.
  static std::unique_ptr<GreenPartitions> create(int device, const std::vector<int>& sms,
                                                 std::string* why);
  ~GreenPartitions();
  GreenPartitions(const GreenPartitions&) = delete;
  GreenPartitions& operator=(const GreenPartitions&) = delete;

  size_t size() const { return parts_.size(); }
  cudaStream_t stream(size_t i) const { return parts_[i].stream; }
  int sm_count(size_t i) const { return parts_[i].sms; }

 private:
  GreenPartitions() = default;
  struct Part {
    void* ctx = nullptr;  // CUgreenCtx
    cudaStream_t stream = nullptr;
    int sms = 0;
  };
  std::vector<Part> parts_;
};

}  // namespace nf::cuda
