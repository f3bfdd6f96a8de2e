// Whole-block KV copies between the per-layer paged pools and a contiguous staging area, for
// the offload tiers (engine/kv_offload.h): block i of a batch occupies staging bytes
// [i * layers * per_layer, (i + 1) * layers * per_layer), layer by layer, which is the layout
// the tiers store (runtime/backend.h, kv_block_bytes). One kernel moves a batch of blocks, so a
// save is one gather plus one device-to-host copy per block, and a load the reverse.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "backends/cuda/launch.h"

namespace nf::cuda {

using launch::kKvCopyMaxBlocks;
using launch::kKvCopyMaxLayers;

// layers: each layer's pool base (its block b starts at b * per_layer_bytes); blocks: at most
// kKvCopyMaxBlocks ids. gather: pools -> staging; else staging -> pools.
void kv_block_copy(std::span<std::byte* const> layers, size_t per_layer_bytes,
                   std::span<const int32_t> blocks, std::byte* staging, bool gather,
                   cudaStream_t stream);

}  // namespace nf::cuda
