// What moves KV blocks between the device pool and the offload tiers, as the executor sees it:
// the blocks to copy out (saves) and in (loads), and the sink that takes saved blocks. The KV
// manager (engine/kv_cache_manager) decides them; the offload tiers (engine/kv_offload)
// implement the sink; the executor only copies.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "runtime/host_block_pool.h"

namespace nf {

// A block to copy out of the device pool (its KV is final) and hand to the offload tiers.
struct KvSave {
  int32_t block = 0;
  uint64_t hash = 0;
  std::vector<int32_t> tokens;
};

// KV bytes to copy into a device block (a hit in an offload tier): a host-tier buffer, shared
// (the tier may drop it meanwhile; the buffer lives until the copy is done).
struct KvLoad {
  int32_t block = 0;
  std::shared_ptr<const std::byte> payload;
};

// Takes the blocks the executor copied out. Thread-safe (the executor's copier thread).
class KvSaveSink {
 public:
  virtual ~KvSaveSink() = default;
  // A host buffer for one block (from the sink's pool); may throw std::bad_alloc.
  virtual HostBlockPool::Buffer new_buffer() = 0;
  // Adopts a buffer of new_buffer(), copied and not written to again, as the block `hash`.
  virtual void save(uint64_t hash, std::span<const int32_t> tokens,
                    HostBlockPool::Buffer payload) = 0;
};

}  // namespace nf
