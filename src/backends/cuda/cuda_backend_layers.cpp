// CudaBackend: the serial forward: the dense segments (graph-captured per bucket), the attention between them, and the tensor-parallel all-reduce.
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

void CudaBackend::size_attention_splits(int64_t rows, int64_t max_context) {
  const ModelConfig& c = local_;
  const int nh = static_cast<int>(c.num_heads);
  attn_splits_ = cuda::paged_attention_num_splits(rows, nh, static_cast<int>(c.num_kv_heads),
                                                  max_context, sm_count_);
  const size_t ws_bytes = cuda::paged_attention_workspace_bytes(
      rows, nh, static_cast<int>(c.head_dim), attn_splits_);
  if (attn_workspace_.bytes() < ws_bytes) {
    NF_CUDA_CHECK(cudaStreamSynchronize(stream_));
    attn_workspace_.reset(ws_bytes);
  }
  attn_ws_view_ = ws_bytes > 0 ? attn_workspace_.view(DType::kU8, {static_cast<int64_t>(ws_bytes)})
                               : cuda::TensorView();
}

// Per layer (residual_ holds the residual stream, h_ the normed input and the GEMM outputs):
//   h = add_rms_norm(h, residual) (plain rms_norm of the embeddings in layer 0)
//   qkv = h @ w_qkv^T + b_qkv; RoPE on q, k and K/V into the cache; attn = attention(q, cache)
//   h = attn @ w_o^T; h = add_rms_norm(h, residual, ffn_norm)
//   gate_up = h @ w_gate_up^T; act = silu(gate) * up; h = act @ w_down^T
// and after the last layer h = add_rms_norm(h, residual, final_norm). The dense ops run on Tp
// rows (the padded token count; the padding rows have slot -1 and write no K/V, and no row
// mixes with another outside attention); attention runs on the batch's T rows.
void CudaBackend::run_layers(const ScheduledBatch& b, int64_t max_context) {
  const ModelConfig& c = local_;
  const int64_t T = b.num_tokens(), Tp = padded_tokens(T);
  const int64_t hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t B = b.num_requests(), D = fi_attn_ ? fi_decodes_ : 0;
  if (fi_attn_) {
    if (D > 0 && !tc_decode_) {
      const std::string err = fi_attn_->plan(b.seq_indptr.data(), fi_page_indptr_host_.data(),
                                             static_cast<int>(D), stream_);
      NF_CHECK(err.empty(), "forward: decode {}", err);
    }
    if (D > 0 && tc_decode_) size_attention_splits(D, max_context);  // over the decode rows
    if (B > D) {
      const std::string err =
          fi_prefill_->plan(fi_prefill_qo_indptr_host_.data(),
                            fi_prefill_page_indptr_host_.data(), static_cast<int>(B - D), stream_);
      NF_CHECK(err.empty(), "forward: prefill {}", err);
    }
    mark("attention_plan", 0, 0);
  } else {
    size_attention_splits(T, max_context);
  }
  // Work of each op, for the profile's floors (FLOPs over the GEMM rate, bytes over HBM). With
  // FlashInfer, decodes ([0, D) requests and rows) and prefill chunks are timed apart.
  attn_flops_[0] = attn_flops_[1] = attn_bytes_[0] = attn_bytes_[1] = 0;
  if (profiling_) {
    for (int64_t r = 0; r < B; ++r) {
      const int g = r < D ? 0 : 1;
      for (int32_t t = b.seq_indptr[r]; t < b.seq_indptr[r + 1]; ++t)
        attn_flops_[g] += 4.0 * nh * hd * (b.positions[t] + 1.0);
      attn_bytes_[g] += 2.0 * b.context_lens[r] * nkv * hd * 2 +
                        4.0 * (b.seq_indptr[r + 1] - b.seq_indptr[r]) * nh * hd;
    }
  }
  const int L = static_cast<int>(layers_.size());
  for (int s = 0; s <= L; ++s) {
    launch_segment(s, Tp);
    if (s < L) run_attention(b, static_cast<size_t>(s));
  }
}

int64_t CudaBackend::padded_tokens(int64_t T) const {
  if (!opts_.cuda_graphs) return T;
  const int64_t g = T <= 128 ? 8 : T <= 512 ? 32 : 128;
  return std::min<int64_t>((T + g - 1) / g * g, opts_.max_batch_tokens);
}

