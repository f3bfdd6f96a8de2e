#include "engine/kv_offload.h"

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

io_uring* ring(void* p) {
  return static_cast<io_uring*>(p);
}

// Whole-buffer reads and writes at file offset `off`, through io_uring (resubmitting short
// transfers) or pread/pwrite. Returns 0 or -errno.
int ring_io(io_uring* r, int fd, std::byte* buf, size_t n, bool write, size_t off = 0) {
  size_t done = 0;
  while (done < n) {
    io_uring_sqe* sqe = io_uring_get_sqe(r);
    if (sqe == nullptr) return -EBUSY;
    const unsigned len = static_cast<unsigned>(std::min<size_t>(n - done, 1u << 30));
    if (write) {
      io_uring_prep_write(sqe, fd, buf + done, len, off + done);
    } else {
      io_uring_prep_read(sqe, fd, buf + done, len, off + done);
    }
    int rc = io_uring_submit(r);
    if (rc < 0) return rc;
    io_uring_cqe* cqe = nullptr;
    rc = io_uring_wait_cqe(r, &cqe);
    if (rc < 0) return rc;
    const int res = cqe->res;
    io_uring_cqe_seen(r, cqe);
    if (res < 0) return res;
    if (res == 0) return write ? -EIO : -ENODATA;  // end of file: truncated
    done += static_cast<size_t>(res);
  }
  return 0;
}

// One io_uring per reading thread (the scheduler's, each prefetch thread's), so that reads of
// different threads are in flight together; null where io_uring cannot be set up.
io_uring* thread_read_ring() {
  struct Ring {
    io_uring r{};
    bool ok = false;
    Ring() { ok = io_uring_queue_init(8, &r, 0) == 0; }
    ~Ring() {
      if (ok) io_uring_queue_exit(&r);
    }
  };
  thread_local Ring ring;
  return ring.ok ? &ring.r : nullptr;
}

int posix_io(int fd, std::byte* buf, size_t n, bool write, size_t off = 0) {
  size_t done = 0;
  while (done < n) {
    const auto at = static_cast<off_t>(off + done);
    const ssize_t r = write ? ::pwrite(fd, buf + done, n - done, at)
                            : ::pread(fd, buf + done, n - done, at);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (r == 0) return write ? -EIO : -ENODATA;
    done += static_cast<size_t>(r);
  }
  return 0;
}

// Through the ring when there is one, else pread/pwrite.
int file_io(io_uring* r, int fd, std::byte* buf, size_t n, bool write, size_t off = 0) {
  return r != nullptr ? ring_io(r, fd, buf, n, write, off) : posix_io(fd, buf, n, write, off);
}

}  // namespace

// ---- host tier ----------------------------------------------------------------------------

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

// ---- disk tier ----------------------------------------------------------------------------

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

// ---- both tiers ---------------------------------------------------------------------------

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
