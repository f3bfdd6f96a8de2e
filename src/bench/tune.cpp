#include "bench/tune.h"

#include <memory>
#include <vector>

#include "common/status.h"
#include "engine/backend_factory.h"
#include "model/model_loader.h"

namespace nf {

nlohmann::json run_tune(const TuneConfig& tc) {
#ifndef NANOFLOW_HAVE_CUDA
  (void)tc;
  fail(
      "tune: this build has no CUDA backend (nano-batch schedules are chosen on the GPU; the CPU "
      "backend runs a schedule's nano-operations one after the other, so serial is its best)");
#else
  const LoadedModel model = load_model(tc.model).take();
  nanoflow::EngineConfig ec;
  ec.device = "cuda";
  ec.max_batch_tokens = tc.options.max_batch_tokens;
  ec.gpu_memory_utilization = tc.gpu_memory_utilization;
  ec.attention = tc.attention;
  ec.tensor_parallel_size = tc.tensor_parallel_size;
  ec.tp_comm_ctas = tc.tp_comm_ctas;
  ec.tp_allreduce = tc.tp_allreduce;
  const std::unique_ptr<Backend> backend = make_backend(ec, model, {}, tc.device);
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
