// A one-shot all-reduce of bf16 over peer memory (NVLink), for the tensor-parallel ranks of one
// process: the alternative to NCCL's ring that `--tp-allreduce peer` selects (experimental).
//
// Why: NCCL's all-reduce of a 2048 x 8192 bf16 batch took 0.17 ms on two H200s (~190 GB/s, under
// half of NV18), 11% of a Llama-3-70B iteration at TP=2, and its kernels spin on the peer while
// they share SMs with GEMMs, so overlapping it in nano-batch schedules lost
// (docs/tensor-parallel.md). Here each rank reads the others' partial sums straight from their
// memory, once, with a few CTAs, and waits for a peer only once per CTA.
//
// How, per call, CTA b of every rank takes the same slice b of the n elements:
//   1. copies its slice of x into its staging buffer (one of two, alternating per call);
//   2. tells every peer "slice b of epoch e is staged" (a release store of e into the peer's
//      flag for (this rank, b), after a system fence) and waits until every peer said the same
//      (acquire loads of its own flags);
//   3. sums slice b over the ranks in rank order in fp32 (its own from staging, the others' from
//      their staging over NVLink) and writes the bf16 sums into x.
// The epoch is a per-CTA counter in device memory, so a CUDA graph can replay the call. Two
// staging buffers make one wait per call enough: a peer that signalled epoch e + 1 has finished
// reading epoch e - 1's buffer, the one epoch e + 1 overwrites. The sums are the same bits on
// every rank.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace nf::cuda {

class PeerAllReduce {
 public:
  static constexpr int kMaxRanks = 8;
  static constexpr int kMaxCtas = 64;

  // One per rank (rank r on devices[r]), made together: enables peer access between every pair
  // and allocates each rank's staging (2 x max_elems bf16) and flags. ctas: CTAs per call (0:
  // 16). Returns an empty vector, with the reason in *why, when some pair of devices cannot
  // reach each other's memory. Throws nf::Error on CUDA failures.
  static std::vector<std::unique_ptr<PeerAllReduce>> create(const std::vector<int>& devices,
                                                            size_t max_elems, int ctas,
                                                            std::string* why);
  ~PeerAllReduce();
  PeerAllReduce(const PeerAllReduce&) = delete;
  PeerAllReduce& operator=(const PeerAllReduce&) = delete;

  // Whether all_reduce takes x of n elements: n a multiple of 8 up to max_elems, x 16-byte
  // aligned (the same answer on every rank for the same call).
  bool accepts(const void* x, size_t n) const;
  // In place on `stream` (this rank's device current): x, n bf16, becomes the sum over the
  // ranks. Every rank calls it with the same n, in the same order, on one stream each.
  void all_reduce(void* x, size_t n, cudaStream_t stream);
  int rank() const { return rank_; }
  int world_size() const { return world_; }

  // The kernel's arguments (peer_allreduce.cu).
  struct Args {
    void* x;         // bf16
    int64_t chunks;  // n / 8
    int64_t cap;     // elements of one staging half
    void* staging[kMaxRanks];
    uint32_t* flags[kMaxRanks];
    uint32_t* epochs;
    int rank, world;
  };

 private:
  static void launch(const Args& a, int ctas, cudaStream_t stream);
  PeerAllReduce() = default;
  int rank_ = 0, world_ = 1, device_ = 0, ctas_ = 16;
  size_t max_elems_ = 0;
  void* staging_ = nullptr;     // [2][max_elems] bf16, read by the peers
  uint32_t* flags_ = nullptr;   // [kMaxRanks][kMaxCtas]: (peer, CTA) -> the epoch it staged
  uint32_t* epochs_ = nullptr;  // [kMaxCtas]: this rank's last epoch per CTA
  std::vector<void*> all_staging_;
  std::vector<uint32_t*> all_flags_;
};

}  // namespace nf::cuda
