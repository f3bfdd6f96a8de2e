#include "backends/cuda/cuda_tp_backend.h"

#include <cuda_runtime_api.h>
#include <fmt/core.h>

#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "common/status.h"

namespace nf {

CudaTpBackend::CudaTpBackend(const ModelConfig& config, const WeightSource& weights,
                             std::span<const float> rope_inv_freq, const CudaBackendConfig& opts,
                             const CudaTpConfig& tp)
    : config_(config) {
  const int N = tp.tensor_parallel_size;
  NF_CHECK(N >= 1, "--tensor-parallel-size {}", N);
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess) {
    cudaGetLastError();
    devices = 0;
  }
  if (devices < N)
    fail("--tensor-parallel-size {}: {} CUDA device{} visible, one GPU per rank is needed", N,
         devices, devices == 1 ? " is" : "s are");
  std::vector<int> ids(static_cast<size_t>(N));
  for (int r = 0; r < N; ++r) ids[static_cast<size_t>(r)] = r;
  if (tp.allreduce != "nccl" && tp.allreduce != "peer")
    fail("--tp-allreduce {}: nccl or peer", tp.allreduce);
  comms_ = cuda::make_nccl_communicators(ids, tp.allreduce == "nccl" ? tp.comm_ctas : 0);
  if (tp.allreduce == "peer") {
    std::string why;
    // Room for the largest all-reduce: the residual stream of a full batch.
    peer_ = cuda::PeerAllReduce::create(
        ids, static_cast<size_t>(opts.max_batch_tokens) * static_cast<size_t>(config.hidden_size),
        tp.comm_ctas, &why);
    if (peer_.empty()) fail("--tp-allreduce peer: {}", why);
  }
  ranks_.resize(static_cast<size_t>(N));
  threads_ = std::make_unique<RankThreads>(N, /*caller_is_rank0=*/false);
  // Every rank loads its shard and sizes its pool; the engine uses the smallest pool's block
  // count, so that a block id is valid on all.
  threads_->run([&](int r) {
    CudaBackendConfig o = opts;
    o.device = r;
    o.tp_rank = r;
    o.tp_size = N;
    o.comm = comms_[static_cast<size_t>(r)].get();
    if (!peer_.empty()) o.peer_allreduce = peer_[static_cast<size_t>(r)].get();
    ranks_[static_cast<size_t>(r)] = std::make_unique<CudaBackend>(config, weights, rope_inv_freq, o);
  });
  num_blocks_ = ranks_[0]->num_kv_blocks();
  for (const auto& r : ranks_) num_blocks_ = std::min(num_blocks_, r->num_kv_blocks());
  fmt::print(stderr,
             "CUDA tensor parallel: {} ranks on devices 0-{}, {} all-reduce, {} KV blocks "
             "each\n",
             N, N - 1, peer_.empty() ? "NCCL" : "peer", num_blocks_);
}

// The rank threads stop first, then the ranks, then the communicators they use (members in
// reverse order).
CudaTpBackend::~CudaTpBackend() = default;

void CudaTpBackend::forward(const ScheduledBatch& batch, std::span<float> logits) {
  threads_->run([&](int r) {
    ranks_[static_cast<size_t>(r)]->forward(batch, r == 0 ? logits : std::span<float>());
  });
}

void CudaTpBackend::forward_sample(const ScheduledBatch& batch, const DeviceSampleBatch& sampling,
                                   DeviceSampleResult& out) {
  std::vector<DeviceSampleResult> others(ranks_.size() - 1);
  threads_->run([&](int r) {
    ranks_[static_cast<size_t>(r)]->forward_sample(
        batch, sampling, r == 0 ? out : others[static_cast<size_t>(r - 1)]);
  });
}

void CudaTpBackend::set_pipeline(const PipelineConfig& pipeline) {
  threads_->run([&](int r) { ranks_[static_cast<size_t>(r)]->set_pipeline(pipeline); });
}

size_t CudaTpBackend::kv_block_bytes() const {
  return ranks_[0]->kv_block_bytes();
}

uint64_t CudaTpBackend::start_copies(const std::function<uint64_t(CudaBackend&)>& start) {
  std::vector<uint64_t> tickets;
  for (auto& r : ranks_) tickets.push_back(start(*r));
  std::lock_guard<std::mutex> lock(kv_mu_);
  kv_copies_.emplace(++kv_tickets_, std::move(tickets));
  return kv_tickets_;
}

uint64_t CudaTpBackend::start_kv_save(std::span<const int32_t> blocks,
                                      std::span<std::byte* const> dst) {
  return start_copies([&](CudaBackend& r) { return r.start_kv_save(blocks, dst); });
}

uint64_t CudaTpBackend::start_kv_load(std::span<const int32_t> blocks,
                                      std::span<const std::byte* const> src) {
  return start_copies([&](CudaBackend& r) { return r.start_kv_load(blocks, src); });
}

void CudaTpBackend::wait_kv_copy(uint64_t ticket) {
  std::vector<uint64_t> tickets;
  {
    std::lock_guard<std::mutex> lock(kv_mu_);
    auto it = kv_copies_.find(ticket);
    NF_CHECK(it != kv_copies_.end(), "wait_kv_copy: no copy {} in flight", ticket);
    tickets = std::move(it->second);
    kv_copies_.erase(it);
  }
  for (size_t r = 0; r < ranks_.size(); ++r) ranks_[r]->wait_kv_copy(tickets[r]);
}

}  // namespace nf
