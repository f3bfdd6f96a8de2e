// KV-cache offload tiers below the device's prefix cache (issue 7): host memory, then SSD files
// written and read with io_uring. Blocks are addressed by the prefix cache's chained hash
// (KvCacheManager::chain_hash) and carry their tokens, so a hit is verified like a device one.
//
// Flow (engine/kv_cache_manager.h, runtime/executor.h):
//   - save: when a registered device block loses its last user (its request finished or was
//     preempted), the executor copies it out before the next forward (every earlier writer has
//     run, no later one has) and hands it to KvOffload::save: into the host tier, whose least
//     recently used blocks move down to the disk tier (or straight to disk without a host tier).
//     Disk writes run on the disk tier's own thread: saving never waits for the disk.
//   - load: a new request's prefix lookup continues below the device cache block by block; a hit
//     (host first, then disk, promoted to host) is copied into a fresh device block by the
//     executor before the forward that first reads it, and the request computes only the rest.
//
// Each tier is LRU with exact capacity accounting: the host tier in payload bytes, the disk
// tier in file bytes (header, tokens and payload). A disk file holds a header with a magic, the
// format version, a hash of the model and layout identity, the block's hash, its tokens and an
// xxh64 checksum over tokens and payload: a corrupt, truncated or foreign file is a miss (logged,
// and the file removed). A directory that cannot be created or written, or a full disk, disables
// the disk tier with one warning; the engine keeps serving. A restart with the same directory
// indexes the valid files of the same identity (oldest first in the LRU).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "engine/kv_disk_tier.h"
#include "engine/kv_host_tier.h"
#include "runtime/host_block_pool.h"
#include "runtime/kv_transfer.h"

namespace nf {

struct KvOffloadConfig {
  double host_gb = 0;     // --kv-host-gb: host tier capacity (0: none)
  std::string disk_dir;   // --kv-disk-dir: disk tier directory (empty: none)
  double disk_gb = 0;     // --kv-disk-gb: disk tier capacity
  bool posix_io = false;  // the disk tier uses pread/pwrite instead of io_uring (tests)
  bool enabled() const { return host_gb > 0 || (!disk_dir.empty() && disk_gb > 0); }
};

struct KvTierStats {
  int64_t saves = 0;                                 // blocks handed to save()
  int64_t host_hits = 0, disk_hits = 0, misses = 0;  // load() results, in blocks
  int64_t host_blocks = 0, disk_blocks = 0;          // resident now
  int64_t host_bytes = 0, disk_bytes = 0;            // their accounted bytes
  int64_t host_evictions = 0, disk_evictions = 0;
  int64_t disk_writes = 0;     // files written
  int64_t disk_bad_files = 0;  // corrupt, truncated or foreign files met (each a miss)
  int64_t prefetched = 0;      // blocks moved from disk to host ahead of their request
  bool disk_enabled = false;
};

// Both tiers behind one lock, with the statistics. Thread-safe.
class KvOffload final : public KvSaveSink {
 public:
  // identity: the model and KV layout (blocks of another identity are foreign); block_bytes:
  // one block's KV over all layers; block_size: its tokens.
  // block_size: its tokens; allocator: the host buffers' memory (pinned on CUDA, so that the
  // device copies blocks straight to and from them). The host tier's whole capacity is
  // allocated here.
  KvOffload(const KvOffloadConfig& config, const std::string& identity, size_t block_bytes,
            int block_size, HostAllocator allocator = HostAllocator::plain());
  ~KvOffload();
  using Buffer = HostBlockPool::Buffer;
  size_t block_bytes() const { return block_bytes_; }
  // A buffer of the host pool, for a block to be saved (the executor copies into it).
  Buffer new_buffer() override { return pool_->get(); }
  const HostBlockPool& pool() const { return *pool_; }
  bool contains(uint64_t hash) const;
  void save(uint64_t hash, std::span<const int32_t> tokens, std::span<const std::byte> payload);
  // The same, adopting a buffer of new_buffer() (not written to again) without a copy.
  void save(uint64_t hash, std::span<const int32_t> tokens, Buffer payload) override;
  enum class Tier { kNone, kHost, kDisk };
  Tier load(uint64_t hash, std::span<const int32_t> tokens, std::span<std::byte> out);
  // The same without a copy on a host hit: the block's buffer, shared with the host tier (a disk
  // hit is read into a new buffer and promoted to the host tier with it). Null on a miss.
  // read_disk false: host only (a block the prefetch brought up from disk still counts as a disk
  // hit, on its first use).
  std::pair<Tier, Buffer> load(uint64_t hash, std::span<const int32_t> tokens,
                               bool read_disk = true);
  KvTierStats stats() const;
  void flush();  // the disk tier's queued writes
  DiskKvTier* disk() { return disk_.get(); }
  // Moves a prompt's prefix blocks (in chain order) from disk up to the host tier in the
  // background, so that its admission finds them in memory; stops at the first block on
  // neither tier. Returns a flag set once done (null: nothing to do; a no-op without both
  // tiers). wait_prefetch() returns once all queued ran.
  struct BlockRef {
    uint64_t hash;
    std::vector<int32_t> tokens;
  };
  using PrefetchDone = std::shared_ptr<std::atomic<bool>>;
  PrefetchDone prefetch(std::vector<BlockRef> blocks);
  void wait_prefetch();

 private:
  void prefetch_loop();
  // Into the host tier (under mu_), its least recently used blocks moving down to disk; false
  // without a host tier that holds anything.
  bool put_host(uint64_t hash, std::span<const int32_t> tokens, Buffer payload,
                bool promoted = false);
  // The block from the disk tier into a new buffer (null on a miss); not under mu_.
  Buffer read_disk(uint64_t hash, std::span<const int32_t> tokens);

  size_t block_bytes_;
  std::shared_ptr<HostBlockPool> pool_;
  mutable std::mutex mu_;
  std::unique_ptr<HostKvTier> host_;
  std::unique_ptr<DiskKvTier> disk_;
  KvTierStats st_;
  // The prefetch threads (started on first use; each takes a prompt at a time, so that several
  // reads are in flight on the disk and their checksums run on several cores) and their queue,
  // under pf_mu_.
  static constexpr int kPrefetchThreads = 4;
  std::mutex pf_mu_;
  std::condition_variable pf_cv_, pf_idle_cv_;
  std::deque<std::pair<std::vector<BlockRef>, PrefetchDone>> pf_queue_;
  bool pf_stop_ = false;
  int pf_busy_ = 0;
  std::vector<std::thread> pf_threads_;
};

}  // namespace nf
