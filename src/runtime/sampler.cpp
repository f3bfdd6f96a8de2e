#include "runtime/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/status.h"

namespace nf {

double log_sum_exp(std::span<const float> logits) {
  float mx = -INFINITY;
  for (float x : logits) mx = std::max(mx, x);
  double s = 0;
  for (float x : logits) s += std::exp(static_cast<double>(x) - mx);
  return mx + std::log(s);
}

std::mt19937_64 step_rng(uint64_t seed, uint64_t step) {
  // splitmix64 of the pair, so nearby seeds and steps give unrelated streams.
  uint64_t z = seed + 0x9e3779b97f4a7c15ull * (step + 1);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return std::mt19937_64(z ^ (z >> 31));
}

// Design: the raw logits give the reported log-probabilities. Sampling works on a processed
// copy: logit bias; repetition penalty (vLLM/HF: a seen token's positive logit is divided by
// the penalty, a negative one multiplied); frequency and presence penalties on output tokens;
// banned ids to -inf; divide by temperature, keep the top-k, then the smallest prefix of
// the sorted distribution with mass >= top_p, then tokens with prob >= min_p * max prob, and
// draw from what remains with the request's generator. Greedy takes the argmax (lowest id on
// ties) of the processed logits.
SampleResult Sampler::sample(std::span<const float> logits, const SampleContext& ctx) {
  const nanoflow::SamplingParams& p = *ctx.params;
  const int32_t V = static_cast<int32_t>(logits.size());
  NF_CHECK(V > 0, "sample: empty logits");
  SampleResult r;
  const double lse = log_sum_exp(logits);

  work_.assign(logits.begin(), logits.end());
  for (const auto& [id, bias] : p.logit_bias)
    if (id >= 0 && id < V) work_[id] += bias;
  if (p.repetition_penalty != 1.0f) {
    auto penalize = [&](int32_t id) {
      if (id < 0 || id >= V || counts_[id] & 0x80000000u) return;
      counts_[id] |= 0x80000000u;  // once per id
      work_[id] = work_[id] > 0 ? work_[id] / p.repetition_penalty : work_[id] * p.repetition_penalty;
    };
    counts_.assign(V, 0);
    for (int32_t id : ctx.prompt) penalize(id);
    for (int32_t id : ctx.output) penalize(id);
  }
  if (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f) {
    counts_.assign(V, 0);
    for (int32_t id : ctx.output)
      if (id >= 0 && id < V) ++counts_[id];
    for (int32_t id : ctx.output) {
      if (id < 0 || id >= V || counts_[id] == 0) continue;
      work_[id] -= p.frequency_penalty * static_cast<float>(counts_[id]) + p.presence_penalty;
      counts_[id] = 0;  // once per id
    }
  }
  for (int32_t b : ctx.banned)
    if (b >= 0 && b < V) work_[b] = -INFINITY;

  if (p.greedy()) {
    int32_t best = 0;
    for (int32_t i = 1; i < V; ++i)
      if (work_[i] > work_[best]) best = i;
    r.token = best;
  } else {
    const float inv_t = 1.0f / p.temperature;
    idx_.resize(V);
    std::iota(idx_.begin(), idx_.end(), 0);
    auto by_logit = [&](int32_t a, int32_t b) {
      return work_[a] > work_[b] || (work_[a] == work_[b] && a < b);
    };
    int32_t n = V;
    if (p.top_k > 0 && p.top_k < V) {
      std::nth_element(idx_.begin(), idx_.begin() + p.top_k, idx_.end(), by_logit);
      n = p.top_k;
    }
    std::sort(idx_.begin(), idx_.begin() + n, by_logit);
    while (n > 1 && std::isinf(work_[idx_[n - 1]])) --n;  // banned ids never win
    // Softmax over the candidates at temperature T (their probabilities in work_ order).
    const float mx = work_[idx_[0]] * inv_t;
    std::vector<double>& probs = probs_;
    probs.assign(n, 0.0);
    double total = 0;
    for (int32_t i = 0; i < n; ++i) total += probs[i] = std::exp(work_[idx_[i]] * inv_t - mx);
    for (auto& x : probs) x /= total;
    if (p.top_p < 1.0f) {
      double cum = 0;
      int32_t keep = 0;
      while (keep < n) {
        cum += probs[keep++];
        if (cum >= p.top_p) break;
      }
      n = std::max(1, keep);
    }
    if (p.min_p > 0.0f) {
      const double floor = p.min_p * probs[0];
      int32_t keep = 1;
      while (keep < n && probs[keep] >= floor) ++keep;
      n = keep;
    }
    double mass = 0;
    for (int32_t i = 0; i < n; ++i) mass += probs[i];
    std::mt19937_64 rng = step_rng(ctx.seed, ctx.output.size());
    const double u = std::generate_canonical<double, 53>(rng) * mass;
    double cum = 0;
    r.token = idx_[n - 1];
    for (int32_t i = 0; i < n; ++i) {
      cum += probs[i];
      if (u < cum) {
        r.token = idx_[i];
        break;
      }
    }
  }
  r.logprob = static_cast<float>(logits[r.token] - lse);
  if (p.logprobs > 0) {
    const int32_t k = std::min(p.logprobs, V);
    idx_.resize(V);
    std::iota(idx_.begin(), idx_.end(), 0);
    std::partial_sort(idx_.begin(), idx_.begin() + k, idx_.end(), [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    });
    r.top.reserve(k);
    for (int32_t i = 0; i < k; ++i)
      r.top.emplace_back(idx_[i], static_cast<float>(logits[idx_[i]] - lse));
  }
  return r;
}

}  // namespace nf
