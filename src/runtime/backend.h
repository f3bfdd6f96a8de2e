// The device-side half of execution: model weights, the KV cache, and the forward pass over a
// ScheduledBatch. One implementation per device family (backends/cpu, backends/cuda).
#pragma once

#include <cstdint>
#include <span>

#include "model/model_config.h"
#include "runtime/batch.h"

namespace nf {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual const ModelConfig& config() const = 0;
  virtual int block_size() const = 0;
  virtual int64_t num_kv_blocks() const = 0;
  // Runs the model over the batch: writes K/V of every token into the paged cache at its slot,
  // and the logits of each sample row to logits ([S, vocab_size] fp32, row-major).
  virtual void forward(const ScheduledBatch& batch, std::span<float> logits) = 0;
};

}  // namespace nf
