// Address-translation warm-up: one load per `stride` bytes of a device region, so that the GPU's
// TLBs hold the region's pages before a kernel that reads all of it at random (a layer's paged
// KV cache) starts. Changes no memory; results are unaffected whether it runs or not.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>

namespace nf::cuda {

inline constexpr size_t kTouchStride = size_t{2} << 20;  // the GPU's large page

// Loads one word every `stride` bytes of [base, base + bytes) (L2 only, result discarded).
// stride must be a positive multiple of 4; base 4-byte aligned.
void touch_pages(const void* base, size_t bytes, cudaStream_t stream,
                 size_t stride = kTouchStride);

}  // namespace nf::cuda