void CudaBackend::run_segment(int s, int64_t Tp) {
  const ModelConfig& c = local_;
  const int L = static_cast<int>(layers_.size());
  const int64_t H = c.hidden_size, hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t I = c.intermediate_size, qkv_w = (nh + 2 * nkv) * hd, V = c.vocab_size;
  const float eps = static_cast<float>(c.rms_norm_eps);
  const TensorView residual = residual_.view(DType::kBf16, {Tp, H});
  const TensorView h = h_.view(DType::kBf16, {Tp, H});
  const TensorView qkv = qkv_.view(DType::kBf16, {Tp, qkv_w});
  const TensorView attn = attn_.view(DType::kBf16, {Tp, nh * hd});
  const TensorView gate_up = gate_up_.view(DType::kBf16, {Tp, 2 * I});
  const TensorView act = act_.view(DType::kBf16, {Tp, I});
  const double Td = static_cast<double>(Tp);
  const double norm_bytes = 8.0 * Td * H;
  if (s == 0) {
    cuda::embedding_lookup(ids_, embed_.view(DType::kBf16, {V, H}), residual,
                           error_.view(DType::kI32, {1}), stream_, vocab_begin_,
                           config_.vocab_size);
    mark("embedding", 0, 4.0 * Td * H);
    all_reduce(residual, stream_, "embedding_allreduce");
  } else {
    Layer& l = layers_[static_cast<size_t>(s - 1)];
    gemm_->run({.x = attn, .w = l.w_o.view(DType::kBf16, {H, nh * hd}), .y = h}, stream_);
    mark("o_gemm", 2.0 * Td * nh * hd * H, 2.0 * (H * nh * hd + Td * (nh * hd + H)));
    all_reduce(h, stream_, "o_allreduce");
    cuda::add_rms_norm(h, residual, l.ffn_norm.view(DType::kBf16, {H}), h, eps, stream_);
    mark("ffn_norm", 0, norm_bytes);
    gemm_->run({.x = h, .w = l.w_gate_up.view(DType::kBf16, {2 * I, H}), .y = gate_up}, stream_);
    mark("gate_up_gemm", 4.0 * Td * H * I, 2.0 * (2 * I * H + Td * (H + 2 * I)));
    cuda::silu_and_mul(gate_up, act, stream_);
    mark("silu_mul", 0, 6.0 * Td * I);
    gemm_->run({.x = act, .w = l.w_down.view(DType::kBf16, {H, I}), .y = h}, stream_);
    mark("down_gemm", 2.0 * Td * I * H, 2.0 * (H * I + Td * (I + H)));
    all_reduce(h, stream_, "down_allreduce");
  }
  if (s == L) {
    cuda::add_rms_norm(h, residual, final_norm_.view(DType::kBf16, {H}), h, eps, stream_);
    mark("final_norm", 0, norm_bytes);
    return;
  }
  Layer& l = layers_[static_cast<size_t>(s)];
  const TensorView attn_norm = l.attn_norm.view(DType::kBf16, {H});
  if (s == 0) {
    cuda::rms_norm(residual, attn_norm, h, eps, stream_);
  } else {
    cuda::add_rms_norm(h, residual, attn_norm, h, eps, stream_);
  }
  mark("attn_norm", 0, norm_bytes);
  cuda::GemmArgs qkv_args{.x = h, .w = l.w_qkv.view(DType::kBf16, {qkv_w, H}), .y = qkv};
  if (l.b_qkv.data() != nullptr) qkv_args.bias = l.b_qkv.view(DType::kBf16, {qkv_w});
  gemm_->run(qkv_args, stream_);
  mark("qkv_gemm", 2.0 * Td * H * qkv_w, 2.0 * (qkv_w * H + Td * (H + qkv_w)));
  if (l.q_norm.data() != nullptr) {
    cuda::head_rms_norm(qkv, static_cast<int>(nh), static_cast<int>(nkv), static_cast<int>(hd),
                        l.q_norm.view(DType::kBf16, {hd}), l.k_norm.view(DType::kBf16, {hd}), eps,
                        stream_);
    mark("qk_norm", 0, 4.0 * Td * (nh + nkv) * hd);
  }
  const TensorView kv = l.kv.view(DType::kBf16, {num_blocks_, 2, nkv, opts_.block_size, hd});
  cuda::rope_kv_write({static_cast<int>(nh), static_cast<int>(nkv), static_cast<int>(hd)}, qkv,
                      positions_, inv_freq_.view(DType::kF32, {hd / 2}),
                      kv, slots_, stream_);
  mark("rope_kv_write", 0, 4.0 * Td * qkv_w);
}

void CudaBackend::all_reduce(const TensorView& x, cudaStream_t stream, const char* op) {
  if (opts_.tp_size == 1) return;
  const size_t n = static_cast<size_t>(x.numel());
  if (opts_.peer_allreduce != nullptr && opts_.peer_allreduce->accepts(x.data, n)) {
    opts_.peer_allreduce->all_reduce(x.data, n, stream);
  } else {
    opts_.comm->all_reduce_sum_bf16(x.data, n, stream);
  }
  // Bytes of a ring all-reduce per rank: 2 (N - 1) / N of the tensor each way.
  const double N = opts_.tp_size;
  if (stream == stream_) mark(op, 0, 2.0 * (N - 1) / N * 2.0 * static_cast<double>(x.numel()));
}

