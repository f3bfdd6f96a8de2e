#include "engine/kv_host_tier.h"

#include <algorithm>
#include <cstring>

#include "common/status.h"

namespace nf {

HostKvTier::HostKvTier(int64_t capacity_bytes, size_t block_bytes,
                       std::shared_ptr<HostBlockPool> pool)
    : block_bytes_(block_bytes),
      pool_(pool ? std::move(pool)
                 : (block_bytes ? std::make_shared<HostBlockPool>(block_bytes) : nullptr)),
      capacity_blocks_(block_bytes == 0 ? 0
                                        : std::max<int64_t>(0, capacity_bytes) /
                                              static_cast<int64_t>(block_bytes)) {
  NF_CHECK(!pool_ || pool_->block_bytes() == block_bytes, "host KV tier: pool of {} byte blocks",
           pool_ ? pool_->block_bytes() : 0);
}

bool HostKvTier::put(uint64_t hash, std::span<const int32_t> tokens,
                     std::span<const std::byte> payload, const Evicted& evicted) {
  NF_CHECK(payload.size() == block_bytes_, "host KV tier: block of {} bytes, expected {}",
           payload.size(), block_bytes_);
  if (capacity_blocks_ == 0) return false;
  if (contains(hash)) return put(hash, tokens, Buffer(), evicted);  // marks it used
  Buffer data = pool_->get();
  std::copy(payload.begin(), payload.end(), data.get());
  return put(hash, tokens, std::move(data), evicted);
}

bool HostKvTier::put(uint64_t hash, std::span<const int32_t> tokens, Buffer payload,
                     const Evicted& evicted, bool promoted) {
  if (capacity_blocks_ == 0) return false;
  auto it = map_.find(hash);
  if (it != map_.end()) {
    lru_.splice(lru_.end(), lru_, it->second.lru);
    return true;
  }
  NF_CHECK(payload != nullptr, "host KV tier: no payload for block {:016x}", hash);
  while (size() >= capacity_blocks_) {
    const uint64_t victim = lru_.front();
    lru_.pop_front();
    auto v = map_.find(victim);
    if (evicted) evicted(victim, v->second.tokens, {v->second.data.get(), block_bytes_});
    map_.erase(v);  // the buffer goes back to the pool once no load shares it
    ++evictions_;
  }
  Entry& e = map_[hash];
  e.tokens.assign(tokens.begin(), tokens.end());
  e.data = std::move(payload);
  e.promoted = promoted;
  e.lru = lru_.insert(lru_.end(), hash);
  return true;
}

bool HostKvTier::get(uint64_t hash, std::span<const int32_t> tokens, std::span<std::byte> out) {
  NF_CHECK(out.size() == block_bytes_, "host KV tier: reading {} bytes, block is {}", out.size(),
           block_bytes_);
  const Buffer b = get(hash, tokens);
  if (!b) return false;
  std::copy(b.get(), b.get() + block_bytes_, out.begin());
  return true;
}

HostKvTier::Buffer HostKvTier::get(uint64_t hash, std::span<const int32_t> tokens,
                                   bool* promoted) {
  auto it = map_.find(hash);
  if (it == map_.end()) return nullptr;
  Entry& e = it->second;
  if (!std::equal(tokens.begin(), tokens.end(), e.tokens.begin(), e.tokens.end())) return nullptr;
  lru_.splice(lru_.end(), lru_, e.lru);
  if (promoted) *promoted = std::exchange(e.promoted, false);
  return e.data;
}

}  // namespace nf
