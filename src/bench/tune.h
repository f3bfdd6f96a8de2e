// `nanoflow tune`: chooses the nano-batch schedules for a model on this GPU by timing them
// (engine/pipeline_tune.h) on a CUDA backend of its own, and returns the report whose
// "schedules" key makes a --pipeline file.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "engine/pipeline_tune.h"

namespace nf {

struct TuneConfig {
  std::string model;  // as --model: a GGUF, a Hugging Face directory, or dummy:<preset>
  double gpu_memory_utilization = 0.90;
  int device = 0;
  std::string attention = "flashinfer";  // the kernel the schedules are timed with (as --attention)
  // Tensor parallel (CUDA devices 0..N-1, NCCL): the schedules are timed with their all-reduces,
  // which run beside the other nano-batches' GEMMs (as --tensor-parallel-size, --tp-comm-ctas).
  int tensor_parallel_size = 1;
  int tp_comm_ctas = 0;
  std::string tp_allreduce = "nccl";
  TuneOptions options;  // batch size, budget, repeats, min gain
};

// Returns {"schedules": [...], "measurements": [...], ...}: the schedule file (its "schedules"
// key) and every timing. Throws nf::Error without the CUDA backend.
nlohmann::json run_tune(const TuneConfig& config);

}  // namespace nf
