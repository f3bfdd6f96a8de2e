// The communicators: the single-rank no-op, and the CPU group of N ranks on N threads, whose
// all-reduce must be the exact rank-order sum (the same bits on every rank, every time) and
// whose all-gather must place every rank's data exactly.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

#include "common/status.h"
#include "runtime/communicator.h"
#include "runtime/cpu_communicator.h"
#include "runtime/rank_threads.h"

namespace {

using nf::Communicator;
using nf::CpuCommGroup;

// Values of mixed magnitude and sign, so that a sum in another order gives other bits.
std::vector<float> rank_data(uint64_t round, int rank, size_t n) {
  std::mt19937_64 rng(round * 1000003 + static_cast<uint64_t>(rank) * 7919 + 17);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) {
    const int e = static_cast<int>(rng() % 40) - 20;
    v[i] = std::ldexp(u(rng), e);
  }
  return v;
}

// The reference: ((d0 + d1) + d2) + ... element by element.
std::vector<float> rank_order_sum(uint64_t round, int ranks, size_t n) {
  std::vector<float> sum = rank_data(round, 0, n);
  for (int r = 1; r < ranks; ++r) {
    const std::vector<float> d = rank_data(round, r, n);
    for (size_t i = 0; i < n; ++i) sum[i] += d[i];
  }
  return sum;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

const size_t kSizes[] = {0, 1, 2, 3, 5, 7, 64, 513, 1000, 4097};

// The rank threads of both backends: every rank always on the same thread (rank 0 on the
// caller, or on a thread of its own), all ranks at once, and a failure reported from the rank
// that failed first, after on_error ran on that rank's thread; usable again afterwards.
TEST(RankThreads, RanksKeepTheirThreadsAndReportTheFirstFailure) {
  for (bool caller_is_rank0 : {true, false}) {
    SCOPED_TRACE(caller_is_rank0 ? "rank 0 on the caller" : "every rank on its own thread");
    nf::RankThreads threads(4, caller_is_rank0);
    EXPECT_EQ(threads.size(), 4);
    std::vector<std::thread::id> first(4), again(4);
    threads.run([&](int r) { first[static_cast<size_t>(r)] = std::this_thread::get_id(); });
    threads.run([&](int r) { again[static_cast<size_t>(r)] = std::this_thread::get_id(); });
    EXPECT_EQ(first, again);
    EXPECT_EQ(first[0] == std::this_thread::get_id(), caller_is_rank0);
    for (int a = 0; a < 4; ++a)
      for (int b = a + 1; b < 4; ++b) EXPECT_NE(first[static_cast<size_t>(a)], first[static_cast<size_t>(b)]);

    // Rank 2 fails; the others wait until on_error releases them, then rank 3 fails too.
    std::atomic<bool> released{false};
    std::atomic<int> on_error_rank{-1};
    std::thread::id on_error_thread;
    try {
      threads.run(
          [&](int r) {
            if (r == 2) throw std::runtime_error("rank 2");
            while (!released.load()) std::this_thread::yield();
            if (r == 3) throw std::runtime_error("rank 3");
          },
          [&](int r) {
            if (on_error_rank.exchange(r) == -1) on_error_thread = std::this_thread::get_id();
            released.store(true);
          });
      ADD_FAILURE() << "no exception";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "rank 2");
    }
    EXPECT_EQ(on_error_thread, first[2]);
    std::atomic<int> ran{0};
    threads.run([&](int) { ++ran; });
    EXPECT_EQ(ran.load(), 4);
  }
}

TEST(SingleRankCommunicator, IsANoOp) {
  nf::SingleRankCommunicator c;
  EXPECT_EQ(c.rank(), 0);
  EXPECT_EQ(c.world_size(), 1);
  std::vector<float> v = {1.5f, -2.0f, 3.25f};
  c.all_reduce_sum(v.data(), v.size());
  EXPECT_EQ(v, (std::vector<float>{1.5f, -2.0f, 3.25f}));
  std::vector<float> recv(3);
  c.all_gather(v.data(), recv.data(), v.size());
  EXPECT_EQ(recv, v);
  c.all_gather(recv.data(), recv.data(), recv.size());  // in place
  EXPECT_EQ(recv, v);
  c.barrier();
}

class CpuCommunicatorTest : public ::testing::TestWithParam<int> {};

TEST_P(CpuCommunicatorTest, RanksAndWorldSize) {
  const int N = GetParam();
  CpuCommGroup group(N);
  EXPECT_EQ(group.world_size(), N);
  std::vector<int> seen(static_cast<size_t>(N), -1), world(static_cast<size_t>(N), -1);
  std::atomic<int> calls{0};
  group.run([&](Communicator& c) {
    seen[static_cast<size_t>(c.rank())] = c.rank();
    world[static_cast<size_t>(c.rank())] = c.world_size();
    ++calls;
  });
  EXPECT_EQ(calls.load(), N);
  for (int r = 0; r < N; ++r) {
    EXPECT_EQ(seen[static_cast<size_t>(r)], r);
    EXPECT_EQ(world[static_cast<size_t>(r)], N);
  }
}

