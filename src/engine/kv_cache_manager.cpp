#include "engine/kv_cache_manager.h"

#include "common/status.h"

namespace nf {

KvCacheManager::KvCacheManager(int64_t num_blocks, int block_size)
    : num_blocks_(num_blocks), block_size_(block_size) {
  NF_CHECK(num_blocks > 0 && block_size > 0, "KV pool of {} blocks of {}", num_blocks, block_size);
  free_.reserve(static_cast<size_t>(num_blocks));
  // Lowest ids on top of the stack, so small runs touch the start of the pool.
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

bool KvCacheManager::reserve(std::vector<int32_t>& table, int64_t num_tokens) {
  const int64_t need = blocks_for(num_tokens) - static_cast<int64_t>(table.size());
  if (need <= 0) return true;
  if (need > num_free_blocks()) return false;
  for (int64_t i = 0; i < need; ++i) {
    table.push_back(free_.back());
    free_.pop_back();
  }
  return true;
}

void KvCacheManager::release(std::vector<int32_t>& table) {
  for (int32_t b : table) free_.push_back(b);
  table.clear();
}

void KvCacheManager::check_integrity(const std::vector<const std::vector<int32_t>*>& tables) const {
  std::vector<uint8_t> seen(static_cast<size_t>(num_blocks_), 0);
  for (int32_t b : free_) {
    NF_CHECK(b >= 0 && b < num_blocks_, "free block id {} out of range", b);
    NF_CHECK(!seen[b], "block {} is free twice", b);
    seen[b] = 1;
  }
  for (const auto* t : tables) {
    for (int32_t b : *t) {
      NF_CHECK(b >= 0 && b < num_blocks_, "owned block id {} out of range", b);
      NF_CHECK(!seen[b], "block {} is owned twice or both owned and free", b);
      seen[b] = 1;
    }
  }
  for (int64_t b = 0; b < num_blocks_; ++b) NF_CHECK(seen[b], "block {} leaked", b);
}

}  // namespace nf
