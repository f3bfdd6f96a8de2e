// Packing of the sampling adjustments (repetition/frequency/presence penalties and logit_bias)
// of rows sampled on the device into DeviceSampleBatch's CSRs, and the host mirror of what the
// device does with them.
//
// The host sampler (src/runtime/sampler.cpp) processes a row as: logit_bias added (in its
// order), then the repetition penalty once per id seen in the prompt or the output, then
// frequency * count + presence subtracted once per id of the output, then banned ids to -inf.
// A row's adjustments are sparse: every id outside them keeps its raw logit. So per row the
// device gets the ids the penalties see with their output counts, and the bias per id; it
// recomputes the processed value of those ids from the raw logits with the same float
// operations, in the same order.
#pragma once

#include <nanoflow/sampling_params.h>

#include <cstdint>
#include <span>
#include <vector>

#include "runtime/backend.h"

namespace nf {

// The distinct token ids of a sequence with their occurrence counts, ids ascending. Ids outside
// [0, vocab) are dropped (the host sampler ignores them too).
struct TokenCounts {
  std::vector<int32_t> ids;
  std::vector<int32_t> counts;

  void add(int32_t id, int64_t vocab);  // one more occurrence of id
  void clear() {
    ids.clear();
    counts.clear();
  }
  static TokenCounts of(std::span<const int32_t> tokens, int64_t vocab);
};

// Any of the three penalties is on.
bool uses_penalties(const nanoflow::SamplingParams& p);

// Starts the adjustment CSRs of a batch: empty, with indptr {0}.
void begin_adjustments(DeviceSampleBatch& b);

// Appends the next row's adjustments (its penalty entries and logit bias) and sets the row's
// penalty parameters. prompt: the prompt's counts (read only when repetition_penalty != 1);
// output: the output's counts (read only when a penalty is on). Returns false, and appends an
// empty row with neutral penalties, when the device cannot reproduce the host bit for bit:
// logit_bias names an id twice (the host adds the two biases one after the other). The caller
// then samples that row on the host.
bool append_adjustments(const nanoflow::SamplingParams& p, const TokenCounts& prompt,
                        const TokenCounts& output, int64_t vocab, DeviceSampleBatch& b,
                        DeviceSampleRow& row);

// Ends the batch: an indptr whose CSR has no entries is cleared (no row has any).
void end_adjustments(DeviceSampleBatch& b);

// The processed value of one adjusted id, exactly as the host sampler computes it (and the
// device, with the same IEEE operations): raw + bias (when has_bias), then the repetition
// penalty (when seen and repetition != 1), then frequency * count + presence subtracted (when
// count > 0 and either is non-zero).
float adjusted_logit(float raw, bool has_bias, float bias, bool seen, int32_t count,
                     float repetition, float frequency, float presence);

// The device's processing on the host: row `row`'s adjustments of b applied to its raw logits.
void apply_adjustments(std::span<float> logits, const DeviceSampleBatch& b, size_t row);

}  // namespace nf
