// KV block accounting on the host: which block ids are free, and growing or releasing a
// request's block table. The manager never sees KV bytes; the backend owns them by block id.
#pragma once

#include <cstdint>
#include <vector>

namespace nf {

class KvCacheManager {
 public:
  KvCacheManager(int64_t num_blocks, int block_size);

  int block_size() const { return block_size_; }
  int64_t num_blocks() const { return num_blocks_; }
  int64_t num_free_blocks() const { return static_cast<int64_t>(free_.size()); }
  int64_t blocks_for(int64_t num_tokens) const { return (num_tokens + block_size_ - 1) / block_size_; }

  // Grows `table` so that it covers num_tokens tokens. All or nothing: returns false and
  // changes nothing when there are not enough free blocks.
  bool reserve(std::vector<int32_t>& table, int64_t num_tokens);
  // Returns every block of `table` to the free pool and clears it.
  void release(std::vector<int32_t>& table);
  // Aborts when a block is both free and owned, owned twice, or neither (a leak).
  void check_integrity(const std::vector<const std::vector<int32_t>*>& tables) const;

 private:
  int64_t num_blocks_;
  int block_size_;
  std::vector<int32_t> free_;  // stack of free block ids
};

}  // namespace nf
