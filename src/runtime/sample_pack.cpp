#include "runtime/sample_pack.h"

#include <algorithm>

#include "common/status.h"

namespace nf {

void TokenCounts::add(int32_t id, int64_t vocab) {
  if (id < 0 || id >= vocab) return;
  const auto it = std::lower_bound(ids.begin(), ids.end(), id);
  const size_t k = static_cast<size_t>(it - ids.begin());
  if (it != ids.end() && *it == id) {
    ++counts[k];
    return;
  }
  ids.insert(it, id);
  counts.insert(counts.begin() + static_cast<std::ptrdiff_t>(k), 1);
}

TokenCounts TokenCounts::of(std::span<const int32_t> tokens, int64_t vocab) {
  std::vector<int32_t> sorted;
  sorted.reserve(tokens.size());
  for (int32_t t : tokens)
    if (t >= 0 && t < vocab) sorted.push_back(t);
  std::sort(sorted.begin(), sorted.end());
  TokenCounts c;
  for (size_t i = 0; i < sorted.size();) {
    size_t j = i;
    while (j < sorted.size() && sorted[j] == sorted[i]) ++j;
    c.ids.push_back(sorted[i]);
    c.counts.push_back(static_cast<int32_t>(j - i));
    i = j;
  }
  return c;
}

bool uses_penalties(const nanoflow::SamplingParams& p) {
  return p.repetition_penalty != 1.0f || p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
}

void begin_adjustments(DeviceSampleBatch& b) {
  b.penalty_indptr.assign(1, 0);
  b.penalty_ids.clear();
  b.penalty_counts.clear();
  b.bias_indptr.assign(1, 0);
  b.bias_ids.clear();
  b.bias_values.clear();
}

bool append_adjustments(const nanoflow::SamplingParams& p, const TokenCounts& prompt,
                        const TokenCounts& output, int64_t vocab, DeviceSampleBatch& b,
                        DeviceSampleRow& row) {
  NF_CHECK(!b.penalty_indptr.empty() && !b.bias_indptr.empty(),
           "append_adjustments before begin_adjustments");
  row.repetition_penalty = 1.0f;
  row.frequency_penalty = 0.0f;
  row.presence_penalty = 0.0f;
  auto close_row = [&] {
    b.penalty_indptr.push_back(static_cast<int32_t>(b.penalty_ids.size()));
    b.bias_indptr.push_back(static_cast<int32_t>(b.bias_ids.size()));
  };
  // logit_bias: in-range entries sorted by id; an id named twice cannot be packed.
  const size_t bias0 = b.bias_ids.size();
  for (const auto& [id, bias] : p.logit_bias) {
    if (id < 0 || id >= vocab) continue;
    b.bias_ids.push_back(id);
    b.bias_values.push_back(bias);
  }
  if (b.bias_ids.size() - bias0 > 1) {
    std::vector<std::pair<int32_t, float>> e;
    e.reserve(b.bias_ids.size() - bias0);
    for (size_t j = bias0; j < b.bias_ids.size(); ++j)
      e.emplace_back(b.bias_ids[j], b.bias_values[j]);
    std::sort(e.begin(), e.end(), [](const auto& x, const auto& y) { return x.first < y.first; });
    for (size_t j = 1; j < e.size(); ++j) {
      if (e[j].first == e[j - 1].first) {
        b.bias_ids.resize(bias0);
        b.bias_values.resize(bias0);
        close_row();
        return false;
      }
    }
    for (size_t j = 0; j < e.size(); ++j) {
      b.bias_ids[bias0 + j] = e[j].first;
      b.bias_values[bias0 + j] = e[j].second;
    }
  }
  // Penalties: the ids the repetition penalty sees (prompt and output, merged), else the
  // output's ids; each with its count in the output.
  if (uses_penalties(p)) {
    row.repetition_penalty = p.repetition_penalty;
    row.frequency_penalty = p.frequency_penalty;
    row.presence_penalty = p.presence_penalty;
    const bool rep = p.repetition_penalty != 1.0f;
    size_t i = 0, j = 0;
    const size_t np = rep ? prompt.ids.size() : 0, no = output.ids.size();
    while (i < np || j < no) {
      int32_t id, count;
      if (j == no || (i < np && prompt.ids[i] < output.ids[j])) {
        id = prompt.ids[i++];
        count = 0;
      } else {
        id = output.ids[j];
        count = output.counts[j++];
        if (i < np && prompt.ids[i] == id) ++i;
      }
      if (id < 0 || id >= vocab) continue;
      b.penalty_ids.push_back(id);
      b.penalty_counts.push_back(count);
    }
  }
  close_row();
  return true;
}

void end_adjustments(DeviceSampleBatch& b) {
  if (b.penalty_ids.empty()) b.penalty_indptr.clear();
  if (b.bias_ids.empty()) b.bias_indptr.clear();
}

float adjusted_logit(float raw, bool has_bias, float bias, bool seen, int32_t count,
                     float repetition, float frequency, float presence) {
  float w = raw;
  if (has_bias) w += bias;
  if (seen && repetition != 1.0f) w = w > 0 ? w / repetition : w * repetition;
  if (count > 0 && (frequency != 0.0f || presence != 0.0f))
    w -= frequency * static_cast<float>(count) + presence;
  return w;
}

void apply_adjustments(std::span<float> logits, const DeviceSampleBatch& b, size_t row) {
  const DeviceSampleRow& r = b.rows.at(row);
  const int64_t V = static_cast<int64_t>(logits.size());
  const std::span<const int32_t> pen_ids =
      b.penalty_indptr.empty()
          ? std::span<const int32_t>()
          : std::span<const int32_t>(b.penalty_ids.data() + b.penalty_indptr[row],
                                     b.penalty_ids.data() + b.penalty_indptr[row + 1]);
  const int32_t* pen_counts =
      b.penalty_indptr.empty() ? nullptr : b.penalty_counts.data() + b.penalty_indptr[row];
  const std::span<const int32_t> bias_ids =
      b.bias_indptr.empty() ? std::span<const int32_t>()
                            : std::span<const int32_t>(b.bias_ids.data() + b.bias_indptr[row],
                                                       b.bias_ids.data() + b.bias_indptr[row + 1]);
  const float* bias_values =
      b.bias_indptr.empty() ? nullptr : b.bias_values.data() + b.bias_indptr[row];
  // As the device does it: every id once, its processed value from its raw logit.
  std::vector<std::pair<int32_t, float>> out;
  for (size_t j = 0; j < pen_ids.size(); ++j) {
    const int32_t id = pen_ids[j];
    if (id < 0 || id >= V) continue;
    const auto it = std::lower_bound(bias_ids.begin(), bias_ids.end(), id);
    const bool has_bias = it != bias_ids.end() && *it == id;
    out.emplace_back(id, adjusted_logit(logits[id], has_bias,
                                        has_bias ? bias_values[it - bias_ids.begin()] : 0.0f, true,
                                        pen_counts[j], r.repetition_penalty, r.frequency_penalty,
                                        r.presence_penalty));
  }
  for (size_t j = 0; j < bias_ids.size(); ++j) {
    const int32_t id = bias_ids[j];
    if (id < 0 || id >= V || std::binary_search(pen_ids.begin(), pen_ids.end(), id)) continue;
    out.emplace_back(id,
                     adjusted_logit(logits[id], true, bias_values[j], false, 0, 1.0f, 0.0f, 0.0f));
  }
  for (const auto& [id, w] : out) logits[id] = w;
}

}  // namespace nf
