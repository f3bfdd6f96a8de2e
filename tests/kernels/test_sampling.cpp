// GPU sampling against the host sampler's rules (src/runtime/sampler.cpp): greedy equals the
// CPU argmax, top-K logprobs equal the CPU log-softmax, seeded draws do not depend on the rest
// of the batch, top-k/top-p/min-p/banned ids never let an excluded token through, and the
// empirical distribution over a small vocabulary matches the expected one; all of it with
// repetition/frequency/presence penalties and logit_bias too (packed by runtime/sample_pack).
#include <algorithm>
#include <cmath>
#include <numeric>

#include "backends/cuda/sampling.h"
#include "runtime/sampler.h"
#include "kernel_test_util.h"
#include "runtime/sample_pack.h"

namespace nf {
namespace {

using cuda::DType;
using cuda::SampleRowParams;
using cuda::TensorView;
using test::download;
using test::upload;

// Log-probabilities: fp32 log-sum-exp on the device vs double on the host.
constexpr double kLogprobTolerance = 1e-3;
constexpr int kTopCols = 20;

struct Row {
  std::vector<float> logits;
  SampleRowParams params;  // its penalties too
  std::vector<int32_t> banned;
  std::vector<int32_t> prompt, output;                // what the penalties see
  std::vector<std::pair<int32_t, float>> logit_bias;  // in the request's order
};

nanoflow::SamplingParams host_params(const Row& r) {
  const SampleRowParams& p = r.params;
  nanoflow::SamplingParams h;
  h.temperature = p.temperature;
  h.top_k = p.top_k;
  h.top_p = p.top_p;
  h.min_p = p.min_p;
  h.logprobs = p.num_logprobs;
  h.repetition_penalty = p.repetition_penalty;
  h.frequency_penalty = p.frequency_penalty;
  h.presence_penalty = p.presence_penalty;
  h.logit_bias = r.logit_bias;
  return h;
}

// The rows' adjustment CSRs, as the executor packs them.
DeviceSampleBatch pack_adjustments(const std::vector<Row>& rows, int vocab) {
  DeviceSampleBatch b;
  begin_adjustments(b);
  b.rows.resize(rows.size());
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    const bool ok = append_adjustments(host_params(r), TokenCounts::of(r.prompt, vocab),
                                       TokenCounts::of(r.output, vocab), vocab, b, b.rows[i]);
    EXPECT_TRUE(ok) << "row " << i << " cannot be sampled on the device";
  }
  end_adjustments(b);
  return b;
}

// The logits the row samples from on the host: bias and penalties applied (bit for bit the
// host sampler's processing: tests/unit/test_sample_pack.cpp).
std::vector<float> processed_logits(const Row& r) {
  std::vector<float> x = r.logits;
  apply_adjustments(x, pack_adjustments({r}, static_cast<int>(r.logits.size())), 0);
  return x;
}

struct Result {
  std::vector<int32_t> tokens, top_ids;
  std::vector<float> logprobs, top_logprobs;
};

// Runs one batch through the sampler with every output poisoned first.
Result run(cuda::GpuSampler& sampler, const std::vector<Row>& rows) {
  const int vocab = sampler.config().vocab;
  const int64_t S = static_cast<int64_t>(rows.size());
  std::vector<float> logits;
  std::vector<SampleRowParams> params;
  std::vector<int32_t> indptr{0}, banned;
  for (const Row& r : rows) {
    logits.insert(logits.end(), r.logits.begin(), r.logits.end());
    params.push_back(r.params);
    banned.insert(banned.end(), r.banned.begin(), r.banned.end());
    indptr.push_back(static_cast<int32_t>(banned.size()));
  }
  auto d_logits = upload(logits);
  auto d_params = upload(params);
  auto d_indptr = upload(indptr);
  auto d_banned = upload(banned);
  cuda::DeviceBuffer d_tokens(S * 4), d_lp(S * 4), d_top_ids(S * kTopCols * 4),
      d_top_lp(S * kTopCols * 4);
  for (auto* b : {&d_tokens, &d_lp, &d_top_ids, &d_top_lp}) test::poison(*b);
  cuda::SampleArgs args;
  args.logits = TensorView(d_logits.data(), DType::kF32, {S, vocab});
  args.params = TensorView(d_params.data(), DType::kU8, {S, sizeof(SampleRowParams)});
  args.banned_indptr = TensorView(d_indptr.data(), DType::kI32, {S + 1});
  args.banned_ids = TensorView(d_banned.data(), DType::kI32, {static_cast<int64_t>(banned.size())});
  const DeviceSampleBatch adj = pack_adjustments(rows, vocab);
  auto d_pen_indptr = upload(adj.penalty_indptr), d_pen_ids = upload(adj.penalty_ids),
       d_pen_counts = upload(adj.penalty_counts), d_bias_indptr = upload(adj.bias_indptr),
       d_bias_ids = upload(adj.bias_ids);
  auto d_bias_values = upload(adj.bias_values);
  if (!adj.penalty_indptr.empty()) {
    const int64_t n = static_cast<int64_t>(adj.penalty_ids.size());
    args.penalty_indptr = TensorView(d_pen_indptr.data(), DType::kI32, {S + 1});
    args.penalty_ids = TensorView(d_pen_ids.data(), DType::kI32, {n});
    args.penalty_counts = TensorView(d_pen_counts.data(), DType::kI32, {n});
  }
  if (!adj.bias_indptr.empty()) {
    const int64_t n = static_cast<int64_t>(adj.bias_ids.size());
    args.bias_indptr = TensorView(d_bias_indptr.data(), DType::kI32, {S + 1});
    args.bias_ids = TensorView(d_bias_ids.data(), DType::kI32, {n});
    args.bias_values = TensorView(d_bias_values.data(), DType::kF32, {n});
  }
  args.tokens = TensorView(d_tokens.data(), DType::kI32, {S});
  args.logprobs = TensorView(d_lp.data(), DType::kF32, {S});
  args.top_ids = TensorView(d_top_ids.data(), DType::kI32, {S, kTopCols});
  args.top_logprobs = TensorView(d_top_lp.data(), DType::kF32, {S, kTopCols});
  args.host_params = params;
  sampler.sample(args, nullptr);
  test::sync();
  return {download<int32_t>(d_tokens, S), download<int32_t>(d_top_ids, S * kTopCols),
          download<float>(d_lp, S), download<float>(d_top_lp, S * kTopCols)};
}

// Row i's top-K slots: the expected (id, logprob) pairs first, then -1 / -inf in the rest.
void expect_top_slots(const Result& res, size_t i, const nanoflow::TopLogprobs& want) {
  const size_t n = want.size();
  for (size_t j = 0; j < static_cast<size_t>(kTopCols); ++j) {
    const int32_t id = res.top_ids[i * kTopCols + j];
    const float lp = res.top_logprobs[i * kTopCols + j];
    if (j >= n) {
      EXPECT_EQ(id, -1) << "slot " << j;
      EXPECT_TRUE(std::isinf(lp) && lp < 0) << "slot " << j << " holds " << lp;
      continue;
    }
    EXPECT_EQ(id, want[j].first) << "slot " << j;
    EXPECT_NEAR(lp, want[j].second, kLogprobTolerance) << "slot " << j;
  }
}

// The distribution sampler.cpp draws from: bias and penalties, banned ids out, top-k, top-p at
// temperature T, then min-p; probability 0 for every excluded id.
std::vector<double> expected_distribution(const Row& r) {
  const int V = static_cast<int>(r.logits.size());
  const SampleRowParams& p = r.params;
  const std::vector<float> processed = processed_logits(r);
  std::vector<double> work(processed.begin(), processed.end());
  for (int32_t b : r.banned) work[b] = -INFINITY;
  std::vector<int32_t> idx(V);
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) { return work[a] > work[b]; });
  int n = p.top_k > 0 && p.top_k < V ? p.top_k : V;
  while (n > 1 && std::isinf(work[idx[n - 1]])) --n;
  const double inv_t = 1.0 / p.temperature, mx = work[idx[0]] * inv_t;
  std::vector<double> probs(n);
  double total = 0;
  for (int i = 0; i < n; ++i) total += probs[i] = std::exp(work[idx[i]] * inv_t - mx);
  for (auto& x : probs) x /= total;
  if (p.top_p < 1.0f) {
    double cum = 0;
    int keep = 0;
    while (keep < n) {
      cum += probs[keep++];
      if (cum >= p.top_p) break;
    }
    n = std::max(1, keep);
  }
  if (p.min_p > 0.0f) {
    int keep = 1;
    while (keep < n && probs[keep] >= p.min_p * probs[0]) ++keep;
    n = keep;
  }
  std::vector<double> dist(V, 0.0);
  double mass = 0;
  for (int i = 0; i < n; ++i) mass += probs[i];
  for (int i = 0; i < n; ++i) dist[idx[i]] = probs[i] / mass;
  return dist;
}

