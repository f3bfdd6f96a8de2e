// The CUDA backend's nano-batch pipeline (issue 6): the layers of one forward as the
// nano-operations of a PipelinePlan, each on its stream, ordered by events along the plan's row
// dependencies. Serial schedules never come here (run_layers, with CUDA graphs).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "backends/cuda/activation.h"
#include "backends/cuda/attention.h"
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/cuda_check.h"
#include "backends/cuda/embedding.h"
#include "backends/cuda/flashinfer/fi_attention.h"
#include "backends/cuda/launch.h"
#include "backends/cuda/norm.h"
#include "backends/cuda/rope.h"
#include "common/log.h"
#include "common/status.h"

namespace nf {

using cuda::DType;
using cuda::TensorView;

namespace {

// Rows [begin, begin + n) of a row-major [rows, cols] bf16 view.
TensorView row_slice(const TensorView& v, int64_t begin, int64_t n) {
  const int64_t cols = v.size(1);
  return TensorView(static_cast<std::byte*>(v.data) + begin * cols * 2, v.dtype, {n, cols});
}

// Elements [begin, begin + n) of a 1-D view.
TensorView span_slice(const TensorView& v, int64_t begin, int64_t n) {
  return TensorView(
      static_cast<std::byte*>(v.data) + begin * static_cast<int64_t>(dtype_size(v.dtype)), v.dtype,
      {n});
}

}  // namespace

void CudaBackend::run_pipelined(const ScheduledBatch& b, const PipelinePlan& plan) {
#ifndef NANOFLOW_HAVE_FLASHINFER
  (void)b;
  (void)plan;
  fail("--pipeline: nano-batch schedules need FlashInfer attention (this build has none)");
#else
  NF_CHECK(fi_attn_ != nullptr,
           "--pipeline: nano-batch schedules need FlashInfer attention (--attention flashinfer)");
  const ModelConfig& c = local_;
  const int64_t T = b.num_tokens(), H = c.hidden_size, V = c.vocab_size;
  const float eps = static_cast<float>(c.rms_norm_eps);

  // Streams 1.. and their GEMM handles, created on first need; stream 0 is stream_. A stream
  // with an SM partition (plan.stream_sms) is its green context's; its GEMMs are tuned for the
  // partition's SM count unless the operation names a target.
  int streams = 1;
  for (const PipelinePlan::Op& op : plan.ops) streams = std::max(streams, op.op.stream + 1);
  if (nano_streams_.empty()) {
    nano_streams_.emplace_back();  // [0]: stream_ and gemm_, borrowed
    NF_CUDA_CHECK(cudaEventCreateWithFlags(&nano_fork_, cudaEventDisableTiming));
  }
  nano_streams_[0].stream = stream_;
  // A stream's join event and GEMM handle (with its own plans and workspace).
  auto lane_on = [](cudaStream_t stream) {
    NanoStream ns;
    ns.stream = stream;
    NF_CUDA_CHECK(cudaEventCreateWithFlags(&ns.done, cudaEventDisableTiming));
    ns.gemm = std::make_unique<cuda::Gemm>();
    return ns;
  };
  while (static_cast<int>(nano_streams_.size()) < streams) {
    cudaStream_t stream = nullptr;
    NF_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    nano_streams_.push_back(lane_on(stream));
  }
  std::vector<NanoStream*> lanes(static_cast<size_t>(streams));
  std::vector<int> lane_sms(static_cast<size_t>(streams), 0);
  for (int s = 0; s < streams; ++s)
    lanes[static_cast<size_t>(s)] = &nano_streams_[static_cast<size_t>(s)];
  if (!plan.stream_sms.empty()) {
    auto [it, fresh] = green_sets_.try_emplace(plan.stream_sms);
    GreenSet& gs = it->second;
    if (fresh) {
      std::vector<int> counts;
      for (int n : plan.stream_sms)
        if (n != 0) counts.push_back(n);
      gs.parts = cuda::GreenPartitions::create(opts_.device, counts, &gs.error);
      if (gs.parts != nullptr) {
        for (size_t i = 0; i < gs.parts->size(); ++i)
          gs.streams.push_back(lane_on(gs.parts->stream(i)));
      } else {
        log_warn("pipeline: no SM partitions ({}); their streams run on the whole GPU", gs.error);
      }
    }
    if (gs.parts != nullptr) {
      size_t part = 0;
      for (size_t s = 0; s < plan.stream_sms.size(); ++s) {
        if (plan.stream_sms[s] == 0) continue;
        if (s < lanes.size()) {
          lanes[s] = &gs.streams[part];
          lane_sms[s] = gs.parts->sm_count(part);
        }
        ++part;
      }
    }
  }
  // Two events per nano-operation, by layer parity: a layer's instance is waited for by its own
  // layer and the next, and re-recorded two layers later.
  for (auto* events : {&nano_events_, &nano_prefill_events_}) {
    while (events->size() < 2 * plan.ops.size()) {
      cudaEvent_t e = nullptr;
      NF_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
      events->push_back(e);
    }
  }
  auto event = [&](size_t op, int layer) { return nano_events_[2 * op + (layer & 1)]; };

  // Attention runs: each attention nano-batch's requests split where decode (one row) and
  // prefill requests alternate; each run is one FlashInfer batch with rebased indptrs.
  const auto& attn = plan.nano[static_cast<int>(Stage::kAttention)];
  attn_runs_.assign(attn.size(), {});
  nano_meta_host_.clear();
  size_t runs = 0;
  auto is_decode = [&](int r) { return b.query_len(r) == 1; };
  for (size_t j = 0; j < attn.size(); ++j) {
    for (int r = attn[j].req_begin; r < attn[j].req_end;) {
      int e = r + 1;
      while (e < attn[j].req_end && is_decode(e) == is_decode(r)) ++e;
      AttnRun run{r, e, nano_meta_host_.size(), runs++};
      for (int q = r; q <= e; ++q) nano_meta_host_.push_back(b.seq_indptr[q] - b.seq_indptr[r]);
      for (int q = r; q <= e; ++q)
        nano_meta_host_.push_back(fi_page_indptr_host_[static_cast<size_t>(q)] -
                                  fi_page_indptr_host_[static_cast<size_t>(r)]);
      attn_runs_[j].push_back(run);
      r = e;
    }
  }
  while (fi_runs_.size() < runs)
    fi_runs_.push_back(std::make_unique<cuda::fi::BatchAttention>(
        static_cast<int>(c.num_heads), static_cast<int>(c.num_kv_heads),
        static_cast<int>(c.head_dim), opts_.block_size));
  const size_t meta_bytes = nano_meta_host_.size() * 4;
  if (nano_meta_dev_.bytes() < meta_bytes)
    nano_meta_dev_.reset(std::max<size_t>(meta_bytes * 2, 4096));
  NF_CUDA_CHECK(cudaMemcpyAsync(nano_meta_dev_.data(), nano_meta_host_.data(), meta_bytes,
                                cudaMemcpyHostToDevice, stream_));
  for (const auto& nano : attn_runs_) {
    for (const AttnRun& run : nano) {
      if (tc_decode_ && is_decode(run.req_begin)) continue;  // no plan: our kernel
      const int32_t* qo = nano_meta_host_.data() + run.index_offset;
      const int32_t* pages = qo + (run.req_end - run.req_begin + 1);
      const std::string err =
          fi_runs_[run.fi]->plan(qo, pages, run.req_end - run.req_begin, stream_);
      NF_CHECK(err.empty(), "forward: nano-batch attention {}", err);
    }
  }
  // The metadata blob copy wrote the host vector synchronously enough for planning; the device
  // copies and plans are ordered on stream_ before the fork.

  const TensorView residual = residual_.view(DType::kBf16, {T, H});
  const TensorView h = h_.view(DType::kBf16, {T, H});
  // ids_ may be padded to a CUDA-graph bucket; the pipeline runs on the T rows.
  cuda::embedding_lookup(span_slice(ids_, 0, T), embed_.view(DType::kBf16, {V, H}), residual,
                         error_.view(DType::kI32, {1}), stream_, vocab_begin_, config_.vocab_size);
  all_reduce(residual, stream_, "embedding_allreduce");
  // Tensor parallel: the all-reduces after o_proj and down_proj run on comm_stream_, one
  // nano-batch's while the others' GEMMs go on (NCCL's CTAs bounded by --tp-comm-ctas).
  const bool tp = opts_.tp_size > 1;
  if (tp && comm_stream_ == nullptr) {
    int least = 0, greatest = 0;
    NF_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    NF_CUDA_CHECK(cudaStreamCreateWithPriority(&comm_stream_, cudaStreamNonBlocking, greatest));
  }
  while (tp && comm_events_.size() < 2 * plan.ops.size()) {
    cudaEvent_t e = nullptr;
    NF_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    comm_events_.push_back(e);
  }
  // A soft partition that follows the work (PipelineSchedule::balance_grid): the decode rows'
  // KV read on k SMs (at ~70 GB/s per SM, the streaming kernel's rate beside GEMMs) and the
  // prefill rows' GEMMs on the other sm_count_ - k (at ~665 TFLOP/s over the GPU, the profiled
  // rate) take about equally long when k = SMs * A / (A + G), A and G their SM-seconds
  // (docs/nano-batch.md). The prefill rows' attention and the small ops are left out.
  int balanced_k = 0;
  if (plan.balance_grid) {
    double kv_bytes = 0, prefill_rows = 0;
    for (int r = 0; r < b.num_requests(); ++r) {
      if (b.query_len(r) == 1) {
        kv_bytes += static_cast<double>(b.context_lens[r]) * 2.0 *
                    static_cast<double>(c.num_kv_heads) * static_cast<double>(c.head_dim) * 2.0;
      } else {
        prefill_rows += b.query_len(r);
      }
    }
    const double qkv_w = static_cast<double>((c.num_heads + 2 * c.num_kv_heads) * c.head_dim);
    const double flops = 2.0 * prefill_rows * static_cast<double>(H) *
                         (qkv_w + static_cast<double>(c.num_heads * c.head_dim) +
                          3.0 * static_cast<double>(c.intermediate_size));
    constexpr double kBytesPerSmS = 70e9, kGemmFlopsPerS = 665e12;
    const double sms = sm_count_;
    const double a = kv_bytes / kBytesPerSmS, g = flops / (kGemmFlopsPerS / sms);
    balanced_k = a + g > 0 ? static_cast<int>(std::lround(sms * a / (a + g))) : 0;
    balanced_k = std::clamp(balanced_k, 8, sm_count_ / 2);
  }

  // CudaBackendConfig::pipeline_trace: the N-th split iteration's timeline.
  const int trace_at = opts_.pipeline_trace;
  const bool trace = trace_at > 0 && ++pipelined_calls_ == trace_at;
  struct Span {
    cudaEvent_t begin = nullptr, end = nullptr;
    size_t op = 0;
    int layer = 0, lane = 0;
    bool prefill_part = false;
  };
  std::vector<Span> spans;
  cudaEvent_t trace_t0 = nullptr;
  auto span_begin = [&](size_t op, int layer, size_t lane, bool prefill_part, cudaStream_t s) {
    Span sp{nullptr, nullptr, op, layer, static_cast<int>(lane), prefill_part};
    NF_CUDA_CHECK(cudaEventCreate(&sp.begin));
    NF_CUDA_CHECK(cudaEventCreate(&sp.end));
    NF_CUDA_CHECK(cudaEventRecord(sp.begin, s));
    spans.push_back(sp);
    return spans.size() - 1;
  };
  auto span_end = [&](size_t i, cudaStream_t s) {
    NF_CUDA_CHECK(cudaEventRecord(spans[i].end, s));
  };
  if (trace) {
    NF_CUDA_CHECK(cudaEventCreate(&trace_t0));
    NF_CUDA_CHECK(cudaEventRecord(trace_t0, stream_));
  }
  NF_CUDA_CHECK(cudaEventRecord(nano_fork_, stream_));
  for (int s = 1; s < streams; ++s)
    NF_CUDA_CHECK(cudaStreamWaitEvent(lanes[static_cast<size_t>(s)]->stream, nano_fork_, 0));
  if (tp) NF_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, nano_fork_, 0));

  // Period by period (runtime/pipeline.h): each nano-operation waits for the instances it
  // needs, of its layer and, for qkv, of the layer before.
  for_each_nano_op(plan, static_cast<int>(layers_.size()), [&](size_t i, int layer) {
    const PipelinePlan::Op& pop = plan.ops[i];
    const size_t lane = static_cast<size_t>(pop.op.stream);
    NanoStream& ns = *lanes[lane];
    cuda::Gemm& gemm = lane == 0 ? *gemm_ : *ns.gemm;
    auto wait_deps = [&](cudaStream_t s) {
      for (int d : pop.deps)
        NF_CUDA_CHECK(cudaStreamWaitEvent(s, event(static_cast<size_t>(d), layer), 0));
      if (layer > 0)
        for (int d : pop.prev_deps)
          NF_CUDA_CHECK(cudaStreamWaitEvent(s, event(static_cast<size_t>(d), layer - 1), 0));
    };
    wait_deps(ns.stream);
    if (pop.op.stage == Stage::kAttention) {
      // A bounded decode grid (sm_target: a soft partition) or a green partition holds the
      // memory-bound decode rows; the compute-bound prefill rows run where the qkv operation
      // this one needs ran, so that they are not confined to the attention's few SMs.
      const int grid = pop.op.sm_target > 0 ? (plan.balance_grid ? balanced_k : pop.op.sm_target)
                                            : lane_sms[lane];
      const size_t pre_lane =
          pop.deps.empty()
              ? lane
              : static_cast<size_t>(plan.ops[static_cast<size_t>(pop.deps[0])].op.stream);
      const bool any_prefill =
          std::any_of(attn_runs_[static_cast<size_t>(pop.op.nano)].begin(),
                      attn_runs_[static_cast<size_t>(pop.op.nano)].end(),
                      [&](const AttnRun& r) { return b.query_len(r.req_begin) != 1; });
      if (grid > 0 && pre_lane != lane && any_prefill) {
        NanoStream& ps = *lanes[pre_lane];
        cudaEvent_t pre_done = nano_prefill_events_[2 * i + (layer & 1)];
        wait_deps(ps.stream);
        const size_t sp = trace ? span_begin(i, layer, pre_lane, true, ps.stream) : 0;
        run_nano_op(b, plan, pop.op, static_cast<size_t>(layer), ps.stream, lane_sms[pre_lane],
                    gemm, Runs::kPrefill);
        if (trace) span_end(sp, ps.stream);
        NF_CUDA_CHECK(cudaEventRecord(pre_done, ps.stream));
        const size_t sd = trace ? span_begin(i, layer, lane, false, ns.stream) : 0;
        run_nano_op(b, plan, pop.op, static_cast<size_t>(layer), ns.stream, grid, gemm,
                    Runs::kDecode);
        if (trace) span_end(sd, ns.stream);
        NF_CUDA_CHECK(cudaStreamWaitEvent(ns.stream, pre_done, 0));
      } else {
        const size_t sp = trace ? span_begin(i, layer, lane, false, ns.stream) : 0;
        run_nano_op(b, plan, pop.op, static_cast<size_t>(layer), ns.stream, grid, gemm);
        if (trace) span_end(sp, ns.stream);
      }
    } else {
      // sm_target: n SMs, -n all but n of the stream's (NanoOp::sm_target), 0 the stream's.
      const int sms = lane_sms[lane] > 0 ? lane_sms[lane] : sm_count_;
      const int t = plan.balance_grid && pop.op.sm_target < 0 ? -balanced_k : pop.op.sm_target;
      gemm.set_sm_count_target(t > 0 ? t : t < 0 ? std::max(1, sms + t) : lane_sms[lane]);
      const size_t sp = trace ? span_begin(i, layer, lane, false, ns.stream) : 0;
      run_nano_op(b, plan, pop.op, static_cast<size_t>(layer), ns.stream, lane_sms[lane], gemm);
      if (trace) span_end(sp, ns.stream);
    }
    if (tp && (pop.op.stage == Stage::kO || pop.op.stage == Stage::kFfn)) {
      // The op is done once its rows are summed over the ranks.
      const PipelinePlan::Range& r = plan.range(pop.op);
      cudaEvent_t gemm_done = comm_events_[2 * i + (layer & 1)];
      NF_CUDA_CHECK(cudaEventRecord(gemm_done, ns.stream));
      NF_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, gemm_done, 0));
      all_reduce(row_slice(h, r.begin, r.end - r.begin), comm_stream_, "");
      NF_CUDA_CHECK(cudaEventRecord(event(i, layer), comm_stream_));
    } else {
      NF_CUDA_CHECK(cudaEventRecord(event(i, layer), ns.stream));
    }
  });
  gemm_->set_sm_count_target(0);
  for (int s = 1; s < streams; ++s) {
    NanoStream& ns = *lanes[static_cast<size_t>(s)];
    NF_CUDA_CHECK(cudaEventRecord(ns.done, ns.stream));
    NF_CUDA_CHECK(cudaStreamWaitEvent(stream_, ns.done, 0));
  }
  if (tp) {
    NF_CUDA_CHECK(cudaEventRecord(nano_fork_, comm_stream_));
    NF_CUDA_CHECK(cudaStreamWaitEvent(stream_, nano_fork_, 0));
  }
  if (trace) {
    NF_CUDA_CHECK(cudaStreamSynchronize(stream_));
    float total = 0;
    for (const Span& sp : spans) {
      float t_begin = 0, t_end = 0;
      NF_CUDA_CHECK(cudaEventElapsedTime(&t_begin, trace_t0, sp.begin));
      NF_CUDA_CHECK(cudaEventElapsedTime(&t_end, trace_t0, sp.end));
      total = std::max(total, t_end);
      const NanoOp& op = plan.ops[sp.op].op;
      const PipelinePlan::Range& r = plan.range(op);
      std::fprintf(
          stderr,
          "TRACE {\"layer\":%d,\"stage\":\"%s%s\",\"nano\":%d,\"stream\":%d,"
          "\"sm_target\":%d,\"rows\":%d,\"begin_ms\":%.4f,\"end_ms\":%.4f}\n",
          sp.layer, stage_name(op.stage), sp.prefill_part ? "-prefill" : "", op.nano, sp.lane,
          plan.balance_grid && op.sm_target != 0 ? (op.sm_target > 0 ? balanced_k : -balanced_k)
                                                 : op.sm_target,
          r.end - r.begin, t_begin, t_end);
      NF_CUDA_CHECK(cudaEventDestroy(sp.begin));
      NF_CUDA_CHECK(cudaEventDestroy(sp.end));
    }
    std::fprintf(stderr,
                 "TRACE {\"schedule_ops\":%zu,\"tokens\":%lld,\"decodes\":%d,\"total_ms\":%.4f}\n",
                 plan.ops.size(), static_cast<long long>(T), b.num_decodes(), total);
    NF_CUDA_CHECK(cudaEventDestroy(trace_t0));
  }
  cuda::add_rms_norm(h, residual, final_norm_.view(DType::kBf16, {H}), h, eps, stream_);
  // The op profile sees the overlapped layers as one op.
  mark("nano_batch_layers", 0, 0);
