#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "runtime/sampler.h"

namespace nf {
namespace {

using nanoflow::SamplingParams;

std::vector<float> logits_from_probs(const std::vector<double>& p) {
  std::vector<float> l;
  for (double x : p) l.push_back(static_cast<float>(std::log(x)));
  return l;
}

SampleContext ctx_of(const SamplingParams& p, uint64_t seed = 7) {
  SampleContext c;
  c.params = &p;
  c.seed = seed;
  return c;
}

// Draws n tokens, each with its own seed.
std::map<int32_t, int> histogram(const std::vector<float>& logits, const SamplingParams& p, int n) {
  Sampler s;
  std::map<int32_t, int> h;
  for (int i = 0; i < n; ++i) ++h[s.sample(logits, ctx_of(p, 1000 + i)).token];
  return h;
}

TEST(Sampler, GreedyTakesArgmaxLowestIdOnTies) {
  Sampler s;
  SamplingParams p;
  p.temperature = 0;
  EXPECT_EQ(s.sample(std::vector<float>{0.1f, 3.0f, 3.0f, -1.0f}, ctx_of(p)).token, 1);
  const int32_t banned[] = {1, 2};
  auto c = ctx_of(p);
  c.banned = banned;
  EXPECT_EQ(s.sample(std::vector<float>{0.1f, 3.0f, 3.0f, -1.0f}, c).token, 0);
}

TEST(Sampler, LogprobsAreLogSoftmaxOfRawLogits) {
  Sampler s;
  SamplingParams p;
  p.temperature = 0.5f;
  p.logprobs = 3;
  const std::vector<float> l = {1.0f, 2.0f, 0.5f, 3.0f};
  const auto r = s.sample(l, ctx_of(p));
  double z = 0;
  for (float x : l) z += std::exp(x);
  ASSERT_EQ(r.top.size(), 3u);
  EXPECT_EQ(r.top[0].first, 3);
  EXPECT_EQ(r.top[1].first, 1);
  EXPECT_EQ(r.top[2].first, 0);
  EXPECT_NEAR(r.top[0].second, 3.0 - std::log(z), 1e-6);
  EXPECT_NEAR(r.logprob, l[r.token] - std::log(z), 1e-6);
}

TEST(Sampler, TemperatureOneFollowsTheDistribution) {
  const auto h = histogram(logits_from_probs({0.5, 0.3, 0.2}), SamplingParams{}, 20000);
  EXPECT_NEAR(h.at(0) / 20000.0, 0.5, 0.02);
  EXPECT_NEAR(h.at(1) / 20000.0, 0.3, 0.02);
  EXPECT_NEAR(h.at(2) / 20000.0, 0.2, 0.02);
}

TEST(Sampler, TopKTopPMinPCutTheTail) {
  const auto l = logits_from_probs({0.4, 0.3, 0.2, 0.1});
  SamplingParams k;
  k.top_k = 2;
  auto h = histogram(l, k, 5000);
  EXPECT_EQ(h.count(2) + h.count(3), 0u);
  EXPECT_NEAR(h.at(0) / 5000.0, 0.4 / 0.7, 0.03);
  SamplingParams tp;
  tp.top_p = 0.65f;  // 0.4 + 0.3 >= 0.65: keeps two
  h = histogram(l, tp, 5000);
  EXPECT_EQ(h.count(2) + h.count(3), 0u);
  SamplingParams mp;
  mp.min_p = 0.6f;  // keeps p >= 0.24: ids 0 and 1
  h = histogram(l, mp, 5000);
  EXPECT_EQ(h.count(2) + h.count(3), 0u);
  EXPECT_GT(h.at(1), 0);
}

TEST(Sampler, SameSeedSameTokens) {
  const auto l = logits_from_probs({0.25, 0.25, 0.25, 0.25});
  SamplingParams p;
  Sampler s;
  std::vector<int32_t> out_a, out_b;
  int differ = 0;
  for (int i = 0; i < 100; ++i) {
    auto ca = ctx_of(p, 42), cb = ctx_of(p, 42), cc = ctx_of(p, 43);
    ca.output = out_a;
    cb.output = out_b;
    cc.output = out_a;
    const int32_t a = s.sample(l, ca).token, b = s.sample(l, cb).token;
    EXPECT_EQ(a, b);
    differ += s.sample(l, cc).token != a;
    out_a.push_back(a);
    out_b.push_back(b);
  }
  EXPECT_GT(differ, 20);  // another seed gives another stream
}

TEST(Sampler, PenaltiesAndBias) {
  Sampler s;
  SamplingParams p;
  p.temperature = 0;
  const std::vector<float> l = {2.0f, 1.9f, -1.0f};
  const std::vector<int32_t> out = {0, 0};
  auto c = ctx_of(p);
  c.output = out;
  EXPECT_EQ(s.sample(l, c).token, 0);
  p.frequency_penalty = 0.1f;  // 2.0 - 0.2 < 1.9
  EXPECT_EQ(s.sample(l, c).token, 1);
  p.frequency_penalty = 0;
  p.presence_penalty = 0.2f;  // 2.0 - 0.2 < 1.9
  EXPECT_EQ(s.sample(l, c).token, 1);
  p.presence_penalty = 0;
  p.repetition_penalty = 1.1f;  // 2.0 / 1.1 < 1.9
  EXPECT_EQ(s.sample(l, c).token, 1);
  p.repetition_penalty = 1;
  p.logit_bias = {{2, 5.0f}};
  EXPECT_EQ(s.sample(l, c).token, 2);
}

}  // namespace
}  // namespace nf
