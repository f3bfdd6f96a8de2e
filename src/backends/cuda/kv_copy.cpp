#include "backends/cuda/kv_copy.h"

#include "backends/cuda/launch.h"
#include "common/status.h"

namespace nf::cuda {

void kv_block_copy(std::span<std::byte* const> layers, size_t per_layer_bytes,
                   std::span<const int32_t> blocks, std::byte* staging, bool gather,
                   cudaStream_t stream) {
  NF_CHECK(!layers.empty() && layers.size() <= kKvCopyMaxLayers &&
               blocks.size() <= kKvCopyMaxBlocks && per_layer_bytes % 16 == 0,
           "kv_block_copy: {} layers of {} bytes, {} blocks", layers.size(), per_layer_bytes,
           blocks.size());
  if (blocks.empty()) return;
  launch::KvBlockCopy a;
  for (size_t l = 0; l < layers.size(); ++l) {
    NF_CHECK(reinterpret_cast<uintptr_t>(layers[l]) % 16 == 0, "kv_block_copy: unaligned layer");
    a.layers[l] = layers[l];
  }
  for (size_t i = 0; i < blocks.size(); ++i) a.blocks[i] = blocks[i];
  a.num_layers = static_cast<int>(layers.size());
  a.num_blocks = static_cast<int>(blocks.size());
  a.per_layer_bytes = per_layer_bytes;
  a.staging = staging;
  a.gather = gather;
  launch::kv_block_copy(a, stream);
}

}  // namespace nf::cuda
