#include "engine/backend_factory.h"

#include "backends/cpu/cpu_backend.h"
#include "common/status.h"
#ifdef NANOFLOW_HAVE_CUDA
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_tp_backend.h"
#endif

namespace nf {

std::unique_ptr<Backend> make_backend(const nanoflow::EngineConfig& config,
                                      const LoadedModel& model, const PipelineConfig& pipeline,
                                      int cuda_device) {
  if (config.device != "cpu" && config.device != "cuda")
    fail("--device {}: unknown device (cpu or cuda)", config.device);
#ifndef NANOFLOW_HAVE_CUDA
  (void)cuda_device;
  if (config.device != "cpu")
    fail("--device {}: this build runs models on the CPU only (configure with "
         "-DNANOFLOW_CUDA=ON on a machine with nvcc for the CUDA backend)",
         config.device);
#else
  if (config.device == "cuda") {
    CudaBackendConfig cuda;
    cuda.block_size = config.block_size;
    cuda.num_kv_blocks = config.num_kv_blocks;
    cuda.max_batch_tokens = config.max_batch_tokens;
    cuda.gpu_memory_utilization = config.gpu_memory_utilization;
    cuda.attention = config.attention;
    cuda.cuda_graphs = config.cuda_graphs;
    cuda.pipeline = pipeline;
    cuda.profile_first_step = config.profile_first_step;
    cuda.tc_decode_streams = config.tc_decode_kernel != "per-request";
    cuda.pipeline_trace = config.pipeline_trace;
    cuda.device = cuda_device;
    const std::vector<float> inv_freq = rope_inv_freq(model.config.rope, model.config.head_dim);
    if (config.tensor_parallel_size > 1) {
      CudaTpConfig tp;
      tp.tensor_parallel_size = config.tensor_parallel_size;
      tp.comm_ctas = config.tp_comm_ctas;
      tp.allreduce = config.tp_allreduce;
      return std::make_unique<CudaTpBackend>(model.config, *model.weights, inv_freq, cuda, tp);
    }
    return std::make_unique<CudaBackend>(model.config, *model.weights, inv_freq, cuda);
  }
#endif
  CpuBackendConfig cpu;
  cpu.block_size = config.block_size;
  cpu.kv_cache_gb = config.kv_cache_gb;
  cpu.num_kv_blocks = config.num_kv_blocks;
  cpu.threads = config.threads;
  cpu.tensor_parallel_size = config.tensor_parallel_size;
  cpu.pipeline = pipeline;
  return std::make_unique<CpuBackend>(model.config, *model.weights, cpu);
}

}  // namespace nf
