// The KV offload tiers (engine/kv_offload.h) on their own: LRU and exact capacity, the disk
// format's integrity checks (corrupt, truncated, foreign files are misses), a full disk and an
// unwritable directory disable the disk tier, and a restart reuses the valid files; the disk
// tier through io_uring and through pread/pwrite.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "common/status.h"
#include "engine/kv_cache_manager.h"
#include "engine/kv_offload.h"

namespace {

namespace fs = std::filesystem;
using nf::DiskKvTier;
using nf::HostKvTier;
using nf::KvOffload;

constexpr int kBlockSize = 4;
constexpr size_t kBytes = 96;

struct Block {
  uint64_t hash;
  std::vector<int32_t> tokens;
  std::vector<std::byte> payload;
};

Block make_block(int i) {
  Block b;
  for (int t = 0; t < kBlockSize; ++t) b.tokens.push_back(100 * i + t);
  b.hash = nf::KvCacheManager::chain_hash(0, b.tokens);
  for (size_t k = 0; k < kBytes; ++k)
    b.payload.push_back(static_cast<std::byte>((i * 31 + k) & 255));
  return b;
}

struct TempDir {
  TempDir() {
    path = fs::temp_directory_path() /
           ("nf_kv_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
  }
  ~TempDir() { fs::remove_all(path); }
  fs::path path;
  static inline int counter = 0;
};

size_t files_in(const fs::path& dir) {
  size_t n = 0;
  for (const auto& e : fs::directory_iterator(dir)) n += e.path().extension() == ".nfkv";
  return n;
}

TEST(KvOffload, HostTierIsLruWithExactCapacity) {
  HostKvTier tier(3 * kBytes + kBytes - 1, kBytes);  // room for 3 blocks, not 4
  EXPECT_EQ(tier.capacity_blocks(), 3);
  std::vector<uint64_t> evicted;
  auto ev = [&](uint64_t h, std::span<const int32_t>, std::span<const std::byte> p) {
    evicted.push_back(h);
    EXPECT_EQ(p.size(), kBytes);
  };
  std::vector<Block> b;
  for (int i = 0; i < 5; ++i) b.push_back(make_block(i));
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(tier.put(b[i].hash, b[i].tokens, b[i].payload, ev));
  std::vector<std::byte> out(kBytes);
  ASSERT_TRUE(tier.get(b[0].hash, b[0].tokens, out));  // 0 becomes the most recent
  EXPECT_EQ(out, b[0].payload);
  ASSERT_TRUE(tier.put(b[3].hash, b[3].tokens, b[3].payload, ev));
  EXPECT_EQ(evicted, (std::vector<uint64_t>{b[1].hash}));
  EXPECT_EQ(tier.size(), 3);
  EXPECT_EQ(tier.used_bytes(), static_cast<int64_t>(3 * kBytes));
  EXPECT_FALSE(tier.contains(b[1].hash));
  // Other tokens under the same hash: a miss.
  std::vector<int32_t> other = b[0].tokens;
  other[0] += 1;
  EXPECT_FALSE(tier.get(b[0].hash, other, out));
  HostKvTier none(kBytes - 1, kBytes);
  EXPECT_FALSE(none.put(b[0].hash, b[0].tokens, b[0].payload, ev));
}

class DiskTier : public ::testing::TestWithParam<bool> {};  // param: pread/pwrite

TEST_P(DiskTier, RoundTripsEvictsAndReusesAfterRestart) {
  TempDir dir;
  std::vector<Block> b;
  for (int i = 0; i < 6; ++i) b.push_back(make_block(i));
  { DiskKvTier probe(dir.path.string(), 1 << 20, "model-a", kBytes, kBlockSize, GetParam()); }
  const size_t file = 64 + kBlockSize * 4 + kBytes;
  {
    DiskKvTier tier(dir.path.string(), 4 * file + 7, "model-a", kBytes, kBlockSize, GetParam());
    ASSERT_TRUE(tier.enabled());
    EXPECT_EQ(tier.uses_io_uring(), !GetParam());
    EXPECT_EQ(tier.file_bytes(), file);
    EXPECT_EQ(tier.capacity_blocks(), 4);
    for (int i = 0; i < 6; ++i) tier.put(b[i].hash, b[i].tokens, b[i].payload);
    tier.flush();
    EXPECT_EQ(tier.size(), 4);
    EXPECT_EQ(tier.used_bytes(), static_cast<int64_t>(4 * file));
    EXPECT_EQ(tier.evictions(), 2);
    EXPECT_EQ(files_in(dir.path), 4u);  // the evicted files are gone
    EXPECT_FALSE(tier.contains(b[0].hash));
    std::vector<std::byte> out(kBytes);
    for (int i = 2; i < 6; ++i) {
      ASSERT_TRUE(tier.get(b[i].hash, b[i].tokens, out)) << i;
      EXPECT_EQ(out, b[i].payload);
    }
  }
  // A restart finds them; another model's tier in the same directory does not.
  DiskKvTier again(dir.path.string(), 4 * file, "model-a", kBytes, kBlockSize, GetParam());
  EXPECT_EQ(again.size(), 4);
  std::vector<std::byte> out(kBytes);
  ASSERT_TRUE(again.get(b[5].hash, b[5].tokens, out));
  EXPECT_EQ(out, b[5].payload);
  DiskKvTier other(dir.path.string(), 4 * file, "model-b", kBytes, kBlockSize, GetParam());
  EXPECT_EQ(other.size(), 0);
  EXPECT_FALSE(other.get(b[5].hash, b[5].tokens, out));
  EXPECT_EQ(files_in(dir.path), 4u);  // and leaves model-a's files alone
}

TEST_P(DiskTier, CorruptTruncatedAndForeignFilesAreMisses) {
  TempDir dir;
  std::vector<Block> b;
  for (int i = 0; i < 4; ++i) b.push_back(make_block(i));
  DiskKvTier tier(dir.path.string(), 1 << 20, "model-a", kBytes, kBlockSize, GetParam());
  for (const Block& x : b) tier.put(x.hash, x.tokens, x.payload);
  tier.flush();
  std::vector<std::byte> out(kBytes);
  {  // one payload byte flipped
    std::fstream f(tier.path_of(b[0].hash), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(64 + kBlockSize * 4 + 10);
    f.put('\x7f');
  }
  EXPECT_FALSE(tier.get(b[0].hash, b[0].tokens, out));
  EXPECT_FALSE(fs::exists(tier.path_of(b[0].hash)));  // removed
  fs::resize_file(tier.path_of(b[1].hash), 64 + 10);  // truncated
  EXPECT_FALSE(tier.get(b[1].hash, b[1].tokens, out));
  {  // another model's valid block under this model's name
    TempDir other_dir;
    DiskKvTier other(other_dir.path.string(), 1 << 20, "model-b", kBytes, kBlockSize, GetParam());
    other.put(b[2].hash, b[2].tokens, b[2].payload);
    other.flush();
    fs::copy_file(other.path_of(b[2].hash), tier.path_of(b[2].hash),
                  fs::copy_options::overwrite_existing);
  }
  EXPECT_FALSE(tier.get(b[2].hash, b[2].tokens, out));
  EXPECT_EQ(tier.bad_files(), 3);
  EXPECT_FALSE(tier.contains(b[2].hash));
  ASSERT_TRUE(tier.get(b[3].hash, b[3].tokens, out));  // the good one still serves
  EXPECT_EQ(out, b[3].payload);
  // A restart skips a bad file (and removes it) and leftovers of interrupted writes.
  {
    std::ofstream(tier.path_of(b[3].hash) + ".tmp") << "partial";
    std::fstream f(tier.path_of(b[3].hash), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(0);
    f.put('X');  // bad magic
  }
  DiskKvTier again(dir.path.string(), 1 << 20, "model-a", kBytes, kBlockSize, GetParam());
  EXPECT_EQ(again.size(), 0);
  EXPECT_EQ(again.bad_files(), 1);
  EXPECT_EQ(files_in(dir.path), 0u);
  EXPECT_FALSE(fs::exists(tier.path_of(b[3].hash) + ".tmp"));
}

TEST_P(DiskTier, FullDiskAndUnwritableDirectoryDisableTheTier) {
  TempDir dir;
  const Block b0 = make_block(0), b1 = make_block(1);
  {
    DiskKvTier tier(dir.path.string(), 1 << 20, "model-a", kBytes, kBlockSize, GetParam());
    // The next write of b1 lands on /dev/full: ENOSPC.
    fs::create_symlink("/dev/full", tier.path_of(b1.hash) + ".tmp");
    tier.put(b0.hash, b0.tokens, b0.payload);
    tier.put(b1.hash, b1.tokens, b1.payload);
    tier.flush();
    EXPECT_FALSE(tier.enabled());
    EXPECT_FALSE(tier.contains(b0.hash));
    std::vector<std::byte> out(kBytes);
    EXPECT_FALSE(tier.get(b0.hash, b0.tokens, out));
    tier.put(b0.hash, b0.tokens, b0.payload);  // a no-op now
    tier.flush();
  }
  // A path that is a file, not a directory.
  const fs::path file = dir.path / "not_a_dir";
  std::ofstream(file) << "x";
  DiskKvTier tier(file.string(), 1 << 20, "model-a", kBytes, kBlockSize, GetParam());
  EXPECT_FALSE(tier.enabled());
  tier.put(b0.hash, b0.tokens, b0.payload);
  tier.flush();
  EXPECT_FALSE(tier.contains(b0.hash));
}

// Reads from several threads at once (each reading thread has its own io_uring), as the
// prefetch threads and the scheduler read.
TEST_P(DiskTier, ReadsFromSeveralThreadsAtOnce) {
  TempDir dir;
  std::vector<Block> b;
  for (int i = 0; i < 32; ++i) b.push_back(make_block(i));
  DiskKvTier tier(dir.path.string(), 1 << 20, "model-a", kBytes, kBlockSize, GetParam());
  ASSERT_TRUE(tier.enabled());
  for (const Block& x : b) tier.put(x.hash, x.tokens, x.payload);
  tier.flush();
  std::atomic<int> ok{0};
  std::vector<std::thread> readers;
  for (int r = 0; r < 4; ++r)
    readers.emplace_back([&, r] {
      std::vector<std::byte> out(kBytes);
      for (int rep = 0; rep < 3; ++rep)
        for (int i = r; i < 32; i += 4)
          ok += tier.get(b[i].hash, b[i].tokens, out) && out == b[i].payload;
    });
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(ok.load(), 3 * 32);
}

INSTANTIATE_TEST_SUITE_P(Io, DiskTier, ::testing::Values(false, true),
                         [](const auto& info) { return info.param ? "posix" : "io_uring"; });

// Host above disk: the host tier's evictions move down, a disk hit moves back up.
TEST(KvOffload, HostEvictionsMoveToDiskAndDiskHitsComeBack) {
  TempDir dir;
  nf::KvOffloadConfig c;
  c.host_gb = 2.5 * kBytes / 1e9;  // two blocks
  c.disk_dir = dir.path.string();
  c.disk_gb = 1e-3;
  KvOffload off(c, "model-a", kBytes, kBlockSize);
  std::vector<Block> b;
  for (int i = 0; i < 4; ++i) b.push_back(make_block(i));
  for (const Block& x : b) off.save(x.hash, x.tokens, x.payload);
  off.flush();
  nf::KvTierStats s = off.stats();
  EXPECT_EQ(s.saves, 4);
  EXPECT_EQ(s.host_blocks, 2);
  EXPECT_EQ(s.disk_blocks, 2);  // blocks 0 and 1, demoted
  EXPECT_EQ(s.host_evictions, 2);
  std::vector<std::byte> out(kBytes);
  EXPECT_EQ(off.load(b[3].hash, b[3].tokens, out), KvOffload::Tier::kHost);
  EXPECT_EQ(out, b[3].payload);
  EXPECT_EQ(off.load(b[0].hash, b[0].tokens, out), KvOffload::Tier::kDisk);
  EXPECT_EQ(out, b[0].payload);
  EXPECT_EQ(off.load(b[0].hash, b[0].tokens, out), KvOffload::Tier::kHost);  // promoted
  EXPECT_EQ(off.load(make_block(9).hash, make_block(9).tokens, out), KvOffload::Tier::kNone);
  off.flush();
  s = off.stats();
  EXPECT_EQ(s.host_hits, 2);
  EXPECT_EQ(s.disk_hits, 1);
  EXPECT_EQ(s.misses, 1);
  EXPECT_TRUE(s.disk_enabled);
  EXPECT_EQ(s.host_blocks, 2);
  // A host-only lookup (the scheduler's, with a host tier) never reads the disk.
  EXPECT_EQ(off.load(b[1].hash, b[1].tokens, /*read_disk=*/false).first, KvOffload::Tier::kNone);
  // Prefetch: blocks on disk move up in the background, up to the first on neither tier.
  // Now the host holds 3 and 0, the disk 1 and 2. Their first hit counts for the disk tier.
  EXPECT_EQ(off.prefetch({{b[3].hash, b[3].tokens}}), nullptr);  // all in host memory
  const KvOffload::PrefetchDone done =
      off.prefetch({{b[1].hash, b[1].tokens}, {b[2].hash, b[2].tokens},
                    {make_block(9).hash, make_block(9).tokens}, {b[3].hash, b[3].tokens}});
  ASSERT_NE(done, nullptr);
  off.wait_prefetch();
  EXPECT_TRUE(done->load());
  EXPECT_EQ(off.stats().prefetched, 2);
  EXPECT_EQ(off.load(b[2].hash, b[2].tokens, /*read_disk=*/false).first, KvOffload::Tier::kDisk);
  EXPECT_EQ(off.load(b[2].hash, b[2].tokens, out), KvOffload::Tier::kHost);
  EXPECT_EQ(out, b[2].payload);
  EXPECT_EQ(off.load(b[1].hash, b[1].tokens, out), KvOffload::Tier::kDisk);
  EXPECT_EQ(out, b[1].payload);
}

}  // namespace

namespace nf {
namespace {

// A host tier whose memory cannot be had is a clear error at start-up.
TEST(HostBlockPool, AHostTierThatCannotBeAllocatedIsAClearError) {
  HostAllocator none{[](size_t) -> void* { return nullptr; }, [](void*) {}};
  KvOffloadConfig c;
  c.host_gb = 1e-3;
  try {
    KvOffload off(c, "model-a", 64, 4, none);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--kv-host-gb"), std::string::npos) << e.what();
  }
}

// The host tier's buffers: carved from chunks, reused once their last owner drops them, and
// valid after the pool itself is gone.
TEST(HostBlockPool, ReusesBuffersAndOutlivesItsOwner) {
  int allocs = 0, frees = 0;
  HostAllocator counting{[&](size_t n) {
                           ++allocs;
                           return HostAllocator::plain().alloc(n);
                         },
                         [&](void* p) {
                           ++frees;
                           HostAllocator::plain().free(p);
                         }};
  HostBlockPool::Buffer kept;
  {
    HostBlockPool pool(64, counting, 256);  // chunks of 4 blocks
    pool.reserve(6);
    EXPECT_EQ(allocs, 2);
    EXPECT_EQ(pool.allocated_blocks(), 8);
    std::vector<HostBlockPool::Buffer> bufs;
    for (int i = 0; i < 9; ++i) bufs.push_back(pool.get());
    EXPECT_EQ(allocs, 3);  // the ninth needed a chunk
    std::byte* first = bufs[0].get();
    bufs[0].reset();
    EXPECT_EQ(pool.get().get(), first);  // back on the free list, handed out again
    std::fill_n(bufs[1].get(), 64, std::byte{7});
    kept = bufs[1];
  }
  EXPECT_EQ(frees, 0);  // `kept` holds the pool's memory
  EXPECT_EQ(kept.get()[63], std::byte{7});
  kept.reset();
  EXPECT_EQ(frees, 3);
}

}  // namespace
}  // namespace nf
