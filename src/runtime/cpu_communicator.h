// Tensor parallelism on the host: N ranks that are N threads of one process, exchanging data
// through shared memory. Used by the CPU backend with tensor_parallel_size > 1 and by the tests
// that check tensor-parallel outputs without several GPUs.
//
// Exactness: all_reduce_sum adds the ranks' buffers in rank order, element by element
// (((d0 + d1) + d2) + ...), whatever the thread timing, so every rank gets the same bits, and
// the same inputs always give the same result. It is a reduce-scatter (rank r sums chunk r of
// every buffer into its own buffer) then an all-gather (each rank copies the other chunks from
// their owners), in place, with no buffer of its own.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <vector>

#include "runtime/communicator.h"
#include "runtime/rank_threads.h"

namespace nf {

class CpuCommGroup;

// The communicator of one rank of a CpuCommGroup. Its collectives must be called from that
// rank's thread (one caller per rank at a time).
class CpuCommunicator final : public Communicator {
 public:
  CpuCommunicator(CpuCommGroup& group, int rank) : group_(group), rank_(rank) {}
  int rank() const override { return rank_; }
  int world_size() const override;
  void all_reduce_sum(float* data, size_t n) override;
  void all_gather(const float* send, float* recv, size_t n) override;
  void barrier() override;

 private:
  CpuCommGroup& group_;
  int rank_;
};

// A group of world_size ranks with a persistent thread for each rank but rank 0, which runs on
// the thread that calls run().
class CpuCommGroup {
 public:
  explicit CpuCommGroup(int world_size);
  ~CpuCommGroup();
  CpuCommGroup(const CpuCommGroup&) = delete;
  CpuCommGroup& operator=(const CpuCommGroup&) = delete;

  int world_size() const { return world_size_; }
  Communicator& comm(int rank) { return *comms_[static_cast<size_t>(rank)]; }

  // Runs fn(comm(r)) for every rank r at once, rank 0 on the calling thread, and returns when all
  // have returned. When a rank throws, the collectives of the others fail too (they throw
  // nf::Error instead of waiting forever) and run() rethrows the first rank's exception; the
  // group is usable again afterwards. Not reentrant: one run() at a time.
  void run(const std::function<void(Communicator&)>& fn);

 private:
  friend class CpuCommunicator;

  // Returns once all ranks have arrived; throws nf::Error when the collectives were aborted.
  void wait();
  void abort_collectives();

  const int world_size_;
  std::vector<std::unique_ptr<CpuCommunicator>> comms_;

  // The buffers published by each rank for the collective in progress, [world_size] each.
  std::vector<float*> data_;
  std::vector<const float*> send_;
  std::vector<size_t> count_;

  // Barrier: arrivals of the current phase, and the phase number that waiters watch.
  std::atomic<int> arrived_{0};
  std::atomic<uint32_t> phase_{0};
  std::atomic<bool> aborted_{false};

  RankThreads threads_;  // rank 0 on the caller of run()
};

}  // namespace nf