#endif
}

void CudaBackend::run_nano_op(const ScheduledBatch& b, const PipelinePlan& plan, const NanoOp& op,
                              size_t layer, cudaStream_t stream, int stream_sms, cuda::Gemm& gemm,
                              Runs which) {
#ifndef NANOFLOW_HAVE_FLASHINFER
  (void)b, (void)plan, (void)op, (void)layer, (void)stream, (void)stream_sms, (void)gemm,
      (void)which;
#else
  const ModelConfig& c = local_;
  const int64_t T = b.num_tokens(), H = c.hidden_size, hd = c.head_dim, nh = c.num_heads;
  const int64_t nkv = c.num_kv_heads, I = c.intermediate_size, qkv_w = (nh + 2 * nkv) * hd;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const PipelinePlan::Range& r = plan.range(op);
  const int64_t r0 = r.begin, n = r.end - r.begin;
  Layer& l = layers_[layer];
  const TensorView residual = row_slice(residual_.view(DType::kBf16, {T, H}), r0, n);
  const TensorView h = row_slice(h_.view(DType::kBf16, {T, H}), r0, n);
  const TensorView qkv_all = qkv_.view(DType::kBf16, {T, qkv_w});
  const TensorView attn_all = attn_.view(DType::kBf16, {T, nh * hd});
  switch (op.stage) {
    case Stage::kQkv: {
      const TensorView attn_norm = l.attn_norm.view(DType::kBf16, {H});
      if (layer == 0) {
        cuda::rms_norm(residual, attn_norm, h, eps, stream);
      } else {
        cuda::add_rms_norm(h, residual, attn_norm, h, eps, stream);
      }
      const TensorView qkv = row_slice(qkv_all, r0, n);
      cuda::GemmArgs a{.x = h, .w = l.w_qkv.view(DType::kBf16, {qkv_w, H}), .y = qkv};
      if (l.b_qkv.data() != nullptr) a.bias = l.b_qkv.view(DType::kBf16, {qkv_w});
      gemm.run(a, stream);
      if (l.q_norm.data() != nullptr)
        cuda::head_rms_norm(qkv, static_cast<int>(nh), static_cast<int>(nkv),
                            static_cast<int>(hd), l.q_norm.view(DType::kBf16, {hd}),
                            l.k_norm.view(DType::kBf16, {hd}), eps, stream);
      cuda::rope_kv_write({static_cast<int>(nh), static_cast<int>(nkv), static_cast<int>(hd)}, qkv,
                          span_slice(positions_, r0, n), inv_freq_.view(DType::kF32, {hd / 2}),
                          l.kv.view(DType::kBf16, {num_blocks_, 2, nkv, opts_.block_size, hd}),
                          span_slice(slots_, r0, n), stream);
      break;
    }
    case Stage::kAttention: {
      const auto& runs = attn_runs_[static_cast<size_t>(op.nano)];
      for (const AttnRun& run : runs) {
        const bool decode = b.query_len(run.req_begin) == 1;
        if ((which == Runs::kDecode && !decode) || (which == Runs::kPrefill && decode)) continue;
        const int64_t row0 = b.seq_indptr[run.req_begin];
        const int32_t* meta = nano_meta_dev_.as<int32_t>() + run.index_offset;
        if (tc_decode_ && decode) {
          // One split: runs of several nano-batches may overlap, and splits share a workspace.
          run_tc_decode(b, run.req_begin, run.req_end, meta,
                        meta + (run.req_end - run.req_begin + 1), static_cast<size_t>(layer), 1,
                        cuda::TensorView(), stream, stream_sms);
          continue;
        }
        cuda::fi::BatchAttention::RunArgs fa;
        fa.q = static_cast<const std::byte*>(qkv_all.data) + row0 * qkv_w * 2;
        fa.q_stride_n = qkv_w;
        fa.kv_layer = l.kv.data();
        fa.qo_indptr = meta;
        fa.kv_page_indptr = meta + (run.req_end - run.req_begin + 1);
        fa.kv_page_ids =
            fi_page_ids_.ptr<int32_t>() + fi_page_indptr_host_[static_cast<size_t>(run.req_begin)];
        fa.kv_last_page_len = fi_last_page_len_.ptr<int32_t>() + run.req_begin;
        fa.out = static_cast<std::byte*>(attn_all.data) + row0 * nh * hd * 2;
        fa.sm_scale = 1.0f / std::sqrt(static_cast<float>(hd));
        const cudaError_t st = fi_runs_[run.fi]->run(fa, stream);
        NF_CHECK(st == cudaSuccess, "forward: nano-batch attention: {}", cudaGetErrorString(st));
      }
      break;
    }
    case Stage::kO:
      gemm.run(
          {.x = row_slice(attn_all, r0, n), .w = l.w_o.view(DType::kBf16, {H, nh * hd}), .y = h},
          stream);
      break;
    case Stage::kFfn: {
      const TensorView gate_up = row_slice(gate_up_.view(DType::kBf16, {T, 2 * I}), r0, n);
      const TensorView act = row_slice(act_.view(DType::kBf16, {T, I}), r0, n);
      cuda::add_rms_norm(h, residual, l.ffn_norm.view(DType::kBf16, {H}), h, eps, stream);
      gemm.run({.x = h, .w = l.w_gate_up.view(DType::kBf16, {2 * I, H}), .y = gate_up}, stream);
      cuda::silu_and_mul(gate_up, act, stream);
      gemm.run({.x = act, .w = l.w_down.view(DType::kBf16, {H, I}), .y = h}, stream);
      break;
    }
  }
#endif
}

