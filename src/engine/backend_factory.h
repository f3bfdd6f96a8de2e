// The one place that builds a Backend from the engine's options: the CPU backend, or on CUDA
// one GPU or several (tensor parallel). The engine and `nanoflow tune` both use it.
#pragma once

#include <nanoflow/engine.h>

#include <memory>

#include "model/model_loader.h"
#include "runtime/backend.h"
#include "runtime/pipeline.h"

namespace nf {

// config: device, sizes, attention, graphs, tensor parallelism and the rest of the engine's
// backend options; pipeline: the nano-batch schedules the forwards start with; cuda_device: the
// GPU of a one-GPU CUDA backend. Throws nf::Error for a device this build lacks, or a model that
// does not fit.
std::unique_ptr<Backend> make_backend(const nanoflow::EngineConfig& config,
                                      const LoadedModel& model, const PipelineConfig& pipeline,
                                      int cuda_device = 0);

}  // namespace nf