std::vector<float> random_logits(int vocab, std::mt19937& rng, float scale) {
  return test::randu(vocab, rng, -scale, scale);
}

SampleRowParams params(float t, int top_k, float top_p, float min_p, uint64_t seed, uint64_t step,
                       int logprobs = 0) {
  SampleRowParams p;
  p.temperature = t;
  p.top_k = top_k;
  p.top_p = top_p;
  p.min_p = min_p;
  p.seed = seed;
  p.step = step;
  p.num_logprobs = logprobs;
  return p;
}

// The host sampler on one row (its greedy token and its logprobs are deterministic).
SampleResult cpu_sample(const Row& r) {
  static Sampler sampler;
  const nanoflow::SamplingParams hp = host_params(r);
  SampleContext ctx;
  ctx.params = &hp;
  ctx.prompt = r.prompt;
  ctx.output = r.output;
  ctx.banned = r.banned;
  ctx.seed = r.params.seed;
  return sampler.sample(r.logits, ctx);
}

class Sampling : public test::KernelTest {};

// Draws kRows x kCalls tokens from `base` (one seed per call, the row index as step) and checks
// the counts against the host's distribution: each token within 5 sigma (+1), total variation
// distance below 0.015.
void expect_empirical_distribution(cuda::GpuSampler& sampler, const Row& base, int kRows,
                                   int kCalls, std::mt19937& rng) {
  const int vocab = static_cast<int>(base.logits.size());
  const auto dist = expected_distribution(base);
  std::vector<int64_t> counts(vocab, 0);
  for (int call = 0; call < kCalls; ++call) {
    std::vector<Row> rows(kRows, base);
    const uint64_t seed = rng();
    for (int i = 0; i < kRows; ++i) {
      rows[i].params.seed = seed;
      rows[i].params.step = i;
    }
    const Result res = run(sampler, rows);
    for (int32_t t : res.tokens) {
      ASSERT_TRUE(t >= 0 && t < vocab) << "token " << t;
      ++counts[t];
    }
  }
  const double n = static_cast<double>(kRows) * kCalls;
  double tv = 0;
  for (int i = 0; i < vocab; ++i) {
    const double expect = n * dist[i];
    const double sigma = std::sqrt(n * dist[i] * (1 - dist[i]));
    EXPECT_LE(std::abs(counts[i] - expect), 5 * sigma + 1)
        << "token " << i << ": " << counts[i] << " draws, expected " << expect;
    tv += std::abs(counts[i] / n - dist[i]) / 2;
  }
  EXPECT_LT(tv, 0.015) << "total variation distance";
}

