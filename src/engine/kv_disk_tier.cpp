#include "engine/kv_disk_tier.h"

#include <dirent.h>
#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>

#include "common/log.h"
#include "common/status.h"
#include "engine/kv_file_io.h"

namespace nf {

namespace {

constexpr char kMagic[8] = {'N', 'F', 'K', 'V', 'B', 'L', 'K', '1'};
constexpr uint32_t kVersion = 1;

// The file header, then the block's tokens (int32), then its payload.
struct FileHeader {
  char magic[8];
  uint32_t version;
  uint32_t num_tokens;
  uint64_t identity;
  uint64_t block_hash;
  uint64_t payload_bytes;
  uint64_t checksum;  // xxh64 of tokens and payload, seeded with identity ^ block_hash
  uint64_t reserved[2];
};
static_assert(sizeof(FileHeader) == 64);

// xxh64 over the file's body, tokens then payload (contiguous in a file, apart when the payload
// was read straight into its destination), seeded with identity ^ block hash.
uint64_t checksum_of(std::span<const std::byte> tokens, std::span<const std::byte> payload,
                     uint64_t identity, uint64_t hash) {
  XXH64_state_t* st = XXH64_createState();
  NF_CHECK(st != nullptr, "xxh64: out of memory");
  XXH64_reset(st, identity ^ hash);
  XXH64_update(st, tokens.data(), tokens.size());
  XXH64_update(st, payload.data(), payload.size());
  const uint64_t d = XXH64_digest(st);
  XXH64_freeState(st);
  return d;
}

std::string hex16(uint64_t v) {
  return fmt::format("{:016x}", v);
}

}  // namespace

DiskKvTier::DiskKvTier(const std::string& dir, int64_t capacity_bytes, const std::string& identity,
                       size_t block_bytes, int block_size, bool posix_io)
    : dir_(dir),
      identity_(XXH64(identity.data(), identity.size(), 0)),
      block_bytes_(block_bytes),
      file_bytes_(sizeof(FileHeader) + static_cast<size_t>(block_size) * 4 + block_bytes),
      block_size_(block_size),
      posix_io_(posix_io) {
  capacity_blocks_ = std::max<int64_t>(0, capacity_bytes) / static_cast<int64_t>(file_bytes_);
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (ec || !std::filesystem::is_directory(dir_)) {
    log_warn("KV disk tier off: cannot create directory {}: {}", dir_,
             ec ? ec.message() : "not a directory");
    return;
  }
  // Writable? A probe file, created and removed.
  const std::string probe = dir_ + "/.nf_probe_" + std::to_string(::getpid());
  const int fd = ::open(probe.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  if (fd < 0) {
    log_warn("KV disk tier off: directory {} is not writable: {}", dir_, std::strerror(errno));
    return;
  }
  ::close(fd);
  ::unlink(probe.c_str());
  if (capacity_blocks_ == 0) {
    log_warn("KV disk tier off: {} bytes hold no block of {} bytes", capacity_bytes, file_bytes_);
    return;
  }
  if (!posix_io_) {
    auto* wr = new io_uring;
    const int rc = io_uring_queue_init(8, wr, 0);
    if (rc == 0) {
      write_ring_ = wr;
      ring_ok_ = true;
    } else {
      delete wr;
      log_warn("KV disk tier: io_uring unavailable ({}); using pread/pwrite", std::strerror(-rc));
    }
  }
  enabled_ = true;
  scan();
  thread_ = std::thread([this] { worker(); });
}

DiskKvTier::~DiskKvTier() {
  {
    std::unique_lock<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (write_ring_ != nullptr) {
    io_uring_queue_exit(ring(write_ring_));
    delete ring(write_ring_);
  }
}

std::string DiskKvTier::path_of(uint64_t hash) const {
  return dir_ + "/" + hex16(identity_) + "-" + hex16(hash) + ".nfkv";
}

bool DiskKvTier::enabled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return enabled_;
}

bool DiskKvTier::contains(uint64_t hash) const {
  std::lock_guard<std::mutex> lock(mu_);
  return enabled_ && map_.count(hash) != 0;
}

int64_t DiskKvTier::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int64_t>(map_.size());
}
int64_t DiskKvTier::used_bytes() const {
  return size() * static_cast<int64_t>(file_bytes_);
}
int64_t DiskKvTier::evictions() const {
  std::lock_guard<std::mutex> lock(mu_);
  return evictions_;
}
int64_t DiskKvTier::writes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return writes_;
}
int64_t DiskKvTier::bad_files() const {
  std::lock_guard<std::mutex> lock(mu_);
  return bad_files_;
}

