#include <gtest/gtest.h>

#include <random>

#include "engine/kv_cache_manager.h"
#include "engine/kv_offload.h"

namespace nf {
namespace {

TEST(KvCacheManager, ReserveIsAllOrNothing) {
  KvCacheManager kv(4, 16);
  std::vector<int32_t> a, b;
  EXPECT_TRUE(kv.reserve(a, 17));  // two blocks
  EXPECT_EQ(a.size(), 2u);
  EXPECT_TRUE(kv.reserve(a, 32));  // still two
  EXPECT_EQ(a.size(), 2u);
  EXPECT_FALSE(kv.reserve(b, 48));  // needs three, two free
  EXPECT_TRUE(b.empty());
  EXPECT_EQ(kv.num_free_blocks(), 2);
  kv.check_integrity({&a, &b});
  kv.release(a);
  EXPECT_EQ(kv.num_free_blocks(), 4);
  kv.check_integrity({&a, &b});
}

TEST(KvCacheManager, RandomReserveReleaseNeverLeaks) {
  KvCacheManager kv(64, 8);
  std::vector<std::vector<int32_t>> tables(10);
  std::mt19937 rng(3);
  for (int i = 0; i < 5000; ++i) {
    auto& t = tables[rng() % tables.size()];
    if (rng() % 3 == 0) {
      kv.release(t);
    } else {
      kv.reserve(t, static_cast<int64_t>(t.size()) * 8 + rng() % 40);
    }
    std::vector<const std::vector<int32_t>*> all;
    for (auto& x : tables) all.push_back(&x);
    kv.check_integrity(all);
  }
}

TEST(KvCacheManagerDeathTest, DetectsALeak) {
  KvCacheManager kv(4, 16);
  std::vector<int32_t> a;
  kv.reserve(a, 16);
  EXPECT_DEATH(kv.check_integrity({}), "references but 0 tables");
}

std::vector<int32_t> iota_tokens(int n, int start = 0) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = start + i;
  return t;
}

TEST(KvCacheManager, PrefixHitsShareFullBlocksOnly) {
  KvCacheManager kv(8, 4);
  const auto prompt = iota_tokens(10);  // blocks [0..3], [4..7], partial [8, 9]
  std::vector<int32_t> a, b;
  std::vector<uint64_t> ha, hb;
  EXPECT_EQ(kv.match_prefix(prompt, a, ha), 0);
  ASSERT_TRUE(kv.reserve(a, 10));
  kv.commit_full_blocks(prompt, 10, a, ha);
  EXPECT_EQ(ha.size(), 2u);
  // The same prompt: two full blocks hit, shared with a.
  EXPECT_EQ(kv.match_prefix(prompt, b, hb), 8);
  EXPECT_EQ(b, std::vector<int32_t>(a.begin(), a.begin() + 2));
  ASSERT_TRUE(kv.reserve(b, 10));
  EXPECT_NE(b[2], a[2]);
  kv.check_integrity({&a, &b});
  // A prompt of exactly 8 tokens must compute its last token: only one block may hit.
  std::vector<int32_t> c;
  std::vector<uint64_t> hc;
  EXPECT_EQ(kv.match_prefix(iota_tokens(8), c, hc), 4);
  kv.release(c);
  // A different second block: only the first hits.
  auto other = prompt;
  other[5] = 99;
  EXPECT_EQ(kv.match_prefix(other, c, hc = {}), 4);
  kv.release(c);
  kv.release(a);
  kv.release(b);
  kv.check_integrity({});
  EXPECT_EQ(kv.num_free_blocks(), 8);
}

TEST(KvCacheManager, EvictsLeastRecentlyUsedCachedBlocks) {
  KvCacheManager kv(4, 2);
  std::vector<int32_t> a, b;
  std::vector<uint64_t> ha, hb;
  const auto pa = iota_tokens(5), pb = iota_tokens(5, 100);
  ASSERT_TRUE(kv.reserve(a, 5));
  kv.commit_full_blocks(pa, 5, a, ha);
  kv.release(a);  // two cached blocks become evictable, one block free
  EXPECT_EQ(kv.num_free_blocks(), 4);
  ASSERT_TRUE(kv.reserve(b, 7));  // needs all four: evicts both cached blocks
  kv.commit_full_blocks(pb, 5, b, hb);
  kv.check_integrity({&b});
  std::vector<int32_t> c;
  std::vector<uint64_t> hc;
  EXPECT_EQ(kv.match_prefix(pa, c, hc), 0);  // evicted
  kv.release(b);
  EXPECT_EQ(kv.match_prefix(pb, c, hc), 4);
  kv.release(c);
  kv.check_integrity({});
}

TEST(KvCacheManager, PrefixCachingOffNeverHits) {
  KvCacheManager kv(8, 4, false);
  const auto p = iota_tokens(10);
  std::vector<int32_t> a, b;
  std::vector<uint64_t> ha, hb;
  ASSERT_TRUE(kv.reserve(a, 10));
  kv.commit_full_blocks(p, 10, a, ha);
  kv.release(a);
  EXPECT_EQ(kv.match_prefix(p, b, hb), 0);
  kv.check_integrity({});
}

// With offload tiers: a registered block that loses its last user is queued for saving once;
// a prefix found below the device cache takes fresh blocks, registered at once, whose loads
// are queued. A block is held (shareable, not reusable) until its copy has finished.
TEST(KvCacheManager, QueuesSavesAndLoadsForTheOffloadTiers) {
  constexpr int kBs = 4;
  KvOffloadConfig oc;
  oc.host_gb = 1e-3;
  KvOffload off(oc, "test", 8, kBs);
  KvCacheManager kv(3, kBs);
  kv.set_offload(&off);
  const std::vector<int32_t> prompt = {1, 2, 3, 4, 5, 6, 7, 8, 9};  // two full blocks + 1
  std::vector<int32_t> t;
  std::vector<uint64_t> h;
  EXPECT_EQ(kv.match_prefix(prompt, t, h), 0);
  ASSERT_TRUE(kv.reserve(t, 9));
  kv.commit_full_blocks(prompt, 9, t, h);
  kv.release(t);
  h.clear();
  auto saves = kv.take_saves();
  ASSERT_EQ(saves.size(), 2u);  // the two full blocks, not the partial one
  EXPECT_EQ(kv.num_copying(), 2);
  for (const KvSave& s : saves) {
    std::vector<std::byte> bytes(8, static_cast<std::byte>(s.block + 1));
    off.save(s.hash, s.tokens, bytes);
  }
  EXPECT_TRUE(kv.take_saves().empty());
  // Until their copies have finished, the two blocks are not handed out (a forward could
  // overwrite them), but they can still be hit.
  std::vector<int32_t> other;
  EXPECT_EQ(kv.num_free_blocks(), 1);
  EXPECT_FALSE(kv.reserve(other, 12));
  kv.check_integrity({});
  EXPECT_EQ(kv.match_prefix(prompt, t, h), 8);
  EXPECT_EQ(kv.stats().host_hit_tokens, 0);  // the device blocks, not the tier's copies
  EXPECT_FALSE(kv.loading_any(t));
  kv.release(t);
  h.clear();
  EXPECT_TRUE(kv.take_saves().empty());
  const std::vector<int32_t> saved = {saves[0].block, saves[1].block};
  kv.finish_saves(saved);
  EXPECT_EQ(kv.num_copying(), 0);
  EXPECT_EQ(kv.num_free_blocks(), 3);
  kv.check_integrity({});
  // Evict them from the device: another request takes every block.
  ASSERT_TRUE(kv.reserve(other, 12));
  kv.release(other);
  EXPECT_TRUE(kv.take_saves().empty());  // never registered: nothing to save
  // The prompt again: both blocks come back from the host tier.
  EXPECT_EQ(kv.match_prefix(prompt, t, h), 8);
  EXPECT_EQ(kv.stats().host_hit_tokens, 8);
  // Its blocks are loading: it (and anyone sharing them) waits until they are resident.
  EXPECT_TRUE(kv.loading_any(t));
  EXPECT_EQ(kv.num_copying(), 2);
  std::vector<int32_t> t2;
  std::vector<uint64_t> h2;
  EXPECT_EQ(kv.match_prefix(prompt, t2, h2), 8);  // the device blocks just registered
  EXPECT_TRUE(kv.loading_any(t2));
  kv.release(t2);
  auto loads = kv.take_loads();
  EXPECT_TRUE(kv.loading_any(t));  // queued, not finished
  ASSERT_EQ(loads.size(), 2u);
  EXPECT_EQ(loads[0].block, t[0]);
  // Released tail first: saves[1] holds the first block.
  EXPECT_EQ(saves[1].tokens, std::vector<int32_t>(prompt.begin(), prompt.begin() + kBs));
  EXPECT_EQ(std::vector<std::byte>(loads[0].payload.get(), loads[0].payload.get() + 8),
            std::vector<std::byte>(8, static_cast<std::byte>(saves[1].block + 1)));
  // Its request goes away before the loads finished: the blocks stay held until they have.
  kv.release(t);
  h.clear();
  EXPECT_TRUE(kv.take_saves().empty());  // already in the tiers
  EXPECT_EQ(kv.num_free_blocks(), 1);
  EXPECT_FALSE(kv.reserve(other, 12));
  kv.check_integrity({});
  const std::vector<int32_t> loaded = {loads[0].block, loads[1].block};
  kv.finish_loads(loaded);
  EXPECT_EQ(kv.num_copying(), 0);
  EXPECT_EQ(kv.num_free_blocks(), 3);
  // Now resident and cached on the device: a hit with nothing to load.
  EXPECT_EQ(kv.match_prefix(prompt, t, h), 8);
  EXPECT_FALSE(kv.loading_any(t));
  EXPECT_TRUE(kv.take_loads().empty());
  kv.release(t);
  kv.check_integrity({});
}

}  // namespace
}  // namespace nf