TEST_F(Sampling, GreedyMatchesCpuArgmax) {
  for (int vocab : {1000, 152064}) {
    SCOPED_TRACE(testing::Message() << "vocab " << vocab);
    cuda::GpuSampler sampler({.max_rows = 97, .vocab = vocab, .sort_rows = 16});
    std::vector<Row> rows;
    for (int i = 0; i < 97; ++i) {
      Row r{random_logits(vocab, rng_, 8.0f),
            params(i % 2 ? 0.0f : 0.7f, i % 2 ? 0 : 1, 1.0f, 0.0f, rng_(), i, i % 3 == 0 ? 5 : 0),
            {}};
      const int32_t a = static_cast<int32_t>(rng_() % vocab),
                    b = static_cast<int32_t>(rng_() % vocab);
      if (i % 4 == 0) r.logits[a] = r.logits[b] = 9.0f;  // a tie: the lower id wins
      if (i % 5 == 0)
        r.banned = {static_cast<int32_t>(std::max_element(r.logits.begin(), r.logits.end()) -
                                         r.logits.begin())};
      rows.push_back(std::move(r));
    }
    const Result res = run(sampler, rows);
    for (size_t i = 0; i < rows.size(); ++i) {
      const auto want = cpu_sample(rows[i]);
      EXPECT_EQ(res.tokens[i], want.token) << "row " << i;
      EXPECT_NEAR(res.logprobs[i], want.logprob, kLogprobTolerance) << "row " << i;
    }
  }
}

