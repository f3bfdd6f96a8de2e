// The fuzz targets (fuzz_targets.h) under a seeded mutation loop, bounded in time, as CTest
// tests: each target runs its seeds, then mutants of them (bit flips, byte runs, cut and
// duplicated spans, dictionary tokens spliced in, two inputs crossed) for
// NANOFLOW_FUZZ_SECONDS seconds (default 15) or NANOFLOW_FUZZ_RUNS inputs. A target that throws
// anything but a user error fails the test and leaves the input in the build directory
// (fuzz-crash-<target>.bin); an abort or a crash ends the test binary with it written first.
// NANOFLOW_FUZZ_SEED varies the run; the default is fixed, so CI repeats the same inputs.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>

#include "fuzz_targets.h"

namespace nf::fuzz {
namespace {

double env_double(const char* name, double fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atof(v) : fallback;
}

class Mutator {
 public:
  Mutator(uint64_t seed, std::vector<std::string> corpus, std::vector<std::string> dict)
      : rng_(seed), corpus_(std::move(corpus)), dict_(std::move(dict)) {}

  std::string next() {
    std::string s = corpus_[rng_() % corpus_.size()];
    const int n = 1 + static_cast<int>(rng_() % 4);
    for (int i = 0; i < n; ++i) mutate(s);
    if (s.size() > kMaxBytes) s.resize(kMaxBytes);
    return s;
  }

 private:
  static constexpr size_t kMaxBytes = 1 << 20;

  size_t pos(const std::string& s) {
    if (s.empty()) return 0;
    // Model files: most of the structure is in the header, so positions favour the front.
    const size_t limit = rng_() % 2 ? std::min<size_t>(s.size(), 4096) : s.size();
    return rng_() % limit;
  }

  void mutate(std::string& s) {
    switch (rng_() % 8) {
      case 0:  // flip bits
        if (!s.empty()) s[pos(s)] ^= static_cast<char>(1 << (rng_() % 8));
        break;
      case 1:  // a random byte
        if (!s.empty()) s[pos(s)] = static_cast<char>(rng_());
        break;
      case 2: {  // delete a span
        if (s.empty()) break;
        const size_t p = pos(s);
        s.erase(p, 1 + rng_() % std::min<size_t>(64, s.size() - p));
        break;
      }
      case 3: {  // duplicate a span, sometimes many times (deep nesting, long runs)
        if (s.empty()) break;
        const size_t p = pos(s), len = 1 + rng_() % std::min<size_t>(16, s.size() - p);
        const std::string span = s.substr(p, len);
        const size_t reps = rng_() % 4 == 0 ? 1 + rng_() % 20000 : 1 + rng_() % 4;
        std::string rep;
        for (size_t r = 0; r < reps && rep.size() < kMaxBytes; ++r) rep += span;
        s.insert(p, rep);
        break;
      }
      case 4:
      case 5: {  // a dictionary token, inserted or overwriting
        const std::string& d = dict_[rng_() % dict_.size()];
        const size_t p = s.empty() ? 0 : pos(s);
        if (rng_() % 2)
          s.insert(p, d);
        else
          s.replace(p, std::min(d.size(), s.size() - p), d);
        break;
      }
      case 6:  // truncate
        if (!s.empty()) s.resize(rng_() % s.size());
        break;
      case 7: {  // cross over with another input
        const std::string& o = corpus_[rng_() % corpus_.size()];
        if (o.empty() || s.empty()) break;
        const size_t a = pos(s), b = rng_() % o.size();
        s = s.substr(0, a) + o.substr(b, 1 + rng_() % std::min<size_t>(4096, o.size() - b));
        break;
      }
    }
  }

  std::mt19937_64 rng_;
  std::vector<std::string> corpus_, dict_;
};

class Fuzz : public ::testing::TestWithParam<Target> {};

TEST_P(Fuzz, NoInputCrashes) {
  const Target t = GetParam();
  const double seconds = env_double("NANOFLOW_FUZZ_SECONDS", 15);
  const double max_runs = env_double("NANOFLOW_FUZZ_RUNS", 1e9);
  const auto seed = static_cast<uint64_t>(env_double("NANOFLOW_FUZZ_SEED", 20261207));
  const std::string crash_file = std::string("fuzz-crash-") + target_name(t) + ".bin";
  Mutator m(seed + static_cast<uint64_t>(t), seed_corpus(t), dictionary(t));
  auto run_one = [&](const std::string& input) {
    // Written before the run, so that an abort leaves the input behind; removed after.
    std::ofstream(crash_file, std::ios::binary | std::ios::trunc) << input;
    try {
      run_target(t, input);
    } catch (const std::exception& e) {
      FAIL() << target_name(t) << ": " << e.what() << " (input in " << crash_file << ")";
    }
  };
  for (const std::string& s : seed_corpus(t)) run_one(s);
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  int64_t runs = 0;
  while (std::chrono::steady_clock::now() < end && runs < max_runs) {
    run_one(m.next());
    if (HasFailure()) return;
    ++runs;
  }
  std::remove(crash_file.c_str());
  std::printf("%s: %lld mutated inputs, %lld inputs accepted all the way\n", target_name(t),
              static_cast<long long>(runs), static_cast<long long>(accepted(t)));
  EXPECT_GT(runs, 0);
  EXPECT_GT(accepted(t), 0);
}

INSTANTIATE_TEST_SUITE_P(Targets, Fuzz, ::testing::ValuesIn(all_targets()),
                         [](const auto& info) { return std::string(target_name(info.param)); });

}  // namespace
}  // namespace nf::fuzz
