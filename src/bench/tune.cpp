#include "bench/tune.h"

#include <memory>
#include <vector>

#include "common/status.h"
#include "model/model_config.h"
#include "model/model_loader.h"
#ifdef NANOFLOW_HAVE_CUDA
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_tp_backend.h"
#endif

namespace nf {

nlohmann::json run_tune(const TuneConfig& tc) {
#ifndef NANOFLOW_HAVE_CUDA
  (void)tc;
  fail(
      "tune: this build has no CUDA backend (nano-batch schedules are chosen on the GPU; the CPU "
      "backend runs a schedule's nano-operations one after the other, so serial is its best)");
#else
  const LoadedModel model = load_model(tc.model).take();
  CudaBackendConfig bc;
  bc.max_batch_tokens = tc.options.max_batch_tokens;
  bc.gpu_memory_utilization = tc.gpu_memory_utilization;
  bc.device = tc.device;
  bc.attention = tc.attention;
  const std::vector<float> inv_freq = rope_inv_freq(model.config.rope, model.config.head_dim);
  std::unique_ptr<Backend> backend;
  if (tc.tensor_parallel_size > 1) {
    CudaTpConfig tp;
    tp.tensor_parallel_size = tc.tensor_parallel_size;
    tp.comm_ctas = tc.tp_comm_ctas;
    tp.allreduce = tc.tp_allreduce;
    backend = std::make_unique<CudaTpBackend>(model.config, *model.weights, inv_freq, bc, tp);
  } else {
    backend = std::make_unique<CudaBackend>(model.config, *model.weights, inv_freq, bc);
  }
  TuneResult r = tune_pipeline(*backend, tc.options);
  r.report["model"] = tc.model;
  r.report["attention"] = tc.attention;
  r.report["tensor_parallel_size"] = tc.tensor_parallel_size;
  r.report["tp_comm_ctas"] = tc.tp_comm_ctas;
  r.report["tp_allreduce"] = tc.tp_allreduce;
  return r.report;
#endif
}

}  // namespace nf
