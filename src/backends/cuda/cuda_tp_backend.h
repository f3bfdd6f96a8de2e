// Tensor parallelism on the GPUs of one host: one process drives N GPUs, each with its own host
// thread, CUDA streams and CudaBackend rank (cuda_backend.h, tp_rank / tp_size), which holds
// its shard of the weights and KV cache. The ranks' collectives go through NCCL
// (nccl_communicator.h). Every forward runs on all ranks at once; rank 0 returns the logits or
// samples. The engine sees one Backend with the whole model's config and one KV block space:
// block b is block b of every rank's pool.
#pragma once

#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/nccl_communicator.h"
#include "backends/cuda/peer_allreduce.h"
#include "runtime/rank_threads.h"

namespace nf {

struct CudaTpConfig {
  int tensor_parallel_size = 2;  // ranks, on CUDA devices 0 .. N-1
  // CTAs per collective (the SMs an all-reduce may take from the GEMMs it overlaps): NCCL's
  // maxCTAs, or the peer all-reduce's grid; 0: NCCL's choice, 16 for the peer all-reduce.
  int comm_ctas = 0;
  // The bf16 all-reduces: "nccl", or "peer" (experimental: one-shot over NVLink peer memory,
  // peer_allreduce.h; the LM head's all-gather stays NCCL's).
  std::string allreduce = "nccl";
};

class CudaTpBackend final : public Backend {
 public:
  // Builds the ranks at once, each on its thread, reading its shard of every tensor from
  // `weights`. opts.device is ignored (rank r runs on device r); opts.num_kv_blocks, when 0,
  // becomes the smallest pool any rank can hold. Throws nf::Error with fewer than N devices,
  // without NCCL, or when a rank fails.
  CudaTpBackend(const ModelConfig& config, const WeightSource& weights,
                std::span<const float> rope_inv_freq, const CudaBackendConfig& opts,
                const CudaTpConfig& tp);
  ~CudaTpBackend() override;

  const ModelConfig& config() const override { return config_; }
  int block_size() const override { return ranks_[0]->block_size(); }
  int64_t num_kv_blocks() const override { return num_blocks_; }
  void forward(const ScheduledBatch& batch, std::span<float> logits) override;
  bool samples_on_device() const override { return true; }
  void forward_sample(const ScheduledBatch& batch, const DeviceSampleBatch& sampling,
                      DeviceSampleResult& out) override;
  // Rank 0's (every rank runs the same ops on its shard).
  std::string op_profile_json() const override { return ranks_[0]->op_profile_json(); }
  DeviceTime device_time() const override { return ranks_[0]->device_time(); }
  void set_pipeline(const PipelineConfig& pipeline) override;
  // KV offload: a host block holds the whole model's [layers, 2, kv_heads, block, head_dim],
  // each rank copying its KV heads' rows of it.
  size_t kv_block_bytes() const override;
  std::string kv_layout() const override { return ranks_[0]->kv_layout(); }
  uint64_t start_kv_save(std::span<const int32_t> blocks, std::span<std::byte* const> dst) override;
  uint64_t start_kv_load(std::span<const int32_t> blocks,
                         std::span<const std::byte* const> src) override;
  void wait_kv_copy(uint64_t ticket) override;
  HostAllocator host_allocator() const override { return ranks_[0]->host_allocator(); }
  int tensor_parallel_size() const { return static_cast<int>(ranks_.size()); }

 private:
  // Starts one copy per rank (each its KV heads' share of the host blocks) under one ticket.
  uint64_t start_copies(const std::function<uint64_t(CudaBackend&)>& start);

  ModelConfig config_;
  int64_t num_blocks_ = 0;
  std::vector<std::unique_ptr<cuda::NcclCommunicator>> comms_;
  std::vector<std::unique_ptr<cuda::PeerAllReduce>> peer_;  // --tp-allreduce peer
  std::vector<std::unique_ptr<CudaBackend>> ranks_;
  std::mutex kv_mu_;
  uint64_t kv_tickets_ = 0;
  std::unordered_map<uint64_t, std::vector<uint64_t>> kv_copies_;  // ticket -> ranks' tickets
  // A thread per GPU. Every check that can reject a batch runs on every rank alike before the
  // first collective, so the ranks fail together; a device fault in the middle of a forward
  // leaves the others waiting in NCCL, fatal as in other NCCL engines.
  std::unique_ptr<RankThreads> threads_;
};

}  // namespace nf
