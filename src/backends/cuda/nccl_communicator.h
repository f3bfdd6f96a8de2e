// The Communicator of a tensor-parallel CUDA model: one NCCL communicator per GPU of this host,
// all made together by this process, which drives every GPU with one host thread each (rank r
// runs on devices[r]). Pointers are device pointers; a call enqueues the collective on a stream
// of the rank's device and returns (ordered after earlier work on that stream, not finished).
// The calling thread's current device must be the rank's.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <memory>
#include <vector>

#include "runtime/communicator.h"

namespace nf::cuda {

// Whether this build links NCCL (CMake found it).
bool have_nccl();

class NcclCommunicator final : public Communicator {
 public:
  struct Impl;
  explicit NcclCommunicator(std::unique_ptr<Impl> impl);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override;
  int world_size() const override;
  int device() const;
  // Communicator's calls, in fp32 on stream() (set_stream; default: the legacy stream).
  void all_reduce_sum(float* data, size_t n) override;
  void all_gather(const float* send, float* recv, size_t n) override;
  // A one-float all-reduce, then waits for stream(): returns once every rank got there.
  void barrier() override;
  void set_stream(cudaStream_t stream) { stream_ = stream; }
  cudaStream_t stream() const { return stream_; }
  // The calls the backend makes, on a given stream: bf16 sum in place (n elements), and fp32
  // all-gather (recv[r * n + i] = rank r's send[i]).
  void all_reduce_sum_bf16(void* data, size_t n, cudaStream_t stream);
  void all_gather_f32(const float* send, float* recv, size_t n, cudaStream_t stream);

 private:
  std::unique_ptr<Impl> impl_;
  cudaStream_t stream_ = nullptr;
};

// One communicator per device, rank r on devices[r], initialized together (ncclCommInitRank
// for every rank in one NCCL group). max_ctas > 0 bounds the CTAs, and so the SMs, that each
// collective may occupy (NCCL's maxCTAs), so that it leaves the rest to the GEMMs it overlaps;
// 0 keeps NCCL's own choice. Throws nf::Error without NCCL or on an NCCL failure.
std::vector<std::unique_ptr<NcclCommunicator>> make_nccl_communicators(
    const std::vector<int>& devices, int max_ctas);

}  // namespace nf::cuda
