// Collectives between the ranks of a tensor-parallel model: the one interface a backend calls
// for its all-reduces and all-gathers, whatever carries them.
//
// Implementations:
//  - SingleRankCommunicator (below): world size 1, every collective a no-op (all_gather copies
//    when send and recv differ). A backend runs its single-rank path through it unchanged.
//  - CpuCommunicator (runtime/cpu_communicator.h): N ranks that are N threads of one process,
//    sharing host memory; exact and deterministic (fixed rank-order sums). The test oracle.
//  - NcclCommunicator (backends/cuda/nccl_communicator.h): one NCCL communicator per GPU, made
//    together by the process that drives every GPU of the host, with one host thread and one
//    stream set per GPU (rank r = device r). all_reduce_sum -> ncclAllReduce(ncclSum),
//    all_gather -> ncclAllGather, barrier -> a one-element all-reduce. Pointers are device
//    pointers, and each call returns once the collective is enqueued on the rank's stream (in
//    order after earlier work there, not finished). It adds the calls the CUDA backend makes:
//    a bf16 all-reduce and an fp32 all-gather on a given stream, which the nano-batch pipeline
//    puts on a communication stream beside other nano-batches' GEMMs.
//
// Contract of every collective: all ranks of the group call it, in the same order, with the same
// n; it returns (on the CPU: completes) when this rank's result is in place. Results are the
// same on every rank, bit for bit.
#pragma once

#include <algorithm>
#include <cstddef>

namespace nf {

class Communicator {
 public:
  virtual ~Communicator() = default;
  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // In place: data[i] becomes the sum over ranks of data[i] (n floats on every rank).
  virtual void all_reduce_sum(float* data, size_t n) = 0;
  // recv[r * n + i] = rank r's send[i]; recv holds world_size() * n floats. send may be
  // recv + rank() * n (in place), as in NCCL.
  virtual void all_gather(const float* send, float* recv, size_t n) = 0;
  // Returns once every rank has called it.
  virtual void barrier() = 0;
};

// World size 1: nothing to exchange.
class SingleRankCommunicator final : public Communicator {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  void all_reduce_sum(float*, size_t) override {}
  void all_gather(const float* send, float* recv, size_t n) override {
    if (send != recv) std::copy_n(send, n, recv);
  }
  void barrier() override {}
};

}  // namespace nf