void CudaBackend::launch_segment(int s, int64_t Tp) {
  if (!opts_.cuda_graphs || profiling_) return run_segment(s, Tp);
  GraphSet& set = graphs_[Tp];
  if (set.segments.empty()) set.segments.assign(layers_.size() + 1, nullptr);
  if (s == 0) ++set.uses;
  if (set.uses < 2) return run_segment(s, Tp);  // first use: eager (kernel loading, GEMM plans)
  cudaGraphExec_t& exec = set.segments[static_cast<size_t>(s)];
  if (exec == nullptr) {
    cudaGraph_t graph = nullptr;
    NF_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
      run_segment(s, Tp);
    } catch (...) {
      cudaStreamEndCapture(stream_, &graph);
      if (graph != nullptr) cudaGraphDestroy(graph);
      throw;
    }
    NF_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
    const cudaError_t st = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    NF_CUDA_CHECK(st);
    ++graph_captures_;
  }
  NF_CUDA_CHECK(cudaGraphLaunch(exec, stream_));
}

void CudaBackend::clear_graphs() {
  for (auto& [tp, set] : graphs_)
    for (cudaGraphExec_t e : set.segments)
      if (e != nullptr) cudaGraphExecDestroy(e);
  graphs_.clear();
}

void CudaBackend::run_attention(const ScheduledBatch& b, size_t li) {
  const ModelConfig& c = local_;
  const int64_t T = b.num_tokens(), B = b.num_requests(), D = fi_attn_ ? fi_decodes_ : 0;
  const int64_t hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t qkv_w = (nh + 2 * nkv) * hd;
  const TensorView qkv = qkv_.view(DType::kBf16, {T, qkv_w});
  const TensorView attn = attn_.view(DType::kBf16, {T, nh * hd});
  const TensorView kv =
      layers_[li].kv.view(DType::kBf16, {num_blocks_, 2, nkv, opts_.block_size, hd});
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  if (!fi_attn_) {
    cuda::PagedAttentionArgs aa;
    aa.q = qkv;
    aa.kv_cache = kv;
    aa.positions = TensorView(positions_.data, DType::kI32, {T});  // the real rows
    aa.seq_indptr = seq_indptr_;
    aa.block_indptr = block_indptr_;
    aa.block_ids = block_ids_;
    aa.out = attn;
    aa.workspace = attn_ws_view_;
    aa.num_heads = static_cast<int>(nh);
    aa.scale = scale;
    aa.num_splits = attn_splits_;
    cuda::paged_attention(aa, stream_);
    mark("attention", attn_flops_[0] + attn_flops_[1], attn_bytes_[0] + attn_bytes_[1]);
    return;
  }
  cuda::fi::BatchAttention::RunArgs fa;
  fa.q = qkv.data;
  fa.q_stride_n = qkv_w;
  fa.kv_layer = kv.data;
  fa.qo_indptr = seq_indptr_.ptr<int32_t>();
  fa.kv_page_indptr = fi_page_indptr_.ptr<int32_t>();
  fa.kv_page_ids = fi_page_ids_.ptr<int32_t>();
  fa.kv_last_page_len = fi_last_page_len_.ptr<int32_t>();
  fa.out = attn.data;
  fa.sm_scale = scale;
  if (D > 0 && tc_decode_) {
    run_tc_decode(b, 0, static_cast<int>(D), seq_indptr_.ptr<int32_t>(),
                  fi_page_indptr_.ptr<int32_t>(), li, attn_splits_, attn_ws_view_, stream_);
    mark("attention_decode", attn_flops_[0], attn_bytes_[0]);
  } else if (D > 0) {
    const cudaError_t st = fi_attn_->run(fa, stream_);
    NF_CHECK(st == cudaSuccess, "forward: FlashInfer decode attention: {}",
             cudaGetErrorString(st));
    mark("attention_decode", attn_flops_[0], attn_bytes_[0]);
  }
  if (B > D) {
    // The prefill chunks: rows from seq_indptr[D], pages from fi_page_indptr[D].
    const int64_t row0 = b.seq_indptr[static_cast<size_t>(D)];
    fa.q = static_cast<const std::byte*>(qkv.data) + row0 * qkv_w * 2;
    fa.out = static_cast<std::byte*>(attn.data) + row0 * nh * hd * 2;
    fa.qo_indptr = fi_prefill_qo_indptr_.ptr<int32_t>();
    fa.kv_page_indptr = fi_prefill_page_indptr_.ptr<int32_t>();
    fa.kv_page_ids = fi_page_ids_.ptr<int32_t>() + fi_page_indptr_host_[static_cast<size_t>(D)];
    fa.kv_last_page_len = fi_last_page_len_.ptr<int32_t>() + D;
    const cudaError_t st = fi_prefill_->run(fa, stream_);
    NF_CHECK(st == cudaSuccess, "forward: FlashInfer prefill attention: {}",
             cudaGetErrorString(st));
    mark("attention_prefill", attn_flops_[1], attn_bytes_[1]);
  }
}

}  // namespace nf
