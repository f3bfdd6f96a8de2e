// The packing of penalties and logit_bias for the device sampler (runtime/sample_pack.h): the
// CSRs it builds, that the processed logits it describes equal the host sampler's bit for bit,
// and the executor over a fake device backend that applies them (as the GPU sampler does)
// giving the same tokens as the executor sampling every row on the host.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <random>

#include "common/status.h"
#include "runtime/sampler.h"
#include "model/model_config.h"
#include "runtime/executor.h"
#include "runtime/sample_pack.h"

namespace nf {
namespace {

using nanoflow::SamplingParams;

TEST(TokenCounts, OfAndAddAgree) {
  const std::vector<int32_t> toks = {5, 3, 5, 9, -1, 3, 100, 5, 0};
  const TokenCounts c = TokenCounts::of(toks, 10);
  EXPECT_EQ(c.ids, (std::vector<int32_t>{0, 3, 5, 9}));
  EXPECT_EQ(c.counts, (std::vector<int32_t>{1, 2, 3, 1}));
  TokenCounts d;
  for (int32_t t : toks) d.add(t, 10);
  EXPECT_EQ(d.ids, c.ids);
  EXPECT_EQ(d.counts, c.counts);
}

DeviceSampleRow pack_one(const SamplingParams& p, const std::vector<int32_t>& prompt,
                         const std::vector<int32_t>& output, int64_t vocab, DeviceSampleBatch& b,
                         bool* ok = nullptr) {
  begin_adjustments(b);
  b.rows.assign(1, DeviceSampleRow{});
  const bool r = append_adjustments(p, TokenCounts::of(prompt, vocab),
                                    TokenCounts::of(output, vocab), vocab, b, b.rows[0]);
  if (ok) *ok = r;
  return b.rows[0];
}

TEST(SamplePack, RepetitionCoversPromptAndOutputWithOutputCounts) {
  SamplingParams p;
  p.repetition_penalty = 1.2f;
  p.frequency_penalty = 0.5f;
  p.logit_bias = {{7, 1.0f}, {2, -100.0f}, {64, 3.0f}, {-1, 1.0f}};  // the last two: out of range
  DeviceSampleBatch b;
  bool ok = false;
  const DeviceSampleRow r = pack_one(p, {5, 3, 5, 9, 70}, {3, 7, 7, -5}, 64, b, &ok);
  ASSERT_TRUE(ok);
  EXPECT_EQ(r.repetition_penalty, 1.2f);
  EXPECT_EQ(r.frequency_penalty, 0.5f);
  EXPECT_EQ(r.presence_penalty, 0.0f);
  EXPECT_EQ(b.penalty_indptr, (std::vector<int32_t>{0, 4}));
  EXPECT_EQ(b.penalty_ids, (std::vector<int32_t>{3, 5, 7, 9}));
  EXPECT_EQ(b.penalty_counts, (std::vector<int32_t>{1, 0, 2, 0}));
  EXPECT_EQ(b.bias_indptr, (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(b.bias_ids, (std::vector<int32_t>{2, 7}));
  EXPECT_EQ(b.bias_values, (std::vector<float>{-100.0f, 1.0f}));
}

TEST(SamplePack, FrequencyAndPresenceAloneSeeOnlyTheOutput) {
  SamplingParams p;
  p.presence_penalty = 0.25f;
  DeviceSampleBatch b;
  pack_one(p, {5, 3, 5, 9}, {3, 7, 7}, 64, b);
  EXPECT_EQ(b.penalty_ids, (std::vector<int32_t>{3, 7}));
  EXPECT_EQ(b.penalty_counts, (std::vector<int32_t>{1, 2}));
  end_adjustments(b);
  EXPECT_TRUE(b.bias_indptr.empty());  // no bias anywhere: no CSR
  EXPECT_EQ(b.penalty_indptr, (std::vector<int32_t>{0, 2}));
}

TEST(SamplePack, RowsWithoutAdjustmentsAddNothing) {
  DeviceSampleBatch b;
  const DeviceSampleRow r = pack_one(SamplingParams{}, {1, 2, 3}, {4}, 64, b);
  EXPECT_EQ(r.repetition_penalty, 1.0f);
  EXPECT_EQ(b.penalty_indptr, (std::vector<int32_t>{0, 0}));
  end_adjustments(b);
  EXPECT_TRUE(b.penalty_indptr.empty());
  EXPECT_TRUE(b.bias_indptr.empty());
}

TEST(SamplePack, DuplicateBiasIdFallsBackToTheHost) {
  SamplingParams p;
  p.repetition_penalty = 1.5f;
  p.logit_bias = {{4, 1.0f}, {9, 2.0f}, {4, 0.5f}};
  DeviceSampleBatch b;
  begin_adjustments(b);
  b.rows.resize(2);
  SamplingParams q;
  q.logit_bias = {{1, 3.0f}};
  ASSERT_TRUE(append_adjustments(q, {}, {}, 64, b, b.rows[0]));
  EXPECT_FALSE(
      append_adjustments(p, TokenCounts::of(std::vector<int32_t>{1, 2}, 64), {}, 64, b, b.rows[1]));
  // Nothing of the failed row: an empty row with neutral penalties.
  EXPECT_EQ(b.bias_indptr, (std::vector<int32_t>{0, 1, 1}));
  EXPECT_EQ(b.bias_ids, (std::vector<int32_t>{1}));
  EXPECT_EQ(b.penalty_indptr, (std::vector<int32_t>{0, 0, 0}));
  EXPECT_EQ(b.rows[1].repetition_penalty, 1.0f);
}

// sampler.cpp's processing, line for line (bias, repetition, frequency/presence).
std::vector<float> host_processed(std::span<const float> logits, const SamplingParams& p,
                                  std::span<const int32_t> prompt,
                                  std::span<const int32_t> output) {
  const int32_t V = static_cast<int32_t>(logits.size());
  std::vector<float> work(logits.begin(), logits.end());
  std::vector<uint32_t> counts;
  for (const auto& [id, bias] : p.logit_bias)
    if (id >= 0 && id < V) work[id] += bias;
  if (p.repetition_penalty != 1.0f) {
    counts.assign(V, 0);
    auto penalize = [&](int32_t id) {
      if (id < 0 || id >= V || counts[id] & 0x80000000u) return;
      counts[id] |= 0x80000000u;
      work[id] = work[id] > 0 ? work[id] / p.repetition_penalty : work[id] * p.repetition_penalty;
    };
    for (int32_t id : prompt) penalize(id);
    for (int32_t id : output) penalize(id);
  }
  if (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
    counts.assign(V, 0);
    for (int32_t id : output)
      if (id >= 0 && id < V) ++counts[id];
    for (int32_t id : output) {
      if (id < 0 || id >= V || counts[id] == 0) continue;
      work[id] -= p.frequency_penalty * static_cast<float>(counts[id]) + p.presence_penalty;
      counts[id] = 0;
    }
  }
  return work;
}

SamplingParams random_params(std::mt19937& rng, int vocab) {
  SamplingParams p;
  auto coin = [&](double q) { return std::uniform_real_distribution<double>(0, 1)(rng) < q; };
  auto uni = [&](float a, float b) { return std::uniform_real_distribution<float>(a, b)(rng); };
  p.temperature = coin(0.3) ? 0.0f : uni(0.3f, 1.5f);
  if (coin(0.3)) p.top_k = 1 + static_cast<int>(rng() % 20);
  if (coin(0.3)) p.top_p = uni(0.5f, 0.99f);
  if (coin(0.2)) p.min_p = uni(0.01f, 0.2f);
  if (coin(0.6)) p.repetition_penalty = coin(0.8) ? uni(1.05f, 2.0f) : uni(0.5f, 0.95f);
  if (coin(0.5)) p.frequency_penalty = uni(-1.0f, 2.0f);
  if (coin(0.5)) p.presence_penalty = uni(-1.0f, 2.0f);
  if (coin(0.5)) {
    const int n = 1 + static_cast<int>(rng() % 6);
    std::vector<int32_t> ids(vocab);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    for (int i = 0; i < n; ++i) {
      const float bias = coin(0.2) ? -100.0f : coin(0.1) ? 100.0f : uni(-5.0f, 5.0f);
      p.logit_bias.emplace_back(ids[i], bias);
    }
  }
  if (coin(0.3)) p.logprobs = 1 + static_cast<int>(rng() % 5);
  return p;
}

TEST(SamplePack, AppliedAdjustmentsEqualTheHostSamplersBitForBit) {
  std::mt19937 rng(123);
  const int vocab = 200;
  for (int trial = 0; trial < 500; ++trial) {
    SCOPED_TRACE(testing::Message() << "trial " << trial);
    const SamplingParams p = random_params(rng, vocab);
    std::vector<int32_t> prompt(1 + rng() % 40), output(rng() % 30);
    for (auto& t : prompt) t = static_cast<int32_t>(rng() % (vocab / 2));  // repeats likely
    for (auto& t : output) t = static_cast<int32_t>(rng() % (vocab / 2));
    std::vector<float> logits(vocab);
    for (auto& x : logits) x = std::uniform_real_distribution<float>(-6.0f, 6.0f)(rng);
    logits[rng() % vocab] = 0.0f;  // the repetition penalty's x > 0 edge

    DeviceSampleBatch b;
    bool ok = false;
    pack_one(p, prompt, output, vocab, b, &ok);
    ASSERT_TRUE(ok);
    end_adjustments(b);
    std::vector<float> dev = logits;
    apply_adjustments(dev, b, 0);
    const std::vector<float> want = host_processed(logits, p, prompt, output);
    ASSERT_EQ(0, std::memcmp(dev.data(), want.data(), vocab * sizeof(float)));

    // And the sampler on the processed logits without adjustments draws the same token.
    SamplingParams plain = p;
    plain.repetition_penalty = 1.0f;
    plain.frequency_penalty = plain.presence_penalty = 0.0f;
    plain.logit_bias.clear();
    Sampler s;
    SampleContext c;
    c.params = &p;
    c.prompt = prompt;
    c.output = output;
    c.seed = rng();
    const int32_t host_token = s.sample(logits, c).token;
    c.params = &plain;
    EXPECT_EQ(s.sample(dev, c).token, host_token);
  }
}

// ---- The executor: every row on a fake device vs every row on the host. ----

constexpr int kVocab = 96;

// Logits of a row: a fixed pseudo-random function of the last token and its position.
void fake_logits(int32_t token, int32_t pos, std::span<float> out) {
  uint64_t z = 0x9e3779b97f4a7c15ull * (static_cast<uint64_t>(token) * 1315423911u + pos + 1);
  for (auto& x : out) {
    z ^= z >> 29;
    z *= 0xbf58476d1ce4e5b9ull;
    z ^= z >> 32;
    x = static_cast<float>(static_cast<int64_t>(z % 8001) - 4000) / 1000.0f;  // [-4, 4]
  }
}

// samples_on_device: forward_sample does what the GPU sampler does with a DeviceSampleBatch
// (adjustments and banned ids on the processed copy; logprobs of the raw logits), sampling
// with the host's sampler so that seeded draws are comparable.
class FakeBackend final : public Backend {
 public:
  explicit FakeBackend(bool device) : device_(device) { config_.vocab_size = kVocab; }
  const ModelConfig& config() const override { return config_; }
  int block_size() const override { return 16; }
  int64_t num_kv_blocks() const override { return 1024; }
  bool samples_on_device() const override { return device_; }
  void forward(const ScheduledBatch& b, std::span<float> logits) override {
    for (size_t s = 0; s < b.sample_rows.size(); ++s)
      fake_logits(b.token_ids[b.sample_rows[s]], b.positions[b.sample_rows[s]],
                  logits.subspan(s * kVocab, kVocab));
  }
  void forward_sample(const ScheduledBatch& b, const DeviceSampleBatch& in,
                      DeviceSampleResult& out) override {
    const size_t S = b.sample_rows.size();
    NF_CHECK(in.rows.size() == S, "rows");
    const int K = in.max_logprobs;
    out.tokens.assign(S, -1);
    out.logprobs.assign(S, 0.0f);
    out.top_ids.assign(S * K, -1);
    out.top_logprobs.assign(S * K, -INFINITY);
    out.host_logits.clear();
    std::vector<float> raw(kVocab);
    for (size_t i = 0; i < S; ++i) {
      fake_logits(b.token_ids[b.sample_rows[i]], b.positions[b.sample_rows[i]], raw);
      const DeviceSampleRow& r = in.rows[i];
      if (r.on_host) {
        ++host_rows;
        out.host_logits.insert(out.host_logits.end(), raw.begin(), raw.end());
        continue;
      }
      std::vector<float> work = raw;
      apply_adjustments(work, in, i);
      SamplingParams plain;
      plain.temperature = r.temperature;
      plain.top_k = r.top_k;
      plain.top_p = r.top_p;
      plain.min_p = r.min_p;
      plain.logprobs = r.num_logprobs;
      std::vector<int32_t> steps(r.step, -1);  // the generator's step is the output's length
      SampleContext c;
      c.params = &plain;
      c.output = steps;
      if (!in.banned_indptr.empty())
        c.banned = std::span<const int32_t>(in.banned_ids.data() + in.banned_indptr[i],
                                            in.banned_ids.data() + in.banned_indptr[i + 1]);
      c.seed = r.seed;
      const SampleResult s = sampler_.sample(work, c);
      out.tokens[i] = s.token;
      const double lse = log_sum_exp(raw);
      out.logprobs[i] = static_cast<float>(raw[s.token] - lse);
      std::vector<int32_t> idx(kVocab);
      std::iota(idx.begin(), idx.end(), 0);
      std::stable_sort(idx.begin(), idx.end(),
                       [&](int32_t a, int32_t c2) { return raw[a] > raw[c2]; });
      for (int k = 0; k < r.num_logprobs; ++k) {
        out.top_ids[i * K + k] = idx[k];
        out.top_logprobs[i * K + k] = static_cast<float>(raw[idx[k]] - lse);
      }
    }
  }
  int host_rows = 0;

 private:
  bool device_;
  ModelConfig config_;
  Sampler sampler_;
};

struct Req {
  nanoflow::RequestId id;
  std::vector<int32_t> prompt;
  SamplingParams params;
  uint64_t seed;
};

// Runs the requests for `steps` decode steps (after one prefill step); every sampled result.
std::vector<StepOutput> run_executor(Backend& backend, const std::vector<Req>& reqs, int steps) {
  Executor ex(backend, {0}, /*threaded=*/false);
  std::vector<StepOutput> outs;
  for (int step = 0; step <= steps; ++step) {
    StepInput in;
    ScheduledBatch& b = in.batch;
    b.seq_indptr.push_back(0);
    for (const Req& r : reqs) {
      const int32_t n = static_cast<int32_t>(r.prompt.size());
      if (step == 0) {
        in.new_requests.push_back({r.id, r.prompt, r.params, r.seed});
        for (int32_t t = 0; t < n; ++t) {
          b.token_ids.push_back(r.prompt[t]);
          b.positions.push_back(t);
        }
      } else {
        b.token_ids.push_back(kTokenFromDevice);
        b.positions.push_back(n + step - 1);
      }
      b.seq_indptr.push_back(static_cast<int32_t>(b.token_ids.size()));
      b.request_ids.push_back(r.id);
      b.sample_rows.push_back(b.seq_indptr.back() - 1);
      in.sample_ids.push_back(r.id);
    }
    b.slot_mapping.assign(b.token_ids.size(), 0);
    ex.submit(std::move(in));
    outs.push_back(ex.wait());
  }
  return outs;
}

TEST(SamplePack, ExecutorOnDeviceMatchesHostSampling) {
  std::mt19937 rng(7);
  std::vector<Req> reqs;
  for (int i = 0; i < 40; ++i) {
    Req r{static_cast<nanoflow::RequestId>(i + 1), {}, random_params(rng, kVocab), rng()};
    r.prompt.resize(3 + rng() % 20);
    for (auto& t : r.prompt) t = static_cast<int32_t>(1 + rng() % (kVocab - 1));
    if (i % 7 == 3) {  // EOS and a stop id banned for the first tokens
      r.params.min_tokens = 4;
      r.params.stop_token_ids = {5};
    }
    if (i % 9 == 4) r.params.logit_bias = {{3, 1.0f}, {3, 2.0f}};  // the host fallback
    if (i == 5) {  // forced: +100 outweighs every logit in [-4, 4] and the presence penalty
      r.params.repetition_penalty = 1.0f;
      r.params.frequency_penalty = 0.0f;
      r.params.presence_penalty = 0.5f;
      r.params.logit_bias = {{17, 100.0f}};
    }
    reqs.push_back(std::move(r));
  }
  FakeBackend host(false), device(true);
  const auto want = run_executor(host, reqs, 24);
  const auto got = run_executor(device, reqs, 24);
  EXPECT_GT(device.host_rows, 0);       // the fallback ran
  EXPECT_EQ(device.host_rows, 25 * 4);  // and only for those rows (i = 4, 13, 22, 31), 25 steps
  ASSERT_EQ(want.size(), got.size());
  for (size_t s = 0; s < want.size(); ++s) {
    ASSERT_EQ(want[s].results.size(), got[s].results.size());
    for (size_t i = 0; i < want[s].results.size(); ++i) {
      SCOPED_TRACE(testing::Message() << "step " << s << " request " << i);
      const SampleResult &a = want[s].results[i], &b = got[s].results[i];
      EXPECT_EQ(a.token, b.token);
      EXPECT_FLOAT_EQ(a.logprob, b.logprob);
      ASSERT_EQ(a.top.size(), b.top.size());
      for (size_t k = 0; k < a.top.size(); ++k) {
        EXPECT_EQ(a.top[k].first, b.top[k].first);
        EXPECT_FLOAT_EQ(a.top[k].second, b.top[k].second);
      }
    }
  }
  for (const auto& o : got) EXPECT_EQ(o.results[5].token, 17);
}

}  // namespace
}  // namespace nf
