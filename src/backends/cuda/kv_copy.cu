#include "backends/cuda/cuda_check.h"
#include "backends/cuda/launch.h"

namespace nf::cuda {
namespace {

// One CTA per (layer, block) slice: per_layer_bytes in 16-byte words.
__global__ void kv_block_copy_kernel(const launch::KvBlockCopy a) {
  const int l = blockIdx.x % a.num_layers, i = blockIdx.x / a.num_layers;
  uint4* pool =
      reinterpret_cast<uint4*>(a.layers[l] + static_cast<size_t>(a.blocks[i]) * a.per_layer_bytes);
  uint4* stage = reinterpret_cast<uint4*>(a.staging + (static_cast<size_t>(i) * a.num_layers + l) *
                                                          a.per_layer_bytes);
  const size_t n = a.per_layer_bytes / 16;
  for (size_t k = threadIdx.x; k < n; k += blockDim.x) {
    if (a.gather) {
      stage[k] = pool[k];
    } else {
      pool[k] = stage[k];
    }
  }
}

}  // namespace

void launch::kv_block_copy(const KvBlockCopy& a, cudaStream_t stream) {
  kv_block_copy_kernel<<<a.num_layers * a.num_blocks, 256, 0, stream>>>(a);
  NF_CUDA_CHECK_LAUNCH();
}

}  // namespace nf::cuda
