// The KV offload's host tier (engine/kv_offload.h): an LRU of blocks in host memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "runtime/host_block_pool.h"

namespace nf {

// Host memory: blocks of `block_bytes` in an LRU of capacity floor(capacity / block_bytes), in
// buffers of `pool` (pinned memory on CUDA; a plain pool when null).
class HostKvTier {
 public:
  using Buffer = HostBlockPool::Buffer;
  HostKvTier(int64_t capacity_bytes, size_t block_bytes,
             std::shared_ptr<HostBlockPool> pool = nullptr);
  int64_t capacity_blocks() const { return capacity_blocks_; }
  int64_t size() const { return static_cast<int64_t>(map_.size()); }
  int64_t used_bytes() const { return size() * static_cast<int64_t>(block_bytes_); }
  bool contains(uint64_t hash) const { return map_.count(hash) != 0; }
  using Evicted = std::function<void(uint64_t hash, std::span<const int32_t> tokens,
                                     std::span<const std::byte> payload)>;
  // Inserts the block (or marks it recently used when present), first evicting least recently
  // used blocks to `evicted` while full. Returns false when the tier holds nothing (capacity 0).
  bool put(uint64_t hash, std::span<const int32_t> tokens, std::span<const std::byte> payload,
           const Evicted& evicted);
  // The same, adopting `payload` (a buffer of the pool, not written to again) without a copy.
  // promoted: it came up from the disk tier ahead of use (its first hit reports so).
  bool put(uint64_t hash, std::span<const int32_t> tokens, Buffer payload, const Evicted& evicted,
           bool promoted = false);
  // Copies the block to `out` and marks it recently used; false when absent or its tokens differ.
  bool get(uint64_t hash, std::span<const int32_t> tokens, std::span<std::byte> out);
  // The same without a copy: the block's buffer, shared (null when absent or other tokens);
  // `promoted` says whether this is the first hit since it came up from disk.
  Buffer get(uint64_t hash, std::span<const int32_t> tokens, bool* promoted = nullptr);
  int64_t evictions() const { return evictions_; }

 private:
  struct Entry {
    std::vector<int32_t> tokens;
    Buffer data;
    std::list<uint64_t>::iterator lru;
    bool promoted = false;
  };
  size_t block_bytes_;
  std::shared_ptr<HostBlockPool> pool_;
  int64_t capacity_blocks_;
  std::unordered_map<uint64_t, Entry> map_;
  std::list<uint64_t> lru_;  // least recently used first
  int64_t evictions_ = 0;
};

}  // namespace nf
