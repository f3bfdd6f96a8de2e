// The KV offload's disk tier (engine/kv_offload.h): one file per block in a directory, written by
// a background thread through io_uring, with the file format that kv_disk_tier.cpp defines.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace nf {

// SSD files in a directory, one per block, written by a background thread through io_uring.
class DiskKvTier {
 public:
  DiskKvTier(const std::string& dir, int64_t capacity_bytes, const std::string& identity,
             size_t block_bytes, int block_size, bool posix_io = false);
  ~DiskKvTier();  // finishes the queued writes
  DiskKvTier(const DiskKvTier&) = delete;
  DiskKvTier& operator=(const DiskKvTier&) = delete;

  bool enabled() const;
  size_t file_bytes() const { return file_bytes_; }
  int64_t capacity_blocks() const { return capacity_blocks_; }
  bool contains(uint64_t hash) const;
  // Queues the block for writing and returns at once (the payload is copied); evicts least
  // recently used files to stay within capacity. No-op when present or disabled.
  void put(uint64_t hash, std::span<const int32_t> tokens, std::span<const std::byte> payload);
  // Reads and verifies the block into `out`; a bad file is a miss (logged, removed).
  bool get(uint64_t hash, std::span<const int32_t> tokens, std::span<std::byte> out);
  void flush();  // waits until the queued writes are on disk
  int64_t size() const;
  int64_t used_bytes() const;
  int64_t evictions() const;
  int64_t writes() const;
  int64_t bad_files() const;
  std::string path_of(uint64_t hash) const;  // the block's file name (tests)
  bool uses_io_uring() const { return ring_ok_; }

 private:
  struct Job {
    uint64_t hash = 0;
    std::shared_ptr<std::vector<std::byte>> file;  // the whole file's bytes; null: unlink
    bool cancelled = false;
  };
  struct Entry {
    std::shared_ptr<Job> job;  // set until its write finished (its file bytes serve reads)
    std::list<uint64_t>::iterator lru;
  };
  // What a file holds, against the block it should: kOtherTokens is a valid block of another
  // prefix under the same hash (a plain miss); kBad is corrupt, truncated or foreign.
  enum class Check { kOk, kOtherTokens, kBad };
  void worker();
  void disable(const std::string& why);  // under mu_
  void evict_one();                      // under mu_
  void scan();
  bool write_file(const std::string& path, const std::vector<std::byte>& bytes, std::string* err);
  // A block file: its header and tokens into `head`, its payload straight into `payload`.
  bool read_file(const std::string& path, std::vector<std::byte>& head,
                 std::span<std::byte> payload, std::string* err);
  // The header alone (magic, version, identity, block hash and sizes), as the scan checks it.
  bool header_ok(const void* header, uint64_t hash, std::string* why) const;
  // head: the header and tokens; payload: the block's bytes.
  Check verify(uint64_t hash, std::span<const int32_t> tokens, std::span<const std::byte> head,
               std::span<const std::byte> payload, std::string* why) const;
  void drop_bad(uint64_t hash, const std::string& why);  // under mu_

  std::string dir_;
  uint64_t identity_;
  size_t block_bytes_, file_bytes_;
  int block_size_;
  int64_t capacity_blocks_ = 0;
  bool posix_io_;
  bool ring_ok_ = false;
  void* write_ring_ = nullptr;  // io_uring*, worker thread

  mutable std::mutex mu_;
  std::condition_variable cv_, idle_cv_;
  bool enabled_ = false, stop_ = false;
  int busy_ = 0;
  std::unordered_map<uint64_t, Entry> map_;
  std::list<uint64_t> lru_;
  std::deque<std::shared_ptr<Job>> queue_;
  int64_t evictions_ = 0, writes_ = 0, bad_files_ = 0;
  std::thread thread_;
};

}  // namespace nf