void CudaBackend::run_tc_decode(const ScheduledBatch& b, int r0, int r1, const int32_t* qo_indptr,
                                const int32_t* page_indptr, size_t li, int splits,
                                const TensorView& workspace, cudaStream_t stream, int stream_sms) {
  const ModelConfig& c = local_;
  const int64_t hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t qkv_w = (nh + 2 * nkv) * hd, T = b.num_tokens(), n = r1 - r0;
  const int64_t row0 = b.seq_indptr[static_cast<size_t>(r0)];
  const int32_t p0 = fi_page_indptr_host_[static_cast<size_t>(r0)];
  const int32_t p1 = fi_page_indptr_host_[static_cast<size_t>(r1)];
  cuda::PagedAttentionArgs a;
  a.q = row_slice(qkv_.view(DType::kBf16, {T, qkv_w}), row0, n);
  a.kv_cache = layers_[li].kv.view(DType::kBf16, {num_blocks_, 2, nkv, opts_.block_size, hd});
  a.positions = span_slice(positions_, row0, n);
  a.seq_indptr = TensorView(const_cast<int32_t*>(qo_indptr), DType::kI32, {n + 1});
  a.block_indptr = TensorView(const_cast<int32_t*>(page_indptr), DType::kI32, {n + 1});
  a.block_ids = span_slice(fi_page_ids_, p0, p1 - p0);
  a.out = row_slice(attn_.view(DType::kBf16, {T, nh * hd}), row0, n);
  a.workspace = workspace;
  a.num_heads = static_cast<int>(nh);
  a.scale = 1.0f / std::sqrt(static_cast<float>(hd));
  a.num_splits = splits;
  // The streaming kernel everywhere: in a partition it draws ~1.7x the per-SM bandwidth of the
  // per-request kernel (bench/results/tc_decode_streams_h200.json), and on the whole GPU, where it
  // is as fast in the engine, it draws ~11% fewer joules per GB, which is what counts at the
  // power limit: +1.1-1.2% tok/s in serial (bench/results/energy_h200.json).
  // CudaBackendConfig::tc_decode_streams false: the per-request kernel on the whole GPU.
  const bool per_request = !opts_.tc_decode_streams;
  a.sm_count = stream_sms;
  a.decode_kernel = stream_sms > 0 || !per_request ? cuda::launch::kDecodeStreams
                                                   : cuda::launch::kDecodePerRequest;
  cuda::paged_decode_attention(a, stream);
}

}  // namespace nf
