#include "backends/cuda/nccl_communicator.h"

#include "backends/cuda/cuda_check.h"
#include "common/status.h"

#ifdef NANOFLOW_HAVE_NCCL
#include <nccl.h>
#endif

namespace nf::cuda {

#ifdef NANOFLOW_HAVE_NCCL

bool have_nccl() {
  return true;
}

struct NcclCommunicator::Impl {
  ncclComm_t comm = nullptr;
  int rank = 0, world = 1, device = 0;
};

namespace {

void check(ncclResult_t r, const char* what, ncclComm_t comm = nullptr) {
  if (r == ncclSuccess) return;
  const char* last = comm != nullptr ? ncclGetLastError(comm) : ncclGetLastError(nullptr);
  fail("NCCL {}: {}{}{}", what, ncclGetErrorString(r), last != nullptr && *last ? ": " : "",
       last != nullptr ? last : "");
}

}  // namespace

NcclCommunicator::NcclCommunicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

NcclCommunicator::~NcclCommunicator() {
  if (impl_ && impl_->comm != nullptr) {
    cudaSetDevice(impl_->device);
    ncclCommDestroy(impl_->comm);
  }
}

int NcclCommunicator::rank() const {
  return impl_->rank;
}
int NcclCommunicator::world_size() const {
  return impl_->world;
}
int NcclCommunicator::device() const {
  return impl_->device;
}

void NcclCommunicator::all_reduce_sum(float* data, size_t n) {
  check(ncclAllReduce(data, data, n, ncclFloat32, ncclSum, impl_->comm, stream_), "all-reduce",
        impl_->comm);
}

void NcclCommunicator::all_gather(const float* send, float* recv, size_t n) {
  all_gather_f32(send, recv, n, stream_);
}

void NcclCommunicator::barrier() {
  float* one = nullptr;
  NF_CUDA_CHECK(cudaMallocAsync(reinterpret_cast<void**>(&one), sizeof(float), stream_));
  NF_CUDA_CHECK(cudaMemsetAsync(one, 0, sizeof(float), stream_));
  all_reduce_sum(one, 1);
  NF_CUDA_CHECK(cudaFreeAsync(one, stream_));
  NF_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void NcclCommunicator::all_reduce_sum_bf16(void* data, size_t n, cudaStream_t stream) {
  check(ncclAllReduce(data, data, n, ncclBfloat16, ncclSum, impl_->comm, stream), "all-reduce",
        impl_->comm);
}

void NcclCommunicator::all_gather_f32(const float* send, float* recv, size_t n,
                                      cudaStream_t stream) {
  check(ncclAllGather(send, recv, n, ncclFloat32, impl_->comm, stream), "all-gather", impl_->comm);
}

std::vector<std::unique_ptr<NcclCommunicator>> make_nccl_communicators(
    const std::vector<int>& devices, int max_ctas) {
  const int n = static_cast<int>(devices.size());
  NF_CHECK(n >= 1, "NCCL: no devices");
  const CurrentDeviceGuard keep;
  ncclUniqueId id;
  check(ncclGetUniqueId(&id), "unique id");
  std::vector<std::unique_ptr<NcclCommunicator::Impl>> impls;
  check(ncclGroupStart(), "group start");
  for (int r = 0; r < n; ++r) {
    auto impl = std::make_unique<NcclCommunicator::Impl>();
    impl->rank = r;
    impl->world = n;
    impl->device = devices[static_cast<size_t>(r)];
    NF_CUDA_CHECK(cudaSetDevice(impl->device));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    if (max_ctas > 0) {
      config.minCTAs = 1;
      config.maxCTAs = max_ctas;
    }
    const ncclResult_t st = ncclCommInitRankConfig(&impl->comm, n, id, r, &config);
    if (st != ncclSuccess) {
      ncclGroupEnd();
      check(st, "init");
    }
    impls.push_back(std::move(impl));
  }
  check(ncclGroupEnd(), "init (group end)");
  std::vector<std::unique_ptr<NcclCommunicator>> out;
  for (auto& impl : impls) out.push_back(std::make_unique<NcclCommunicator>(std::move(impl)));
  return out;
}

#else  // no NCCL in this build

bool have_nccl() {
  return false;
}

struct NcclCommunicator::Impl {};

NcclCommunicator::NcclCommunicator(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NcclCommunicator::~NcclCommunicator() = default;
int NcclCommunicator::rank() const {
  return 0;
}
int NcclCommunicator::world_size() const {
  return 1;
}
int NcclCommunicator::device() const {
  return 0;
}
void NcclCommunicator::all_reduce_sum(float*, size_t) {}
void NcclCommunicator::all_gather(const float*, float*, size_t) {}
void NcclCommunicator::barrier() {}
void NcclCommunicator::all_reduce_sum_bf16(void*, size_t, cudaStream_t) {}
void NcclCommunicator::all_gather_f32(const float*, float*, size_t, cudaStream_t) {}

std::vector<std::unique_ptr<NcclCommunicator>> make_nccl_communicators(const std::vector<int>&,
                                                                       int) {
  fail(
      "tensor parallelism on CUDA needs NCCL, and this build has none (install the "
      "nvidia-nccl-cu13 wheel or libnccl-dev and rebuild)");
}

#endif

}  // namespace nf::cuda
