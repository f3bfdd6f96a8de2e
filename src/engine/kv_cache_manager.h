// KV block accounting on the host, with prefix caching. The manager never sees KV bytes; the
// backend owns them by block id.
//
// Design: a block is in exactly one of three states: free (on the free list, content
// meaningless), evictable (no user, but holding the KV of a full block registered under its
// prefix hash, kept in LRU order), or in use (ref > 0: the number of block tables holding it).
// A full block's hash chains its parent's hash with its tokens, so equal hashes mean equal
// prefixes; a hit is still verified against the block's stored tokens. New blocks come from the
// free list first, then by evicting the least recently used evictable block.
//
// With offload tiers (engine/kv_offload.h), blocks are copied on the device's copy engines
// beside the forwards, and a block whose copy is queued or running is held: it can be hit
// (shared) but is neither free nor evictable until the copy has finished, so no forward
// overwrites it meanwhile. A registered block that loses its last user is queued for saving
// (take_saves; finish_saves when copied out). A prefix lookup goes on below the device cache:
// each hit there takes a fresh block, registered at once, whose KV is queued for loading
// (take_loads; finish_loads when resident). No request whose table holds a loading block may
// run (loading_any); the scheduler admits it and runs it once its blocks are resident.
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <span>
#include <unordered_map>
#include <vector>

#include "engine/kv_offload.h"
#include "runtime/kv_transfer.h"

namespace nf {

class KvOffload;

struct KvCacheStats {
  int64_t prefix_queries = 0;  // prompt tokens looked up
  int64_t prefix_hits = 0;     // of those, tokens served from the cache (any tier)
  int64_t host_hit_tokens = 0, disk_hit_tokens = 0;  // of those, loaded from the offload tiers
  int64_t saved_blocks = 0;                          // blocks queued for saving
};

class KvCacheManager {
 public:
  KvCacheManager(int64_t num_blocks, int block_size, bool prefix_caching = true);

  int block_size() const { return block_size_; }
  int64_t num_blocks() const { return num_blocks_; }
  // Blocks that reserve() can hand out: free plus evictable (not those being saved).
  int64_t num_free_blocks() const { return static_cast<int64_t>(free_.size() + lru_.size()); }
  int64_t num_used_blocks() const { return num_blocks_ - num_free_blocks(); }
  int64_t blocks_for(int64_t num_tokens) const { return (num_tokens + block_size_ - 1) / block_size_; }
  bool prefix_caching() const { return prefix_caching_; }
  const KvCacheStats& stats() const { return stats_; }

  // For an empty table: appends the cached blocks that hold the longest prefix of `tokens`
  // (full blocks only, and never the block holding the last token, which must be computed to
  // get its logits), taking a reference on each. Fills `hashes` with their chain. Returns the
  // number of tokens covered.
  // read_disk false: the offload tiers are looked up in host memory only (the prompt's prefetch
  // is still running; see prefetch_prefix).
  int64_t match_prefix(std::span<const int32_t> tokens, std::vector<int32_t>& table,
                       std::vector<uint64_t>& hashes, bool read_disk = true);
  // Grows `table` so that it covers num_tokens tokens. All or nothing: returns false and
  // changes nothing when there are not enough free or evictable blocks.
  bool reserve(std::vector<int32_t>& table, int64_t num_tokens);
  // Registers the full blocks among the first num_computed tokens (whose KV is now written)
  // that are not registered yet; `hashes` holds the chain so far and grows.
  void commit_full_blocks(std::span<const int32_t> tokens, int64_t num_computed,
                          const std::vector<int32_t>& table, std::vector<uint64_t>& hashes);
  // Drops one reference on every block of `table` and clears it.
  void release(std::vector<int32_t>& table);
  // Offload tiers (null: none). Not owned; must outlive the manager.
  void set_offload(KvOffload* offload) { offload_ = offload; }
  KvOffload* offload() const { return offload_; }
  // A new prompt: its prefix blocks past those the device holds are moved from the disk tier
  // to the host tier in the background (KvOffload::prefetch), ahead of its admission, so that
  // the scheduling thread does not wait for the disk. Returns the prefetch's done flag (null:
  // nothing to fetch); the scheduler admits the request once it is set (reading from disk only
  // what the host tier dropped again meanwhile), or earlier, host-only, when the GPU would idle.
  KvOffload::PrefetchDone prefetch_prefix(std::span<const int32_t> tokens);
  // The saves and loads queued since the last call, in order, for the executor to start.
  std::vector<KvSave> take_saves();
  std::vector<KvLoad> take_loads();
  bool has_pending_io() const { return !pending_saves_.empty() || !pending_loads_.empty(); }
  // The copies of these blocks (from take_saves, take_loads) have finished: each is released
  // from its hold (evictable again, unless in use).
  void finish_saves(std::span<const int32_t> blocks);
  void finish_loads(std::span<const int32_t> blocks);
  // Blocks held for a copy (queued or running).
  int64_t num_copying() const { return num_copying_; }
  // Whether the table holds a block whose load has not finished: its request must not run.
  bool loading_any(std::span<const int32_t> table) const;

  // Aborts when the states above are inconsistent with the given tables (a leak, a double
  // owner, a wrong reference count).
  void check_integrity(const std::vector<const std::vector<int32_t>*>& tables) const;

  static uint64_t chain_hash(uint64_t parent, std::span<const int32_t> block_tokens);

 private:
  struct Block {
    int32_t ref = 0;
    bool registered = false;           // its hash is in cached_
    uint64_t hash = 0;
    std::vector<int32_t> tokens;       // the block's tokens, to verify a hit
    std::list<int32_t>::iterator lru;  // valid while evictable
    bool saved = false;                // in the offload tiers (or queued for them)
    bool saving = false;               // held: its copy out is queued or running
    bool loading = false;              // held: its copy in is queued or running
  };
  int32_t take_block();
  void unregister(int32_t b);
  // The copies (`held`: saving or loading) of these blocks finished: each becomes evictable
  // once nothing else holds it. `call` and `state` name them in the error for a block that was
  // not held so.
  void end_holds(std::span<const int32_t> ids, bool Block::*held, const char* call,
                 const char* state);

  int64_t num_blocks_;
  int block_size_;
  bool prefix_caching_;
  std::vector<Block> blocks_;
  std::vector<int32_t> free_;                    // stack of free block ids
  std::list<int32_t> lru_;                       // evictable blocks, least recently used first
  std::unordered_map<uint64_t, int32_t> cached_; // prefix hash -> block
  KvCacheStats stats_;
  KvOffload* offload_ = nullptr;
  std::vector<KvSave> pending_saves_;
  std::vector<KvLoad> pending_loads_;
  int64_t num_copying_ = 0;
};

}  // namespace nf