TEST_F(Sampling, TopLogprobsMatchCpuLogSoftmax) {
  for (int vocab : {7, 1000, 152064}) {
    SCOPED_TRACE(testing::Message() << "vocab " << vocab);
    cuda::GpuSampler sampler({.max_rows = 40, .vocab = vocab, .sort_rows = 16});
    std::vector<Row> rows;
    for (int i = 0; i < 40; ++i) {
      const int lp = std::vector<int>{0, 1, 5, 20}[i % 4];
      const float t = i % 3 == 0 ? 0.0f : 1.0f;
      rows.push_back({random_logits(vocab, rng_, 10.0f),
                      params(t, i % 5 == 1 ? 10 : 0, i % 5 == 2 ? 0.9f : 1.0f, 0.0f, rng_(), 0, lp),
                      {}});
    }
    const Result res = run(sampler, rows);
    for (size_t i = 0; i < rows.size(); ++i) {
      SCOPED_TRACE(testing::Message() << "row " << i);
      const auto want = cpu_sample(rows[i]);
      const double lse = log_sum_exp(rows[i].logits);
      const int32_t tok = res.tokens[i];
      ASSERT_TRUE(tok >= 0 && tok < vocab) << "token " << tok;
      EXPECT_NEAR(res.logprobs[i], rows[i].logits[tok] - lse, kLogprobTolerance);
      const int n = std::min(rows[i].params.num_logprobs, vocab);
      ASSERT_EQ(static_cast<int>(want.top.size()), n);
      expect_top_slots(res, i, want.top);
    }
  }
}

