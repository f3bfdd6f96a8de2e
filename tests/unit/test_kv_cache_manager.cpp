#include <gtest/gtest.h>

#include <random>

#include "engine/kv_cache_manager.h"

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
  EXPECT_DEATH(kv.check_integrity({}), "leaked");
}

}  // namespace
}  // namespace nf
