#include "backends/cuda/sampling.h"

#include <algorithm>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/launch.h"
#include "common/status.h"

namespace nf::cuda {

GpuSampler::GpuSampler(const SamplerConfig& config) : config_(config) {
  NF_CHECK(config.max_rows > 0 && config.vocab > 0 && config.sort_rows > 0,
           "GpuSampler: max_rows {}, vocab {}, sort_rows {} must be positive", config.max_rows,
           config.vocab, config.sort_rows);
  config_.sort_rows = std::min(config.sort_rows, config.max_rows);
  const int64_t sort_items = static_cast<int64_t>(config_.sort_rows) * config.vocab;
  NF_CHECK(sort_items <= INT32_MAX, "GpuSampler: {} rows of {} exceed a sort pass",
           config_.sort_rows, config.vocab);
  const size_t rows = static_cast<size_t>(config.max_rows);
  row_info_.reset(rows * launch::kSampleRowInfoBytes);
  seg_begin_.reset(rows * sizeof(int32_t));
  seg_end_.reset(rows * sizeof(int32_t));
  iota_.reset(static_cast<size_t>(sort_items) * sizeof(int32_t));
  sorted_keys_.reset(static_cast<size_t>(sort_items) * sizeof(float));
  sorted_ids_.reset(static_cast<size_t>(sort_items) * sizeof(int32_t));
  sort_in_.reset(static_cast<size_t>(sort_items) * sizeof(float));
  cub_temp_.reset(
      std::max<size_t>(16, launch::sample_cub_temp_bytes(config_.sort_rows, config.vocab)));
  launch::sample_fill_iota(iota_.as<int32_t>(), config_.sort_rows, config.vocab, nullptr);
  NF_CUDA_CHECK(cudaDeviceSynchronize());  // ready before any stream, blocking or not, reads it
}

void GpuSampler::sample(const SampleArgs& args, cudaStream_t stream) {
  constexpr const char* op = "GpuSampler::sample";
  check_tensor(args.logits, op, "logits", DType::kF32, 2);
  const int64_t rows = args.logits.size(0);
  check_dim(args.logits, op, "logits", 1, config_.vocab);
  NF_CHECK(rows <= config_.max_rows, "{}: {} rows, the sampler was built for {}", op, rows,
           config_.max_rows);
  check_tensor(args.params, op, "params", DType::kU8, 2);
  check_dim(args.params, op, "params", 0, rows);
  check_dim(args.params, op, "params", 1, sizeof(SampleRowParams));
  NF_CHECK(reinterpret_cast<uintptr_t>(args.params.data) % alignof(SampleRowParams) == 0,
           "{}: params must be {}-byte aligned", op, alignof(SampleRowParams));
  const bool banned = !args.banned_indptr.empty();
  if (banned) {
    check_tensor(args.banned_indptr, op, "banned_indptr", DType::kI32, 1);
    check_dim(args.banned_indptr, op, "banned_indptr", 0, rows + 1);
    check_tensor(args.banned_ids, op, "banned_ids", DType::kI32, 1);
  }
  // An adjustment CSR: indptr [rows+1] i32 and two [n] arrays (i32 ids, then `values`).
  auto check_csr = [&](const TensorView& indptr, const TensorView& ids, const TensorView& values,
                       const char* name, DType value_type) {
    if (indptr.empty()) return false;
    check_tensor(indptr, op, name, DType::kI32, 1);
    check_dim(indptr, op, name, 0, rows + 1);
    check_tensor(ids, op, name, DType::kI32, 1);
    check_tensor(values, op, name, value_type, 1);
    check_dim(values, op, name, 0, ids.size(0));
    return true;
  };
  const bool penalties = check_csr(args.penalty_indptr, args.penalty_ids, args.penalty_counts,
                                   "penalty CSR", DType::kI32);
  const bool bias =
      check_csr(args.bias_indptr, args.bias_ids, args.bias_values, "bias CSR", DType::kF32);
  check_tensor(args.tokens, op, "tokens", DType::kI32, 1);
  check_dim(args.tokens, op, "tokens", 0, rows);
  check_tensor(args.logprobs, op, "logprobs", DType::kF32, 1);
  check_dim(args.logprobs, op, "logprobs", 0, rows);
  int top_cols = 0;
  if (!args.top_ids.empty() || !args.top_logprobs.empty()) {
    check_tensor(args.top_ids, op, "top_ids", DType::kI32, 2);
    check_tensor(args.top_logprobs, op, "top_logprobs", DType::kF32, 2);
    check_dim(args.top_ids, op, "top_ids", 0, rows);
    top_cols = static_cast<int>(args.top_ids.size(1));
    check_dim(args.top_logprobs, op, "top_logprobs", 0, rows);
    check_dim(args.top_logprobs, op, "top_logprobs", 1, top_cols);
  }
  bool sort = true;
  if (!args.host_params.empty()) {
    NF_CHECK(static_cast<int64_t>(args.host_params.size()) == rows,
             "{}: {} host params for {} rows", op, args.host_params.size(), rows);
    sort = false;
    for (const SampleRowParams& p : args.host_params) {
      NF_CHECK(p.num_logprobs >= 0 && p.num_logprobs <= top_cols,
               "{}: a row asks for {} logprobs, top_ids has {} columns", op, p.num_logprobs,
               top_cols);
      const bool greedy = p.temperature <= 0.0f || p.top_k == 1;
      const bool filtered =
          !greedy && ((p.top_k > 0 && p.top_k < config_.vocab) || p.top_p < 1.0f || p.min_p > 0.0f);
      sort = sort || filtered || p.num_logprobs > 0;
    }
  }
  if (rows == 0) return;
  NF_CHECK(args.sample_vocab >= 0 && args.sample_vocab <= config_.vocab,
           "{}: sample_vocab {} outside [0, {}]", op, args.sample_vocab, config_.vocab);
  if (args.sample_vocab > 0 && args.sample_vocab < config_.vocab)
    launch::mask_logit_columns(args.logits.ptr<float>(), rows, config_.vocab, args.sample_vocab,
                               stream);

  launch::SampleLaunch s;
  s.logits = args.logits.ptr<float>();
  s.rows = rows;
  s.vocab = config_.vocab;
  s.params = args.params.data;
  s.banned_indptr = banned ? args.banned_indptr.ptr<int32_t>() : nullptr;
  s.banned_ids = banned ? args.banned_ids.ptr<int32_t>() : nullptr;
  s.tokens = args.tokens.ptr<int32_t>();
  s.logprobs = args.logprobs.ptr<float>();
  s.top_ids = top_cols > 0 ? args.top_ids.ptr<int32_t>() : nullptr;
  s.top_logprobs = top_cols > 0 ? args.top_logprobs.ptr<float>() : nullptr;
  s.top_cols = top_cols;
  s.row_info = row_info_.data();
  s.seg_begin = seg_begin_.as<int32_t>();
  s.seg_end = seg_end_.as<int32_t>();
  s.iota = iota_.as<int32_t>();
  s.sorted_keys = sorted_keys_.as<float>();
  s.sorted_ids = sorted_ids_.as<int32_t>();
  s.sort_rows = config_.sort_rows;
  s.cub_temp = cub_temp_.data();
  s.cub_temp_bytes = cub_temp_.bytes();
  s.sort = sort;
  launch::SampleAdjustLaunch adj;
  if (penalties) {
    adj.penalty_indptr = args.penalty_indptr.ptr<int32_t>();
    adj.penalty_ids = args.penalty_ids.ptr<int32_t>();
    adj.penalty_counts = args.penalty_counts.ptr<int32_t>();
  }
  if (bias) {
    adj.bias_indptr = args.bias_indptr.ptr<int32_t>();
    adj.bias_ids = args.bias_ids.ptr<int32_t>();
    adj.bias_values = args.bias_values.ptr<float>();
  }
  adj.sort_in = sort_in_.as<float>();
  launch::sample_adjusted(s, adj, stream);
}

}  // namespace nf::cuda