// Indexes the valid files of this identity, oldest first; removes leftovers of interrupted
// writes and bad files. Files of other identities (other models) are left alone.
void DiskKvTier::scan() {
  struct Found {
    uint64_t hash;
    int64_t mtime;
  };
  std::vector<Found> found;
  const std::string prefix = hex16(identity_) + "-";
  DIR* d = ::opendir(dir_.c_str());
  if (d == nullptr) return;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    const std::string path = dir_ + "/" + name;
    if (name.rfind(prefix, 0) != 0) continue;
    if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) {
      ::unlink(path.c_str());  // an interrupted write
      continue;
    }
    if (name.size() != prefix.size() + 16 + 5 || name.compare(name.size() - 5, 5, ".nfkv") != 0)
      continue;
    const uint64_t hash = std::strtoull(name.substr(prefix.size(), 16).c_str(), nullptr, 16);
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) continue;
    FileHeader h{};
    bool ok = static_cast<size_t>(st.st_size) == file_bytes_;
    if (ok) {
      const int fd = ::open(path.c_str(), O_RDONLY);
      ok = fd >= 0 && ::pread(fd, &h, sizeof h, 0) == static_cast<ssize_t>(sizeof h);
      if (fd >= 0) ::close(fd);
      std::string why;
      ok = ok && header_ok(&h, hash, &why);
    }
    if (!ok) {
      log_warn("KV disk tier: removing bad block file {}", path);
      ::unlink(path.c_str());
      ++bad_files_;
      continue;
    }
    found.push_back(
        {hash, static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec});
  }
  ::closedir(d);
  std::sort(found.begin(), found.end(),
            [](const Found& a, const Found& b) { return a.mtime < b.mtime; });
  for (const Found& f : found) {
    Entry& e = map_[f.hash];
    e.lru = lru_.insert(lru_.end(), f.hash);
  }
  while (static_cast<int64_t>(map_.size()) > capacity_blocks_) evict_one();
  if (!map_.empty()) log_info("KV disk tier: {} blocks found in {}", map_.size(), dir_);
}

void DiskKvTier::disable(const std::string& why) {
  if (!enabled_) return;
  enabled_ = false;
  log_warn("KV disk tier off: {} (the engine goes on without it)", why);
  for (auto& j : queue_) j->cancelled = true;
}

void DiskKvTier::evict_one() {
  const uint64_t victim = lru_.front();
  lru_.pop_front();
  auto it = map_.find(victim);
  if (it->second.job) it->second.job->cancelled = true;  // not written yet: never written
  map_.erase(it);
  ++evictions_;
  auto j = std::make_shared<Job>();
  j->hash = victim;  // no file: unlink
  queue_.push_back(j);
  cv_.notify_one();
}

