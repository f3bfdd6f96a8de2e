// CudaBackend: the KV pool's block copies to and from host memory (the offload lanes).
#include "backends/cuda/cuda_backend.h"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>
#include <type_traits>

#include "backends/cuda/activation.h"
#include "backends/cuda/attention.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/embedding.h"
#include "backends/cuda/flashinfer/fi_attention.h"
#include "backends/cuda/kv_copy.h"
#include "backends/cuda/nccl_communicator.h"
#include "backends/cuda/norm.h"
#include "backends/cuda/peer_allreduce.h"
#include "backends/cuda/rope.h"
#include "common/half.h"
#include "common/status.h"

namespace nf {

using cuda::DType;
using cuda::TensorView;

size_t CudaBackend::local_kv_block_bytes() const {
  return static_cast<size_t>(local_.num_layers) * 2 * local_.num_kv_heads * opts_.block_size *
         local_.head_dim * 2;
}

size_t CudaBackend::kv_block_bytes() const {
  return local_kv_block_bytes() * static_cast<size_t>(opts_.tp_size);
}

std::string CudaBackend::kv_layout() const {
  return fmt::format("bf16 [layers {}, 2, kv_heads {}, block {}, head_dim {}]", config_.num_layers,
                     config_.num_kv_heads, opts_.block_size, config_.head_dim);
}

uint64_t CudaBackend::kv_copy(CopyLane& lane, std::span<const int32_t> blocks,
                              std::span<std::byte* const> host, bool save) {
  NF_CHECK(blocks.size() == host.size(), "KV copy: {} blocks, {} buffers", blocks.size(),
           host.size());
  // A host block is the whole model's [layers, 2, kv_heads, block, head_dim]; this rank's KV
  // heads are one row of `width` bytes in each (layer, K/V) of it, `pitch` bytes apart.
  const size_t bb = local_kv_block_bytes(), per_layer = bb / layers_.size();
  const size_t width = per_layer / 2, pitch = width * static_cast<size_t>(opts_.tp_size);
  const size_t host_offset = width * static_cast<size_t>(opts_.tp_rank);
  std::byte* stage = lane.stage.as<std::byte>();
  NF_CUDA_CHECK(cudaSetDevice(opts_.device));  // copier threads drive every rank's device
  for (size_t i0 = 0; i0 < blocks.size(); i0 += cuda::kKvCopyMaxBlocks) {
    const size_t n = std::min<size_t>(cuda::kKvCopyMaxBlocks, blocks.size() - i0);
    for (size_t i = i0; i < i0 + n; ++i)
      NF_CHECK(blocks[i] >= 0 && blocks[i] < num_blocks_, "KV copy of block {}", blocks[i]);
    const auto chunk = blocks.subspan(i0, n);
    if (save) cuda::kv_block_copy(kv_layer_ptrs_, per_layer, chunk, stage, true, lane.stream);
    for (size_t i = 0; i < n; ++i) {
      std::byte* dev = stage + i * bb;
      std::byte* h = host[i0 + i] + host_offset;
      if (opts_.tp_size == 1) {
        NF_CUDA_CHECK(cudaMemcpyAsync(save ? h : dev, save ? dev : h, bb,
                                      save ? cudaMemcpyDeviceToHost : cudaMemcpyHostToDevice,
                                      lane.stream));
      } else if (save) {
        NF_CUDA_CHECK(cudaMemcpy2DAsync(h, pitch, dev, width, width, 2 * layers_.size(),
                                        cudaMemcpyDeviceToHost, lane.stream));
      } else {
        NF_CUDA_CHECK(cudaMemcpy2DAsync(dev, width, h, pitch, width, 2 * layers_.size(),
                                        cudaMemcpyHostToDevice, lane.stream));
      }
    }
    if (!save) cuda::kv_block_copy(kv_layer_ptrs_, per_layer, chunk, stage, false, lane.stream);
  }
  std::lock_guard<std::mutex> lock(kv_mu_);
  cudaEvent_t ev = nullptr;
  if (kv_free_events_.empty()) {
    NF_CUDA_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
  } else {
    ev = kv_free_events_.back();
    kv_free_events_.pop_back();
  }
  NF_CUDA_CHECK(cudaEventRecord(ev, lane.stream));
  kv_copies_.emplace(++kv_tickets_, ev);
  return kv_tickets_;
}

uint64_t CudaBackend::start_kv_save(std::span<const int32_t> blocks,
                                    std::span<std::byte* const> dst) {
  return kv_copy(kv_lanes_[0], blocks, dst, /*save=*/true);
}

uint64_t CudaBackend::start_kv_load(std::span<const int32_t> blocks,
                                    std::span<const std::byte* const> src) {
  // Only read from: the host-to-device copy.
  return kv_copy(kv_lanes_[1], blocks,
                 {const_cast<std::byte* const*>(src.data()), src.size()}, /*save=*/false);
}

void CudaBackend::wait_kv_copy(uint64_t ticket) {
  cudaEvent_t ev = nullptr;
  {
    std::lock_guard<std::mutex> lock(kv_mu_);
    auto it = kv_copies_.find(ticket);
    NF_CHECK(it != kv_copies_.end(), "wait_kv_copy: no copy {} in flight", ticket);
    ev = it->second;
    kv_copies_.erase(it);
  }
  const cudaError_t st = cudaEventSynchronize(ev);  // any thread: the event knows its device
  std::lock_guard<std::mutex> lock(kv_mu_);
  kv_free_events_.push_back(ev);
  NF_CUDA_CHECK(st);
}

void CudaBackend::read_kv_block(int32_t block, std::span<std::byte> out) {
  NF_CHECK(out.size() == kv_block_bytes(), "read_kv_block: {} bytes", out.size());
  std::byte* dst = out.data();
  wait_kv_copy(start_kv_save({&block, 1}, {&dst, 1}));
}

void CudaBackend::write_kv_block(int32_t block, std::span<const std::byte> in) {
  NF_CHECK(in.size() == kv_block_bytes(), "write_kv_block: {} bytes", in.size());
  const std::byte* src = in.data();
  wait_kv_copy(start_kv_load({&block, 1}, {&src, 1}));
}

HostAllocator CudaBackend::host_allocator() const {
  return {[](size_t n) -> void* {
            void* p = nullptr;
            return cudaHostAlloc(&p, n, cudaHostAllocPortable) == cudaSuccess ? p : nullptr;
          },
          [](void* p) { cudaFreeHost(p); }};
}

}  // namespace nf
