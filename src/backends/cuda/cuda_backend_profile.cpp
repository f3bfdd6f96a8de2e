// CudaBackend: the op profile (CUDA events per op) and the device's busy and idle time.
#include "backends/cuda/cuda_backend.h"

#include <fmt/core.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>
#include <type_traits>

#include "backends/cuda/activation.h"
#include "backends/cuda/attention.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/embedding.h"
#include "backends/cuda/flashinfer/fi_attention.h"
#include "backends/cuda/kv_copy.h"
#include "backends/cuda/nccl_communicator.h"
#include "backends/cuda/norm.h"
#include "backends/cuda/peer_allreduce.h"
#include "backends/cuda/rope.h"
#include "common/half.h"
#include "common/status.h"

namespace nf {

using cuda::DType;
using cuda::TensorView;

void CudaBackend::mark(const char* op, double flops, double bytes) {
  if (!profiling_) return;
  NF_CHECK(marks_.size() < events_.size(), "op profile: more than {} ops in a step",
           events_.size());
  NF_CUDA_CHECK(cudaEventRecord(events_[marks_.size()], stream_));
  marks_.push_back({op, flops, bytes});
}

void CudaBackend::finish_step() {
  NF_CUDA_CHECK(cudaEventRecord(step_end_, stream_));
  NF_CUDA_CHECK(cudaStreamSynchronize(stream_));
  ++step_;
  {
    float busy = 0, idle = 0;
    NF_CUDA_CHECK(cudaEventElapsedTime(&busy, step_start_, step_end_));
    if (have_prev_end_) NF_CUDA_CHECK(cudaEventElapsedTime(&idle, prev_end_, step_start_));
    std::swap(step_end_, prev_end_);
    have_prev_end_ = true;
    std::lock_guard<std::mutex> lock(profile_mu_);
    device_time_.busy_ms += busy;
    device_time_.idle_ms += idle;
    ++device_time_.steps;
  }
  if (profiling_) {
    profiling_ = false;
    std::lock_guard<std::mutex> lock(profile_mu_);
    for (size_t i = 1; i < marks_.size(); ++i) {
      float ms = 0;
      NF_CUDA_CHECK(cudaEventElapsedTime(&ms, events_[i - 1], events_[i]));
      OpStat& st = op_stats_[marks_[i].op];
      st.ms += ms;
      st.flops += marks_[i].flops;
      st.bytes += marks_[i].bytes;
      ++st.calls;
    }
    float total = 0;
    NF_CUDA_CHECK(cudaEventElapsedTime(&total, events_.front(), events_[marks_.size() - 1]));
    profiled_ms_ += total;
    ++profiled_steps_;
  }
  NF_CHECK(*error_host_ == 0, "forward: a token id is outside the vocabulary of {}",
           config_.vocab_size);
}

void CudaBackend::set_pipeline(const PipelineConfig& pipeline) {
  for (const PipelineSchedule& s : pipeline.schedules)
    if (!s.is_serial() && !fi_attn_)
      fail(
          "--pipeline: schedule \"{}\" splits the batch into nano-batches, which needs "
          "FlashInfer attention (--attention native, or a build without FlashInfer)",
          s.name);
  opts_.pipeline = pipeline;
}

Backend::DeviceTime CudaBackend::device_time() const {
  std::lock_guard<std::mutex> lock(profile_mu_);
  return device_time_;
}

std::string CudaBackend::op_profile_json() const {
  std::lock_guard<std::mutex> lock(profile_mu_);
  if (profiled_steps_ == 0) return {};
  // Hand-written JSON: this library does not link nlohmann-json.
  std::string j = fmt::format(
      "{{\"steps\": {}, \"step_ms\": {:.4f}, \"tokens_per_step\": {:.1f}, "
      "\"decode_rows_per_step\": {:.1f}, \"attention_kernel\": \"{}\", \"ops\": {{",
      profiled_steps_, profiled_ms_ / profiled_steps_,
      static_cast<double>(profiled_tokens_) / profiled_steps_,
      static_cast<double>(profiled_decode_rows_) / profiled_steps_, attention_kernel());
  bool first = true;
  for (const auto& [op, st] : op_stats_) {
    j += fmt::format(
        "{}\"{}\": {{\"ms_per_step\": {:.4f}, \"flops_per_step\": {:.6g}, "
        "\"bytes_per_step\": {:.6g}, \"calls_per_step\": {:.1f}}}",
        first ? "" : ", ", op, st.ms / profiled_steps_, st.flops / profiled_steps_,
        st.bytes / profiled_steps_, static_cast<double>(st.calls) / profiled_steps_);
    first = false;
  }
  return j + "}}";
}

}  // namespace nf