void DiskKvTier::put(uint64_t hash, std::span<const int32_t> tokens,
                     std::span<const std::byte> payload) {
  NF_CHECK(payload.size() == block_bytes_ && tokens.size() == static_cast<size_t>(block_size_),
           "KV disk tier: block of {} bytes and {} tokens, expected {} and {}", payload.size(),
           tokens.size(), block_bytes_, block_size_);
  auto file = std::make_shared<std::vector<std::byte>>(file_bytes_);
  FileHeader h{};
  std::memcpy(h.magic, kMagic, 8);
  h.version = kVersion;
  h.num_tokens = static_cast<uint32_t>(tokens.size());
  h.identity = identity_;
  h.block_hash = hash;
  h.payload_bytes = payload.size();
  std::byte* body = file->data() + sizeof h;
  const size_t tok_bytes = tokens.size() * 4;
  std::memcpy(body, tokens.data(), tok_bytes);
  std::memcpy(body + tok_bytes, payload.data(), payload.size());
  h.checksum = checksum_of({body, tok_bytes}, {body + tok_bytes, payload.size()}, identity_, hash);
  std::memcpy(file->data(), &h, sizeof h);

  std::lock_guard<std::mutex> lock(mu_);
  if (!enabled_) return;
  auto it = map_.find(hash);
  if (it != map_.end()) {
    lru_.splice(lru_.end(), lru_, it->second.lru);
    return;
  }
  while (static_cast<int64_t>(map_.size()) >= capacity_blocks_) evict_one();
  auto j = std::make_shared<Job>();
  j->hash = hash;
  j->file = file;
  Entry& e = map_[hash];
  e.job = j;
  e.lru = lru_.insert(lru_.end(), hash);
  queue_.push_back(j);
  cv_.notify_one();
}

bool DiskKvTier::write_file(const std::string& path, const std::vector<std::byte>& bytes,
                            std::string* err) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_CREAT | O_WRONLY | O_TRUNC, 0644);
  if (fd < 0) {
    *err = fmt::format("cannot create {}: {}", tmp, std::strerror(errno));
    return false;
  }
  auto* buf = const_cast<std::byte*>(bytes.data());
  const int rc = file_io(ring_ok_ ? ring(write_ring_) : nullptr, fd, buf, bytes.size(), true);
  ::close(fd);
  if (rc < 0 || ::rename(tmp.c_str(), path.c_str()) != 0) {
    *err = fmt::format("cannot write {}: {}", path, std::strerror(rc < 0 ? -rc : errno));
    ::unlink(tmp.c_str());
    return false;
  }
  return true;
}

void DiskKvTier::worker() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) {
      if (stop_) return;
      continue;
    }
    std::shared_ptr<Job> j = queue_.front();
    queue_.pop_front();
    if (j->cancelled) {
      if (queue_.empty()) idle_cv_.notify_all();
      continue;
    }
    ++busy_;
    const std::string path = path_of(j->hash);
    lock.unlock();
    std::string err;
    bool ok = true;
    if (j->file) {
      ok = write_file(path, *j->file, &err);
    } else {
      ::unlink(path.c_str());
    }
    lock.lock();
    --busy_;
    if (j->file) {
      auto it = map_.find(j->hash);
      if (!ok) {
        if (it != map_.end() && it->second.job == j) {
          lru_.erase(it->second.lru);
          map_.erase(it);
        }
        disable(err);
      } else {
        ++writes_;
        if (it != map_.end() && it->second.job == j) {
          it->second.job.reset();
        } else {
          ::unlink(path.c_str());  // evicted while being written
        }
      }
    }
    if (queue_.empty() && busy_ == 0) idle_cv_.notify_all();
  }
}

void DiskKvTier::flush() {
  std::unique_lock<std::mutex> lock(mu_);
  idle_cv_.wait(lock, [&] { return (queue_.empty() && busy_ == 0) || !thread_.joinable(); });
}

bool DiskKvTier::read_file(const std::string& path, std::vector<std::byte>& head,
                           std::span<std::byte> payload, std::string* err) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) {
    *err = fmt::format("cannot open: {}", std::strerror(errno));
    return false;
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || static_cast<size_t>(st.st_size) != file_bytes_) {
    *err = fmt::format("{} bytes, expected {} (truncated or foreign)",
                       static_cast<int64_t>(st.st_size), file_bytes_);
    ::close(fd);
    return false;
  }
  head.resize(file_bytes_ - block_bytes_);
  io_uring* r = ring_ok_ ? thread_read_ring() : nullptr;
  int rc = file_io(r, fd, head.data(), head.size(), false);
  if (rc == 0) rc = file_io(r, fd, payload.data(), block_bytes_, false, head.size());
  ::close(fd);
  if (rc < 0) {
    *err = fmt::format("read: {}", std::strerror(-rc));
    return false;
  }
  return true;
}