TEST_F(Sampling, SeededDrawsIgnoreBatchComposition) {
  const int vocab = 32000;
  const std::vector<SampleRowParams> kinds = {
      params(1.0f, 0, 1.0f, 0.0f, 0, 0),       params(0.7f, 40, 1.0f, 0.0f, 0, 0),
      params(1.0f, 0, 0.9f, 0.0f, 0, 0),       params(1.2f, 0, 1.0f, 0.05f, 0, 0),
      params(0.8f, 50, 0.95f, 0.02f, 0, 0, 3), params(0.0f, 0, 1.0f, 0.0f, 0, 0, 2)};
  std::vector<Row> targets;
  for (int i = 0; i < 12; ++i) {
    Row r{random_logits(vocab, rng_, 6.0f), kinds[i % kinds.size()], {}};
    r.params.seed = rng_();
    r.params.step = rng_() % 1000;
    if (i % 4 == 3) r.banned = {1, 2, 3};
    targets.push_back(std::move(r));
  }
  auto fillers = [&](int n) {
    std::vector<Row> f;
    for (int i = 0; i < n; ++i) {
      Row r{random_logits(vocab, rng_, 6.0f), kinds[rng_() % kinds.size()], {}};
      r.params.seed = rng_();
      f.push_back(std::move(r));
    }
    return f;
  };
  cuda::GpuSampler sampler({.max_rows = 64, .vocab = vocab, .sort_rows = 5});
  // A: targets first, then fillers. B: fillers interleaved, targets reversed. C: one at a time.
  std::vector<Row> a = targets, b;
  for (auto& r : fillers(20)) a.push_back(r);
  auto fb = fillers(30);
  for (size_t i = 0; i < targets.size(); ++i) {
    b.push_back(fb[2 * i]);
    b.push_back(targets[targets.size() - 1 - i]);
    b.push_back(fb[2 * i + 1]);
  }
  const Result ra = run(sampler, a), rb = run(sampler, b), ra2 = run(sampler, a);
  for (size_t i = 0; i < targets.size(); ++i) {
    const Result rc = run(sampler, {targets[i]});
    const int32_t in_b = rb.tokens[3 * (targets.size() - 1 - i) + 1];
    EXPECT_EQ(ra.tokens[i], in_b) << "target " << i;
    EXPECT_EQ(ra.tokens[i], rc.tokens[0]) << "target " << i;
    EXPECT_EQ(ra.tokens[i], ra2.tokens[i]) << "target " << i;
  }
  // Another seed or step changes the draws of non-greedy rows (with overwhelming probability).
  int changed = 0;
  std::vector<Row> moved = targets;
  for (auto& r : moved) ++r.params.step;
  const Result rm = run(sampler, moved);
  for (size_t i = 0; i < targets.size(); ++i) changed += rm.tokens[i] != ra.tokens[i];
  EXPECT_GT(changed, 0);
}

TEST_F(Sampling, FiltersNeverEmitExcludedTokens) {
  struct Case {
    SampleRowParams p;
    bool ban;
  };
  const Case cases[] = {
      {params(1.0f, 5, 1.0f, 0.0f, 0, 0), false},  {params(1.0f, 0, 0.5f, 0.0f, 0, 0), false},
      {params(1.0f, 0, 1.0f, 0.3f, 0, 0), false},  {params(0.9f, 50, 0.9f, 0.0f, 0, 0), false},
      {params(1.5f, 0, 0.95f, 0.0f, 0, 0), false}, {params(1.0f, 3, 1.0f, 0.0f, 0, 0), true},
      {params(2.0f, 0, 0.8f, 0.05f, 0, 0), true},  {params(1.0f, 0, 1.0f, 0.0f, 0, 0), true}};
  for (int vocab : {1000, 152064}) {
    cuda::GpuSampler sampler({.max_rows = 256, .vocab = vocab, .sort_rows = 64});
    for (const Case& c : cases) {
      SCOPED_TRACE(testing::Message()
                   << "vocab " << vocab << " T " << c.p.temperature << " top_k " << c.p.top_k
                   << " top_p " << c.p.top_p << " min_p " << c.p.min_p << " banned " << c.ban);
      Row base{random_logits(vocab, rng_, 5.0f), c.p, {}};
      if (c.ban) {  // ban the three most likely tokens
        std::vector<int32_t> idx(vocab);
        std::iota(idx.begin(), idx.end(), 0);
        std::partial_sort(idx.begin(), idx.begin() + 3, idx.end(),
                          [&](int32_t a, int32_t b) { return base.logits[a] > base.logits[b]; });
        base.banned.assign(idx.begin(), idx.begin() + 3);
      }
      const auto dist = expected_distribution(base);
      std::vector<Row> rows(256, base);
      const uint64_t seed = rng_();
      for (int i = 0; i < 256; ++i) {
        rows[i].params.seed = seed + i % 2;
        rows[i].params.step = i;
      }
      const Result res = run(sampler, rows);
      const double lse = log_sum_exp(base.logits);
      for (int i = 0; i < 256; ++i) {
        const int32_t tok = res.tokens[i];
        ASSERT_TRUE(tok >= 0 && tok < vocab) << "row " << i << " token " << tok;
        EXPECT_GT(dist[tok], 0.0) << "row " << i << " emitted excluded token " << tok;
        EXPECT_NEAR(res.logprobs[i], base.logits[tok] - lse, kLogprobTolerance) << "row " << i;
      }
    }
  }
}

