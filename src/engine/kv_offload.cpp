#include "engine/kv_offload.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "common/log.h"
#include "common/status.h"


namespace nf {

KvOffload::KvOffload(const KvOffloadConfig& c, const std::string& identity, size_t block_bytes,
                     int block_size, HostAllocator allocator)
    : block_bytes_(block_bytes) {
  NF_CHECK(block_bytes > 0 && block_size > 0, "KV offload: blocks of {} bytes, {} tokens",
           block_bytes, block_size);
  if (c.host_gb < 0 || c.disk_gb < 0) fail("--kv-host-gb and --kv-disk-gb must not be negative");
  pool_ = std::make_shared<HostBlockPool>(block_bytes, std::move(allocator));
  if (c.host_gb > 0) {
    host_ = std::make_unique<HostKvTier>(static_cast<int64_t>(c.host_gb * 1e9), block_bytes, pool_);
    const auto t0 = std::chrono::steady_clock::now();
    try {
      pool_->reserve(host_->capacity_blocks());
    } catch (const std::bad_alloc&) {
      fail("--kv-host-gb {}: cannot allocate that much (pinned) host memory", c.host_gb);
    }
    log_info("KV host tier: {} blocks ({:.1f} GB) allocated in {:.1f} s", host_->capacity_blocks(),
             static_cast<double>(host_->capacity_blocks()) * static_cast<double>(block_bytes) / 1e9,
             std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  if (!c.disk_dir.empty() && c.disk_gb > 0)
    disk_ = std::make_unique<DiskKvTier>(c.disk_dir, static_cast<int64_t>(c.disk_gb * 1e9),
                                         identity, block_bytes, block_size, c.posix_io);
}

KvOffload::~KvOffload() {
  {
    std::lock_guard<std::mutex> lock(pf_mu_);
    pf_stop_ = true;
    pf_queue_.clear();
  }
  pf_cv_.notify_all();
  for (std::thread& t : pf_threads_) t.join();
}

KvOffload::PrefetchDone KvOffload::prefetch(std::vector<BlockRef> blocks) {
  if (!host_ || !disk_ || blocks.empty()) return nullptr;
  {
    // Nothing to do unless the prefix goes on below the host tier into the disk tier.
    std::lock_guard<std::mutex> lock(mu_);
    auto b = blocks.begin();
    while (b != blocks.end() && host_->contains(b->hash)) ++b;
    if (b == blocks.end() || !disk_->contains(b->hash)) return nullptr;
  }
  auto done = std::make_shared<std::atomic<bool>>(false);
  {
    std::lock_guard<std::mutex> lock(pf_mu_);
    if (pf_stop_) return nullptr;
    pf_queue_.emplace_back(std::move(blocks), done);
    while (pf_threads_.size() < kPrefetchThreads)
      pf_threads_.emplace_back([this] { prefetch_loop(); });
  }
  pf_cv_.notify_one();
  return done;
}

void KvOffload::wait_prefetch() {
  std::unique_lock<std::mutex> lock(pf_mu_);
  pf_idle_cv_.wait(lock, [&] { return pf_queue_.empty() && pf_busy_ == 0; });
}

void KvOffload::prefetch_loop() {
  std::unique_lock<std::mutex> lock(pf_mu_);
  for (;;) {
    pf_cv_.wait(lock, [&] { return pf_stop_ || !pf_queue_.empty(); });
    if (pf_stop_) return;
    auto [job, done] = std::move(pf_queue_.front());
    pf_queue_.pop_front();
    ++pf_busy_;
    lock.unlock();
    for (const BlockRef& b : job) {
      {
        std::lock_guard<std::mutex> l(mu_);
        if (host_->contains(b.hash)) continue;
      }
      Buffer buf = read_disk(b.hash, b.tokens);  // a miss ends the prefix
      if (!buf) break;
      std::lock_guard<std::mutex> l(mu_);
      put_host(b.hash, b.tokens, std::move(buf), /*promoted=*/true);
      ++st_.prefetched;
    }
    done->store(true);
    lock.lock();
    --pf_busy_;
    if (pf_queue_.empty() && pf_busy_ == 0) pf_idle_cv_.notify_all();
  }
}

KvOffload::Buffer KvOffload::read_disk(uint64_t hash, std::span<const int32_t> tokens) {
  // Without the tiers' lock: saves and other reads go on meanwhile.
  Buffer b = pool_->get();
  if (!disk_->get(hash, tokens, {b.get(), block_bytes_})) b.reset();
  return b;
}

bool KvOffload::put_host(uint64_t hash, std::span<const int32_t> tokens, Buffer payload,
                         bool promoted) {
  return host_ &&
         host_->put(
             hash, tokens, std::move(payload),
             [&](uint64_t h, std::span<const int32_t> t, std::span<const std::byte> p) {
               if (disk_) disk_->put(h, t, p);
             },
             promoted);
}

bool KvOffload::contains(uint64_t hash) const {
  std::lock_guard<std::mutex> lock(mu_);
  return (host_ && host_->contains(hash)) || (disk_ && disk_->contains(hash));
}

void KvOffload::save(uint64_t hash, std::span<const int32_t> tokens,
                     std::span<const std::byte> payload) {
  NF_CHECK(payload.size() == block_bytes_, "KV offload: saving {} bytes, blocks are {}",
           payload.size(), block_bytes_);
  Buffer b = pool_->get();
  std::copy(payload.begin(), payload.end(), b.get());
  save(hash, tokens, std::move(b));
}

void KvOffload::save(uint64_t hash, std::span<const int32_t> tokens, Buffer payload) {
  std::lock_guard<std::mutex> lock(mu_);
  ++st_.saves;
  if (put_host(hash, tokens, payload)) return;
  if (disk_) disk_->put(hash, tokens, {payload.get(), block_bytes_});
}

KvOffload::Tier KvOffload::load(uint64_t hash, std::span<const int32_t> tokens,
                                std::span<std::byte> out) {
  NF_CHECK(out.size() == block_bytes_, "KV offload: loading into {} bytes, blocks are {}",
           out.size(), block_bytes_);
  const auto [tier, b] = load(hash, tokens);
  if (b) std::copy(b.get(), b.get() + block_bytes_, out.begin());
  return tier;
}

std::pair<KvOffload::Tier, KvOffload::Buffer> KvOffload::load(uint64_t hash,
                                                              std::span<const int32_t> tokens,
                                                              bool read_disk) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    bool promoted = false;
    if (host_) {
      if (Buffer b = host_->get(hash, tokens, &promoted)) {
        ++(promoted ? st_.disk_hits : st_.host_hits);
        return {promoted ? Tier::kDisk : Tier::kHost, std::move(b)};
      }
    }
  }
  Buffer b = disk_ && read_disk ? this->read_disk(hash, tokens) : nullptr;
  std::lock_guard<std::mutex> lock(mu_);
  if (b) {
    ++st_.disk_hits;
    // Promote: it is likely to be used again soon (the next turn of the conversation).
    put_host(hash, tokens, b);
    return {Tier::kDisk, std::move(b)};
  }
  ++st_.misses;
  return {Tier::kNone, nullptr};
}

KvTierStats KvOffload::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  KvTierStats s = st_;
  if (host_) {
    s.host_blocks = host_->size();
    s.host_bytes = host_->used_bytes();
    s.host_evictions = host_->evictions();
  }
  if (disk_) {
    s.disk_blocks = disk_->size();
    s.disk_bytes = disk_->used_bytes();
    s.disk_evictions = disk_->evictions();
    s.disk_writes = disk_->writes();
    s.disk_bad_files = disk_->bad_files();
    s.disk_enabled = disk_->enabled();
  }
  return s;
}

void KvOffload::flush() {
  if (disk_) disk_->flush();
}

}  // namespace nf