bool DiskKvTier::header_ok(const void* header, uint64_t hash, std::string* why) const {
  FileHeader h{};
  std::memcpy(&h, header, sizeof h);
  if (std::memcmp(h.magic, kMagic, 8) != 0 || h.version != kVersion) {
    *why = "not a block file of this version";
    return false;
  }
  if (h.identity != identity_) {
    *why = "another model or KV layout";
    return false;
  }
  if (h.block_hash != hash || h.num_tokens != static_cast<uint32_t>(block_size_) ||
      h.payload_bytes != block_bytes_) {
    *why = "header does not match the block";
    return false;
  }
  return true;
}

DiskKvTier::Check DiskKvTier::verify(uint64_t hash, std::span<const int32_t> tokens,
                                     std::span<const std::byte> head,
                                     std::span<const std::byte> payload, std::string* why) const {
  if (!header_ok(head.data(), hash, why)) return Check::kBad;
  FileHeader h{};
  std::memcpy(&h, head.data(), sizeof h);
  const auto body_tokens = head.subspan(sizeof h);
  if (checksum_of(body_tokens, payload, identity_, hash) != h.checksum) {
    *why = "checksum mismatch";
    return Check::kBad;
  }
  if (std::memcmp(body_tokens.data(), tokens.data(), tokens.size() * 4) != 0)
    return Check::kOtherTokens;
  return Check::kOk;
}

void DiskKvTier::drop_bad(uint64_t hash, const std::string& why) {
  const std::string path = path_of(hash);
  log_warn("KV disk tier: {}: {}; treated as a miss and removed", path, why);
  ++bad_files_;
  auto it = map_.find(hash);
  if (it != map_.end()) {
    lru_.erase(it->second.lru);
    map_.erase(it);
  }
  ::unlink(path.c_str());
}

bool DiskKvTier::get(uint64_t hash, std::span<const int32_t> tokens, std::span<std::byte> out) {
  NF_CHECK(out.size() == block_bytes_, "KV disk tier: reading {} bytes, block is {}", out.size(),
           block_bytes_);
  std::shared_ptr<const std::vector<std::byte>> pending;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!enabled_) return false;
    auto it = map_.find(hash);
    if (it == map_.end()) return false;
    if (it->second.job) pending = it->second.job->file;  // still being written: from memory
  }
  // The read runs without the lock, so that saves and the writer thread go on meanwhile. The
  // payload goes straight into `out` (whatever the verdict: a miss leaves it undefined).
  std::string why;
  Check check = Check::kBad;
  const size_t head_bytes = file_bytes_ - block_bytes_;
  if (pending) {
    const std::span<const std::byte> f(*pending);
    check = verify(hash, tokens, f.first(head_bytes), f.subspan(head_bytes), &why);
    if (check == Check::kOk) std::memcpy(out.data(), f.data() + head_bytes, block_bytes_);
  } else {
    thread_local std::vector<std::byte> head;
    if (read_file(path_of(hash), head, out, &why)) check = verify(hash, tokens, head, out, &why);
  }
  std::lock_guard<std::mutex> lock(mu_);
  auto it = map_.find(hash);
  if (check != Check::kOk) {
    // Evicted (and removed) while being read, or a valid block of other tokens: a plain miss.
    if (it == map_.end() || check == Check::kOtherTokens) return false;
    drop_bad(hash, why);
    return false;
  }
  if (it != map_.end()) lru_.splice(lru_.end(), lru_, it->second.lru);
  return true;
}

}  // namespace nf