TEST_F(Sampling, EmpiricalDistributionMatchesExpected) {
  const std::vector<float> logits = {2.0f, 1.5f, 1.0f, 0.5f, 0.0f, -0.5f, -1.0f, 3.0f, 0.2f, 1.2f};
  const int vocab = static_cast<int>(logits.size());
  const SampleRowParams kinds[] = {
      params(0.8f, 0, 1.0f, 0.0f, 0, 0), params(1.0f, 4, 1.0f, 0.0f, 0, 0),
      params(1.0f, 0, 0.7f, 0.0f, 0, 0), params(1.0f, 0, 1.0f, 0.15f, 0, 0),
      params(1.3f, 6, 0.9f, 0.0f, 0, 0)};
  constexpr int kRows = 4096, kCalls = 8;
  cuda::GpuSampler sampler({.max_rows = kRows, .vocab = vocab, .sort_rows = 1024});
  for (const SampleRowParams& k : kinds) {
    SCOPED_TRACE(testing::Message() << "T " << k.temperature << " top_k " << k.top_k << " top_p "
                                    << k.top_p << " min_p " << k.min_p);
    expect_empirical_distribution(sampler, Row{logits, k, {}}, kRows, kCalls, rng_);
  }
}

// ---- Penalties and logit_bias ----