// Many rounds of every size: each rank's result equals the serial rank-order sum, bit for bit.
TEST_P(CpuCommunicatorTest, AllReduceIsTheExactRankOrderSum) {
  const int N = GetParam();
  CpuCommGroup group(N);
  uint64_t round = 0;
  for (int rep = 0; rep < 20; ++rep) {
    for (size_t n : kSizes) {
      ++round;
      std::vector<std::vector<float>> out(static_cast<size_t>(N));
      group.run([&](Communicator& c) {
        std::vector<float> d = rank_data(round, c.rank(), n);
        c.all_reduce_sum(d.data(), d.size());
        out[static_cast<size_t>(c.rank())] = std::move(d);
      });
      const std::vector<float> want = rank_order_sum(round, N, n);
      for (int r = 0; r < N; ++r) {
        EXPECT_TRUE(same_bits(out[static_cast<size_t>(r)], want))
            << "N=" << N << " rank " << r << " n=" << n << " round " << round;
      }
    }
  }
}

// Many collectives in one run (as a forward pass does): the same results, in every round.
TEST_P(CpuCommunicatorTest, ManyCollectivesInOneRunAreDeterministic) {
  const int N = GetParam();
  CpuCommGroup group(N);
  constexpr int kRounds = 300;
  constexpr size_t kN = 333;
  auto run_once = [&] {
    std::vector<std::vector<float>> last(static_cast<size_t>(N));
    std::vector<int> bad(static_cast<size_t>(N), 0);
    group.run([&](Communicator& c) {
      std::vector<float> d;
      for (int k = 0; k < kRounds; ++k) {
        d = rank_data(static_cast<uint64_t>(k), c.rank(), kN);
        c.all_reduce_sum(d.data(), d.size());
        if (!same_bits(d, rank_order_sum(static_cast<uint64_t>(k), N, kN))) {
          ++bad[static_cast<size_t>(c.rank())];
        }
      }
      last[static_cast<size_t>(c.rank())] = d;
    });
    for (int r = 0; r < N; ++r) EXPECT_EQ(bad[static_cast<size_t>(r)], 0) << "rank " << r;
    return last;
  };
  const auto a = run_once();
  const auto b = run_once();
  for (int r = 0; r < N; ++r) {
    EXPECT_TRUE(same_bits(a[static_cast<size_t>(r)], b[static_cast<size_t>(r)]));
    EXPECT_TRUE(same_bits(a[static_cast<size_t>(r)], a[0]));
  }
}

TEST_P(CpuCommunicatorTest, AllGatherPlacesEveryRanksData) {
  const int N = GetParam();
  CpuCommGroup group(N);
  uint64_t round = 0;
  for (int rep = 0; rep < 10; ++rep) {
    for (size_t n : kSizes) {
      ++round;
      for (bool in_place : {false, true}) {
        std::vector<std::vector<float>> out(static_cast<size_t>(N));
        group.run([&](Communicator& c) {
          const std::vector<float> mine = rank_data(round, c.rank(), n);
          std::vector<float> recv(static_cast<size_t>(N) * n, -7.0f);
          const float* send = mine.data();
          if (in_place) {
            std::copy(mine.begin(), mine.end(),
                      recv.begin() + static_cast<ptrdiff_t>(c.rank() * n));
            send = recv.data() + c.rank() * n;
          }
          c.all_gather(send, recv.data(), n);
          out[static_cast<size_t>(c.rank())] = std::move(recv);
        });
        std::vector<float> want;
        for (int r = 0; r < N; ++r) {
          const std::vector<float> d = rank_data(round, r, n);
          want.insert(want.end(), d.begin(), d.end());
        }
        for (int r = 0; r < N; ++r) {
          EXPECT_TRUE(same_bits(out[static_cast<size_t>(r)], want))
              << "N=" << N << " rank " << r << " n=" << n << " in place " << in_place;
        }
      }
    }
  }
}

// Nobody leaves a barrier before everyone reached it.
TEST_P(CpuCommunicatorTest, BarrierSeparatesPhases) {
  const int N = GetParam();
  CpuCommGroup group(N);
  std::atomic<int> arrived{0};
  std::vector<int> wrong(static_cast<size_t>(N), 0);
  group.run([&](Communicator& c) {
    for (int k = 1; k <= 200; ++k) {
      ++arrived;
      c.barrier();
      if (arrived.load() != k * N) ++wrong[static_cast<size_t>(c.rank())];
      c.barrier();
    }
  });
  for (int r = 0; r < N; ++r) EXPECT_EQ(wrong[static_cast<size_t>(r)], 0) << "rank " << r;
}

// A rank that throws does not leave the others waiting in a collective: run() rethrows its
// error, and the group works again afterwards.
TEST_P(CpuCommunicatorTest, AFailingRankAbortsTheCollectives) {
  const int N = GetParam();
  CpuCommGroup group(N);
  const int failing = N - 1;
  try {
    group.run([&](Communicator& c) {
      std::vector<float> d(16, 1.0f);
      c.all_reduce_sum(d.data(), d.size());
      if (c.rank() == failing) throw std::runtime_error("rank failed on purpose");
      for (int k = 0; k < 3; ++k) c.all_reduce_sum(d.data(), d.size());
    });
    ADD_FAILURE() << "run() did not rethrow";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "rank failed on purpose");
  }
  std::vector<std::vector<float>> out(static_cast<size_t>(N));
  group.run([&](Communicator& c) {
    std::vector<float> d = rank_data(99, c.rank(), 100);
    c.all_reduce_sum(d.data(), d.size());
    out[static_cast<size_t>(c.rank())] = std::move(d);
  });
  for (int r = 0; r < N; ++r)
    EXPECT_TRUE(same_bits(out[static_cast<size_t>(r)], rank_order_sum(99, N, 100)));
}

INSTANTIATE_TEST_SUITE_P(Ranks, CpuCommunicatorTest, ::testing::Values(1, 2, 3, 4),
                         [](const ::testing::TestParamInfo<int>& info) {
                           return "N" + std::to_string(info.param);
                         });

}  // namespace
