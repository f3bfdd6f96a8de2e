#include "backends/cuda/prefetch.h"

#include <cstdint>

#include "backends/cuda/launch.h"
#include "common/status.h"

namespace nf::cuda {

void touch_pages(const void* base, size_t bytes, cudaStream_t stream, size_t stride) {
  NF_CHECK(stride > 0 && stride % 4 == 0, "touch_pages: stride {} is not a positive multiple of 4",
           stride);
  NF_CHECK(reinterpret_cast<uintptr_t>(base) % 4 == 0, "touch_pages: base is not 4-byte aligned");
  if (base == nullptr || bytes < 4) return;
  const size_t count = (bytes - 4) / stride + 1;  // every load lies inside the region
  launch::touch_pages(base, count, stride, stream);
}

}  // namespace nf::cuda