// The ids of the n largest logits, best first.
std::vector<int32_t> top_ids_of(const std::vector<float>& x, int n) {
  std::vector<int32_t> idx(x.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::partial_sort(idx.begin(), idx.begin() + n, idx.end(),
                    [&](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
  idx.resize(n);
  return idx;
}

// Adjustment kinds: each penalty alone, combinations, and logit_bias bans/forces. The prompt
// and output hold the best raw tokens (and random ones), so the penalties change the ranking.
constexpr int kAdjustKinds = 10;

void add_adjustments(Row& r, int kind, std::mt19937& rng) {
  const int vocab = static_cast<int>(r.logits.size());
  const std::vector<int32_t> best = top_ids_of(r.logits, 8);
  auto any = [&] {  // a random id outside the best 8 (so bias ids never repeat)
    while (true) {
      const auto id = static_cast<int32_t>(rng() % vocab);
      if (std::find(best.begin(), best.end(), id) == best.end()) return id;
    }
  };
  r.prompt = {best[0], best[2], any(), best[0], any(), best[5]};
  r.output = {best[1], best[0], best[1], any(), best[3], best[1]};
  SampleRowParams& p = r.params;
  switch (kind) {
    case 0:
      p.repetition_penalty = 1.3f;
      break;
    case 1:  // < 1 favours the seen tokens
      p.repetition_penalty = 0.8f;
      break;
    case 2:
      p.frequency_penalty = 0.7f;
      break;
    case 3:
      p.presence_penalty = 1.5f;
      break;
    case 4:
      p.frequency_penalty = -0.5f;
      p.presence_penalty = 0.9f;
      break;
    case 5:  // ban the best raw token, force a random one
      r.logit_bias = {{best[0], -100.0f}, {any(), 100.0f}};
      break;
    case 6:  // small biases on the best tokens, one of them on an output token
      r.logit_bias = {{best[1], -1.5f}, {best[4], 2.0f}, {best[6], 0.75f}, {any(), -3.0f}};
      break;
    case 7:  // everything, with bias ids that the penalties see too
      p.repetition_penalty = 1.2f;
      p.frequency_penalty = 0.4f;
      p.presence_penalty = 0.3f;
      r.logit_bias = {{best[0], 1.0f}, {best[1], 0.5f}, {best[7], -2.0f}};
      break;
    case 8:  // repetition, and a prompt token banned through the bias
      p.repetition_penalty = 1.5f;
      r.logit_bias = {{best[2], -100.0f}};
      break;
    default:  // a forced token that is also penalised
      p.frequency_penalty = 2.0f;
      r.logit_bias = {{best[1], 100.0f}};
      break;
  }
}

TEST_F(Sampling, GreedyWithPenaltiesAndBiasMatchesCpu) {
  for (int vocab : {1000, 152064}) {
    SCOPED_TRACE(testing::Message() << "vocab " << vocab);
    cuda::GpuSampler sampler({.max_rows = 80, .vocab = vocab, .sort_rows = 16});
    std::vector<Row> rows;
    for (int i = 0; i < 80; ++i) {
      // Greedy by temperature 0 or by top_k 1; some rows with logprobs (sorted for them only).
      Row r{random_logits(vocab, rng_, 8.0f),
            params(i % 2 ? 0.0f : 0.7f, i % 2 ? 0 : 1, 1.0f, 0.0f, rng_(), i, i % 3 == 0 ? 5 : 0),
            {}};
      if (i % 8 != 7) add_adjustments(r, i % kAdjustKinds, rng_);  // and a few rows without
      if (i % 5 == 0) r.banned = {top_ids_of(processed_logits(r), 1)[0]};
      rows.push_back(std::move(r));
    }
    const Result res = run(sampler, rows);
    int changed = 0;  // rows whose processed argmax is not the raw one: the test has teeth
    for (size_t i = 0; i < rows.size(); ++i) {
      SCOPED_TRACE(testing::Message() << "row " << i);
      const auto want = cpu_sample(rows[i]);
      changed += want.token != top_ids_of(rows[i].logits, 1)[0];
      EXPECT_EQ(res.tokens[i], want.token);
      EXPECT_NEAR(res.logprobs[i], want.logprob, kLogprobTolerance);  // of the raw logits
      for (int j = 0; j < static_cast<int>(want.top.size()); ++j) {
        EXPECT_EQ(res.top_ids[i * kTopCols + j], want.top[j].first) << "slot " << j;
        EXPECT_NEAR(res.top_logprobs[i * kTopCols + j], want.top[j].second, kLogprobTolerance);
      }
    }
    EXPECT_GT(changed, 20);
  }
}

// Filtered rows sort their processed logits: the token is always one the host could draw (and
// the host's own one where the filter leaves a single candidate), and the top-K logprobs are
// still those of the raw logits.
TEST_F(Sampling, FilteredWithPenaltiesAndBiasMatchCpu) {
  const SampleRowParams kinds[] = {
      params(1.0f, 5, 1.0f, 0.0f, 0, 0, 20),  params(1.0f, 0, 0.7f, 0.0f, 0, 0, 5),
      params(1.0f, 0, 1.0f, 0.2f, 0, 0, 20),  params(0.8f, 40, 0.9f, 0.05f, 0, 0, 3),
      params(1.0f, 0, 1e-6f, 0.0f, 0, 0, 20), params(0.7f, 50, 1e-6f, 0.0f, 0, 0, 1),
      params(1.2f, 3, 1.0f, 0.0f, 0, 0, 0),   params(1.0f, 0, 0.9f, 0.0f, 0, 0, 20)};
  constexpr int kKinds = sizeof(kinds) / sizeof(kinds[0]);
  for (int vocab : {1000, 152064}) {
    SCOPED_TRACE(testing::Message() << "vocab " << vocab);
    cuda::GpuSampler sampler({.max_rows = 120, .vocab = vocab, .sort_rows = 32});
    std::vector<Row> rows;
    for (int i = 0; i < 120; ++i) {
      Row r{random_logits(vocab, rng_, 6.0f), kinds[i % kKinds], {}};
      r.params.seed = rng_();
      r.params.step = rng_() % 1000;
      if (i % 11 != 10) add_adjustments(r, (i / kKinds) % kAdjustKinds, rng_);
      if (i % 6 == 1) r.banned = {top_ids_of(processed_logits(r), 2)[1]};
      rows.push_back(std::move(r));
    }
    const Result res = run(sampler, rows);
    for (size_t i = 0; i < rows.size(); ++i) {
      const Row& r = rows[i];
      SCOPED_TRACE(testing::Message()
                   << "row " << i << " T " << r.params.temperature << " top_k " << r.params.top_k
                   << " top_p " << r.params.top_p << " min_p " << r.params.min_p);
      const auto dist = expected_distribution(r);
      const auto want = cpu_sample(r);
      const double lse = log_sum_exp(r.logits);
      const int32_t tok = res.tokens[i];
      ASSERT_TRUE(tok >= 0 && tok < vocab) << "token " << tok;
      EXPECT_GT(dist[tok], 0.0) << "emitted excluded token " << tok;
      if (r.params.top_p < 1e-3f) EXPECT_EQ(tok, want.token) << "a single candidate";
      EXPECT_NEAR(res.logprobs[i], r.logits[tok] - lse, kLogprobTolerance);
      ASSERT_EQ(static_cast<int>(want.top.size()), r.params.num_logprobs);
      expect_top_slots(res, i, want.top);
    }
    // The same rows reversed and alone: seeded draws depend on nothing else in the batch.
    std::vector<Row> reversed(rows.rbegin(), rows.rend());
    const Result rr = run(sampler, reversed);
    for (size_t i = 0; i < rows.size(); ++i)
      EXPECT_EQ(rr.tokens[rows.size() - 1 - i], res.tokens[i]) << "row " << i;
    for (size_t i = 0; i < rows.size(); i += 13)
      EXPECT_EQ(run(sampler, {rows[i]}).tokens[0], res.tokens[i]) << "row " << i << " alone";
  }
}

// Temperature-only rows (drawn in the first kernel) and filtered ones (sorted): the empirical
// distribution is the host's over the processed logits.
TEST_F(Sampling, EmpiricalDistributionWithPenaltiesMatchesExpected) {
  const std::vector<float> logits = {2.0f, 1.5f, 1.0f, 0.5f, 0.0f, -0.5f, -1.0f, 3.0f, 0.2f, 1.2f};
  const int vocab = static_cast<int>(logits.size());
  struct Kind {
    SampleRowParams p;
    std::vector<std::pair<int32_t, float>> bias;
  };
  auto with = [](SampleRowParams p, float rep, float freq, float pres) {
    p.repetition_penalty = rep;
    p.frequency_penalty = freq;
    p.presence_penalty = pres;
    return p;
  };
  const Kind kinds[] = {
      {with(params(0.8f, 0, 1.0f, 0.0f, 0, 0), 1.5f, 0.0f, 0.0f), {}},
      {with(params(1.0f, 0, 1.0f, 0.0f, 0, 0), 1.0f, 0.5f, 0.25f), {{3, 1.0f}}},
      {with(params(1.0f, 0, 1.0f, 0.0f, 0, 0), 1.0f, 0.0f, 0.0f), {{7, -100.0f}, {6, 2.5f}}},
      {with(params(1.0f, 4, 1.0f, 0.0f, 0, 0), 1.3f, 0.2f, 0.0f), {{2, 0.5f}}},
      {with(params(1.0f, 0, 0.8f, 0.0f, 0, 0), 0.7f, 0.0f, 0.4f), {{5, 1.0f}, {9, -1.0f}}},
      {with(params(1.3f, 6, 0.9f, 0.1f, 0, 0), 1.2f, 0.3f, 0.3f), {{7, 0.5f}, {4, 1.5f}}}};
  constexpr int kRows = 4096, kCalls = 8;
  cuda::GpuSampler sampler({.max_rows = kRows, .vocab = vocab, .sort_rows = 1024});
  for (const Kind& k : kinds) {
    SCOPED_TRACE(testing::Message()
                 << "T " << k.p.temperature << " top_k " << k.p.top_k << " top_p " << k.p.top_p
                 << " min_p " << k.p.min_p << " rep " << k.p.repetition_penalty << " freq "
                 << k.p.frequency_penalty << " pres " << k.p.presence_penalty);
    expect_empirical_distribution(
        sampler, Row{logits, k.p, {}, {7, 0, 0, 4}, {7, 1, 1, 1, 9}, k.bias}, kRows, kCalls, rng_);
  }
}

}  // namespace
}  // namespace nf
