#include "backends/cuda/peer_allreduce.h"

#include <fmt/core.h>

#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "common/status.h"

namespace nf::cuda {

std::vector<std::unique_ptr<PeerAllReduce>> PeerAllReduce::create(const std::vector<int>& devices,
                                                                  size_t max_elems, int ctas,
                                                                  std::string* why) {
  const int n = static_cast<int>(devices.size());
  NF_CHECK(n >= 1 && n <= kMaxRanks, "peer all-reduce: {} ranks (1 to {})", n, kMaxRanks);
  if (ctas <= 0) ctas = 16;
  NF_CHECK(ctas <= kMaxCtas, "peer all-reduce: {} CTAs (at most {})", ctas, kMaxCtas);
  for (int i = 0; i < n; ++i)
    for (int j = 0; j < n; ++j) {
      if (i == j) continue;
      int ok = 0;
      NF_CUDA_CHECK(cudaDeviceCanAccessPeer(&ok, devices[static_cast<size_t>(i)],
                                            devices[static_cast<size_t>(j)]));
      if (!ok) {
        if (why != nullptr)
          *why = fmt::format("GPU {} cannot access GPU {}'s memory (no peer access)",
                             devices[static_cast<size_t>(i)], devices[static_cast<size_t>(j)]);
        return {};
      }
    }
  const CurrentDeviceGuard keep;
  std::vector<std::unique_ptr<PeerAllReduce>> out;
  for (int r = 0; r < n; ++r) {
    const int dev = devices[static_cast<size_t>(r)];
    NF_CUDA_CHECK(cudaSetDevice(dev));
    for (int j = 0; j < n; ++j) {
      if (j == r) continue;
      const cudaError_t st = cudaDeviceEnablePeerAccess(devices[static_cast<size_t>(j)], 0);
      if (st == cudaErrorPeerAccessAlreadyEnabled) {
        cudaGetLastError();
      } else {
        NF_CUDA_CHECK(st);
      }
    }
    std::unique_ptr<PeerAllReduce> p(new PeerAllReduce());
    p->rank_ = r;
    p->world_ = n;
    p->device_ = dev;
    p->ctas_ = ctas;
    p->max_elems_ = (max_elems + 7) / 8 * 8;
    NF_CUDA_CHECK(cudaMalloc(&p->staging_, 2 * p->max_elems_ * sizeof(uint16_t)));
    NF_CUDA_CHECK(
        cudaMalloc(reinterpret_cast<void**>(&p->flags_), kMaxRanks * kMaxCtas * sizeof(uint32_t)));
    NF_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&p->epochs_), kMaxCtas * sizeof(uint32_t)));
    NF_CUDA_CHECK(cudaMemset(p->flags_, 0, kMaxRanks * kMaxCtas * sizeof(uint32_t)));
    NF_CUDA_CHECK(cudaMemset(p->epochs_, 0, kMaxCtas * sizeof(uint32_t)));
    out.push_back(std::move(p));
  }
  for (auto& p : out)
    for (auto& q : out) {
      p->all_staging_.push_back(q->staging_);
      p->all_flags_.push_back(q->flags_);
    }
  for (int r = 0; r < n; ++r) {
    NF_CUDA_CHECK(cudaSetDevice(devices[static_cast<size_t>(r)]));
    NF_CUDA_CHECK(cudaDeviceSynchronize());  // the zeroed flags before any rank's first call
  }
  return out;
}

PeerAllReduce::~PeerAllReduce() {
  cudaSetDevice(device_);
  cudaFree(staging_);
  cudaFree(flags_);
  cudaFree(epochs_);
}

bool PeerAllReduce::accepts(const void* x, size_t n) const {
  return n % 8 == 0 && n <= max_elems_ && reinterpret_cast<uintptr_t>(x) % 16 == 0;
}

void PeerAllReduce::all_reduce(void* x, size_t n, cudaStream_t stream) {
  NF_CHECK(accepts(x, n),
           "peer all-reduce of {} elements (capacity {}: multiples of 8, 16-byte aligned)", n,
           max_elems_);
  if (n == 0 || world_ == 1) return;
  Args a{};
  a.x = x;
  a.chunks = static_cast<int64_t>(n / 8);
  a.cap = static_cast<int64_t>(max_elems_);
  for (int p = 0; p < world_; ++p) {
    a.staging[p] = all_staging_[static_cast<size_t>(p)];
    a.flags[p] = all_flags_[static_cast<size_t>(p)];
  }
  a.epochs = epochs_;
  a.rank = rank_;
  a.world = world_;
  launch(a, ctas_, stream);
}

}  // namespace nf::cuda
