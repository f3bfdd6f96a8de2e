#include "engine/kv_cache_manager.h"

#include <algorithm>

#include "common/status.h"
#include "engine/kv_offload.h"

namespace nf {

KvCacheManager::KvCacheManager(int64_t num_blocks, int block_size, bool prefix_caching)
    : num_blocks_(num_blocks), block_size_(block_size), prefix_caching_(prefix_caching) {
  NF_CHECK(num_blocks > 0 && block_size > 0, "KV pool of {} blocks of {}", num_blocks, block_size);
  blocks_.resize(static_cast<size_t>(num_blocks));
  free_.reserve(static_cast<size_t>(num_blocks));
  // Lowest ids on top of the stack, so small runs touch the start of the pool.
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

uint64_t KvCacheManager::chain_hash(uint64_t parent, std::span<const int32_t> toks) {
  // 64-bit mix (splitmix64 finalizer) folded over the parent hash and the tokens.
  auto mix = [](uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  uint64_t h = mix(parent + 0x9e3779b97f4a7c15ull);
  for (int32_t t : toks) h = mix(h ^ (static_cast<uint64_t>(static_cast<uint32_t>(t)) + 0x9e3779b97f4a7c15ull));
  return h;
}

int64_t KvCacheManager::match_prefix(std::span<const int32_t> tokens, std::vector<int32_t>& table,
                                     std::vector<uint64_t>& hashes, bool read_disk) {
  NF_CHECK(table.empty() && hashes.empty(), "match_prefix on a table that already has blocks");
  if (!prefix_caching_ || tokens.empty()) return 0;
  stats_.prefix_queries += static_cast<int64_t>(tokens.size());
  const int64_t max_blocks = (static_cast<int64_t>(tokens.size()) - 1) / block_size_;
  uint64_t parent = 0;
  for (int64_t i = 0; i < max_blocks; ++i) {
    const auto blk = tokens.subspan(i * block_size_, block_size_);
    const uint64_t h = chain_hash(parent, blk);
    auto it = cached_.find(h);
    if (it == cached_.end()) break;
    Block& b = blocks_[it->second];
    if (!std::equal(blk.begin(), blk.end(), b.tokens.begin(), b.tokens.end())) break;  // collision
    if (b.ref++ == 0 && !b.saving && !b.loading) lru_.erase(b.lru);
    table.push_back(it->second);
    hashes.push_back(h);
    parent = h;
  }
  // Below the device cache: each block found in an offload tier gets a fresh device block,
  // registered now and held until the queued load has filled it.
  if (offload_ != nullptr) {
    for (int64_t i = static_cast<int64_t>(table.size()); i < max_blocks; ++i) {
      const auto blk = tokens.subspan(i * block_size_, block_size_);
      const uint64_t h = chain_hash(parent, blk);
      if (cached_.count(h) != 0 || num_free_blocks() == 0 || !offload_->contains(h)) break;
      auto [tier, payload] = offload_->load(h, blk, read_disk);
      if (tier == KvOffload::Tier::kNone) break;
      const int32_t id = take_block();
      Block& b = blocks_[id];
      b.registered = true;
      b.saved = true;
      b.loading = true;
      ++num_copying_;
      b.hash = h;
      b.tokens.assign(blk.begin(), blk.end());
      cached_.emplace(h, id);
      pending_loads_.push_back({id, std::move(payload)});
      (tier == KvOffload::Tier::kHost ? stats_.host_hit_tokens : stats_.disk_hit_tokens) +=
          block_size_;
      table.push_back(id);
      hashes.push_back(h);
      parent = h;
    }
  }
  const int64_t hit = static_cast<int64_t>(table.size()) * block_size_;
  stats_.prefix_hits += hit;
  return hit;
}

void KvCacheManager::unregister(int32_t id) {
  Block& b = blocks_[id];
  if (!b.registered) return;
  auto it = cached_.find(b.hash);
  if (it != cached_.end() && it->second == id) cached_.erase(it);
  b.registered = false;
  b.saved = false;
  b.tokens.clear();
}

int32_t KvCacheManager::take_block() {
  int32_t id;
  if (!free_.empty()) {
    id = free_.back();
    free_.pop_back();
  } else {
    NF_CHECK(!lru_.empty(), "take_block with no free or evictable block");
    id = lru_.front();
    lru_.pop_front();
    unregister(id);
  }
  Block& b = blocks_[id];
  b.ref = 1;
  return id;
}

bool KvCacheManager::reserve(std::vector<int32_t>& table, int64_t num_tokens) {
  const int64_t need = blocks_for(num_tokens) - static_cast<int64_t>(table.size());
  if (need <= 0) return true;
  if (need > num_free_blocks()) return false;
  for (int64_t i = 0; i < need; ++i) table.push_back(take_block());
  return true;
}

void KvCacheManager::commit_full_blocks(std::span<const int32_t> tokens, int64_t num_computed,
                                        const std::vector<int32_t>& table, std::vector<uint64_t>& hashes) {
  if (!prefix_caching_) return;
  const int64_t full = std::min<int64_t>(num_computed / block_size_, static_cast<int64_t>(table.size()));
  for (int64_t i = static_cast<int64_t>(hashes.size()); i < full; ++i) {
    const auto blk = tokens.subspan(i * block_size_, block_size_);
    const uint64_t h = chain_hash(i ? hashes[i - 1] : 0, blk);
    hashes.push_back(h);
    Block& b = blocks_[table[i]];
    if (b.registered || cached_.count(h)) continue;  // an equal block is already cached
    b.registered = true;
    b.hash = h;
    b.tokens.assign(blk.begin(), blk.end());
    cached_.emplace(h, table[i]);
  }
}

void KvCacheManager::release(std::vector<int32_t>& table) {
  // Later blocks of a sequence are less likely to be shared: free them first so that the
  // LRU evicts a prefix's tail before its head.
  for (auto it = table.rbegin(); it != table.rend(); ++it) {
    Block& b = blocks_[*it];
    NF_CHECK(b.ref > 0, "releasing block {} with no reference", *it);
    if (--b.ref > 0) continue;
    if (b.registered && offload_ != nullptr && !b.saved) {
      pending_saves_.push_back({*it, b.hash, b.tokens});
      b.saved = true;
      b.saving = true;
      ++num_copying_;
      ++stats_.saved_blocks;
    }
    if (b.saving || b.loading) continue;  // evictable when the copy has finished (end_hold)
    if (b.registered) {
      lru_.push_back(*it);
      b.lru = std::prev(lru_.end());
    } else {
      free_.push_back(*it);
    }
  }
  table.clear();
}

KvOffload::PrefetchDone KvCacheManager::prefetch_prefix(std::span<const int32_t> tokens) {
  if (offload_ == nullptr || !prefix_caching_ || tokens.empty()) return nullptr;
  const int64_t max_blocks = (static_cast<int64_t>(tokens.size()) - 1) / block_size_;
  std::vector<KvOffload::BlockRef> refs;
  uint64_t parent = 0;
  for (int64_t i = 0; i < max_blocks; ++i) {
    const auto blk = tokens.subspan(i * block_size_, block_size_);
    parent = chain_hash(parent, blk);
    if (refs.empty() && cached_.count(parent) != 0) continue;  // on the device
    refs.push_back({parent, std::vector<int32_t>(blk.begin(), blk.end())});
  }
  return offload_->prefetch(std::move(refs));
}

std::vector<KvSave> KvCacheManager::take_saves() {
  std::vector<KvSave> out;
  out.swap(pending_saves_);
  return out;
}

std::vector<KvLoad> KvCacheManager::take_loads() {
  std::vector<KvLoad> out;
  out.swap(pending_loads_);
  return out;
}

void KvCacheManager::end_holds(std::span<const int32_t> ids, bool Block::*held, const char* call,
                               const char* state) {
  for (int32_t id : ids) {
    NF_CHECK(id >= 0 && id < num_blocks_ && blocks_[id].*held, "{}: block {} is not {}", call, id,
             state);
    Block& b = blocks_[id];
    b.*held = false;
    --num_copying_;
    if (b.ref > 0 || b.saving || b.loading) continue;
    lru_.push_back(id);  // registered: only an eviction from the LRU unregisters
    b.lru = std::prev(lru_.end());
  }
}

void KvCacheManager::finish_saves(std::span<const int32_t> ids) {
  end_holds(ids, &Block::saving, "finish_saves", "saving");
}

void KvCacheManager::finish_loads(std::span<const int32_t> ids) {
  end_holds(ids, &Block::loading, "finish_loads", "loading");
}

bool KvCacheManager::loading_any(std::span<const int32_t> table) const {
  return std::any_of(table.begin(), table.end(), [&](int32_t id) { return blocks_[id].loading; });
}

void KvCacheManager::check_integrity(const std::vector<const std::vector<int32_t>*>& tables) const {
  std::vector<int32_t> refs(static_cast<size_t>(num_blocks_), 0);
  for (const auto* t : tables)
    for (int32_t b : *t) {
      NF_CHECK(b >= 0 && b < num_blocks_, "owned block id {} out of range", b);
      ++refs[b];
    }
  std::vector<uint8_t> state(static_cast<size_t>(num_blocks_), 0);  // 1 free, 2 evictable
  for (int32_t b : free_) {
    NF_CHECK(b >= 0 && b < num_blocks_ && state[b] == 0, "block {} is free twice", b);
    state[b] = 1;
    NF_CHECK(!blocks_[b].registered, "free block {} is still registered", b);
  }
  for (int32_t b : lru_) {
    NF_CHECK(state[b] == 0, "block {} is both free and evictable", b);
    state[b] = 2;
    NF_CHECK(blocks_[b].registered, "evictable block {} is not registered", b);
    NF_CHECK(!blocks_[b].saving && !blocks_[b].loading, "evictable block {} is held for a copy", b);
  }
  int64_t copying = 0;
  for (int64_t b = 0; b < num_blocks_; ++b) {
    if (blocks_[b].saving || blocks_[b].loading) {
      NF_CHECK(!(blocks_[b].saving && blocks_[b].loading), "block {} is saved and loaded at once", b);
      ++copying;
      NF_CHECK(state[b] == 0 && blocks_[b].registered, "block {} is held for a copy but free or unregistered", b);
      NF_CHECK(blocks_[b].ref == refs[b], "block {} has {} references but {} tables hold it", b,
               blocks_[b].ref, refs[b]);
    } else if (state[b] != 0) {
      NF_CHECK(refs[b] == 0 && blocks_[b].ref == 0, "block {} is free or evictable but owned {} times", b, refs[b]);
    } else {
      NF_CHECK(blocks_[b].ref > 0, "block {} leaked (neither free, evictable nor owned)", b);
      NF_CHECK(blocks_[b].ref == refs[b], "block {} has {} references but {} tables hold it", b,
               blocks_[b].ref, refs[b]);
    }
  }
  NF_CHECK(copying == num_copying_, "{} blocks held for copies, counted {}", copying, num_copying_);
  for (const auto& [h, b] : cached_) NF_CHECK(blocks_[b].registered && blocks_[b].hash == h, "stale cache entry");
}

}  // namespace nf
