#include "runtime/cpu_communicator.h"

#include <algorithm>

#include "common/status.h"

namespace nf {
namespace {

// Chunk r of n elements split over `ranks`: [chunk_begin(r), chunk_begin(r + 1)).
size_t chunk_begin(size_t n, int r, int ranks) {
  return n * static_cast<size_t>(r) / static_cast<size_t>(ranks);
}

}  // namespace

int CpuCommunicator::world_size() const {
  return group_.world_size();
}

void CpuCommunicator::all_reduce_sum(float* data, size_t n) {
  CpuCommGroup& g = group_;
  const int N = g.world_size_;
  if (N == 1) return;
  g.data_[rank_] = data;
  g.count_[rank_] = n;
  g.wait();  // every rank's buffer is published
  for (int r = 0; r < N; ++r) {
    NF_CHECK(g.count_[r] == n, "all_reduce_sum: rank {} sends {} floats, rank {} sends {}", r,
             g.count_[r], rank_, n);
  }
  // Reduce-scatter: this rank sums its chunk of every buffer, in rank order, into its buffer.
  // Nobody else reads or writes this chunk until the next wait().
  const size_t begin = chunk_begin(n, rank_, N), end = chunk_begin(n, rank_ + 1, N);
  constexpr size_t kTile = 512;
  float acc[kTile];
  for (size_t i0 = begin; i0 < end; i0 += kTile) {
    const size_t len = std::min(kTile, end - i0);
    std::copy_n(g.data_[0] + i0, len, acc);
    for (int r = 1; r < N; ++r) {
      const float* src = g.data_[r] + i0;
      for (size_t i = 0; i < len; ++i) acc[i] += src[i];
    }
    std::copy_n(acc, len, data + i0);
  }
  g.wait();  // every chunk is summed in its owner's buffer
  // All-gather: copy the other chunks from their owners.
  for (int r = 0; r < N; ++r) {
    if (r == rank_) continue;
    const size_t b = chunk_begin(n, r, N), e = chunk_begin(n, r + 1, N);
    std::copy(g.data_[r] + b, g.data_[r] + e, data + b);
  }
  g.wait();  // nobody reads this rank's buffer any more: the caller may change it
}

void CpuCommunicator::all_gather(const float* send, float* recv, size_t n) {
  CpuCommGroup& g = group_;
  const int N = g.world_size_;
  g.send_[rank_] = send;
  g.count_[rank_] = n;
  g.wait();
  for (int r = 0; r < N; ++r) {
    NF_CHECK(g.count_[r] == n, "all_gather: rank {} sends {} floats, rank {} sends {}", r,
             g.count_[r], rank_, n);
  }
  // In place (send == recv + rank * n), this rank's own chunk is already where it belongs, and
  // the others read only that chunk of its recv.
  for (int r = 0; r < N; ++r) {
    float* dst = recv + static_cast<size_t>(r) * n;
    if (g.send_[r] != dst) std::copy_n(g.send_[r], n, dst);
  }
  g.wait();  // nobody reads this rank's send buffer any more
}

void CpuCommunicator::barrier() {
  group_.wait();
}

CpuCommGroup::CpuCommGroup(int world_size)
    : world_size_(world_size),
      data_(static_cast<size_t>(std::max(world_size, 1)), nullptr),
      send_(static_cast<size_t>(std::max(world_size, 1)), nullptr),
      count_(static_cast<size_t>(std::max(world_size, 1)), 0),
      threads_(std::max(world_size, 1), /*caller_is_rank0=*/true) {
  NF_CHECK(world_size >= 1, "CpuCommGroup: world size {}", world_size);
  for (int r = 0; r < world_size; ++r)
    comms_.push_back(std::make_unique<CpuCommunicator>(*this, r));
}

CpuCommGroup::~CpuCommGroup() = default;

// A phase barrier: the last rank to arrive resets the count and advances the phase; the others
// sleep on the phase (futex) until it moves. The acquire/release pairs on arrived_ and phase_
// make every rank's writes before its arrival visible to every rank after the barrier.
void CpuCommGroup::wait() {
  if (world_size_ == 1) return;
  if (aborted_.load(std::memory_order_acquire)) {
    fail("tensor-parallel collective aborted: another rank failed");
  }
  const uint32_t phase = phase_.load(std::memory_order_acquire);
  if (arrived_.fetch_add(1, std::memory_order_acq_rel) + 1 == world_size_) {
    arrived_.store(0, std::memory_order_relaxed);
    phase_.fetch_add(1, std::memory_order_release);
    phase_.notify_all();
    return;
  }
  while (phase_.load(std::memory_order_acquire) == phase) {
    phase_.wait(phase, std::memory_order_acquire);
  }
  if (aborted_.load(std::memory_order_acquire)) {
    fail("tensor-parallel collective aborted: another rank failed");
  }
}

void CpuCommGroup::abort_collectives() {
  aborted_.store(true, std::memory_order_release);
  phase_.fetch_add(1, std::memory_order_release);
  phase_.notify_all();
}

void CpuCommGroup::run(const std::function<void(Communicator&)>& fn) {
  try {
    threads_.run([&](int r) { fn(*comms_[static_cast<size_t>(r)]); },
                 [this](int) { abort_collectives(); });
  } catch (...) {
    // Every rank has returned: the barrier can start afresh for the next run.
    arrived_.store(0);
    aborted_.store(false);
    throw;
  }
}

}  // namespace nf
