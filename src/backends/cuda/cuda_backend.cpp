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
namespace {

using cuda::DType;
using cuda::TensorView;

constexpr double kGiB = double{1 << 30};

size_t align_up(size_t n, size_t a) {
  return (n + a - 1) / a * a;
}

// Bytes of every weight of the model in bf16.
size_t weight_bytes(const ModelConfig& c) {
  const int64_t H = c.hidden_size, hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t I = c.intermediate_size, V = c.vocab_size;
  int64_t per_layer = 2 * H + (nh + 2 * nkv) * hd * H + H * nh * hd + 3 * I * H;
  if (c.qkv_bias) per_layer += (nh + 2 * nkv) * hd;
  const int64_t total = V * H * (c.tie_word_embeddings ? 1 : 2) + H + c.num_layers * per_layer;
  return static_cast<size_t>(total) * 2;
}

// dst[i] = bf16(src[i]) on all hardware threads (a Llama-3-8B load converts 8e9 floats).
void convert_bf16(const float* src, uint16_t* dst, size_t n) {
  const size_t threads = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, 64);
  const size_t chunk = std::max<size_t>((n + threads - 1) / threads, size_t{1} << 16);
  std::vector<std::thread> workers;
  for (size_t lo = 0; lo < n; lo += chunk) {
    workers.emplace_back([=] {
      const size_t hi = std::min(n, lo + chunk);
      for (size_t j = lo; j < hi; ++j) dst[j] = float_to_bf16(src[j]);
    });
  }
  for (std::thread& t : workers) t.join();
}

// dst[r * width + j] = bf16(src[r * pitch + j]): a column block of a row-major matrix (a
// tensor-parallel rank's share of o_proj or down_proj), rows spread over the hardware threads.
void convert_bf16_cols(const float* src, int64_t pitch, uint16_t* dst, int64_t rows,
                       int64_t width) {
  const int64_t threads = std::clamp<int64_t>(std::thread::hardware_concurrency(), 1, 64);
  const int64_t per = std::max<int64_t>((rows + threads - 1) / threads, 1);
  std::vector<std::thread> workers;
  for (int64_t lo = 0; lo < rows; lo += per) {
    workers.emplace_back([=] {
      for (int64_t r = lo; r < std::min(rows, lo + per); ++r)
        for (int64_t j = 0; j < width; ++j) dst[r * width + j] = float_to_bf16(src[r * pitch + j]);
    });
  }
  for (std::thread& t : workers) t.join();
}

}  // namespace

void CudaBackend::PinnedFree::operator()(void* p) const {
  if (p != nullptr) cudaFreeHost(p);
}

CudaBackend::CudaBackend(const ModelConfig& model, const WeightSource& w,
                         std::span<const float> rope_inv_freq, const CudaBackendConfig& opts)
    : config_(model), opts_(opts) {
  NF_CHECK(opts_.block_size > 0, "block size {}", opts_.block_size);
  NF_CHECK(model.num_layers > 0, "model without layers");
  NF_CHECK(opts_.max_batch_tokens > 0, "max batch tokens {}", opts_.max_batch_tokens);
  if (opts_.gpu_memory_utilization <= 0 || opts_.gpu_memory_utilization > 1)
    fail("--gpu-memory-utilization {} must be in (0, 1]", opts_.gpu_memory_utilization);
  const int N = opts_.tp_size, rank = opts_.tp_rank;
  NF_CHECK(N >= 1 && rank >= 0 && rank < N, "tensor-parallel rank {} of {}", rank, N);
  NF_CHECK(N == 1 || opts_.comm != nullptr, "tensor-parallel rank {} of {} without a communicator",
           rank, N);
  local_ = tensor_parallel_shard(model, N);
  vocab_begin_ = std::min<int64_t>(model.vocab_size, rank * local_.vocab_size);
  const ModelConfig& c = local_;
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    cudaGetLastError();
    fail("--device cuda: no CUDA device is visible (driver missing or no GPU)");
  }
  if (opts_.device < 0 || opts_.device >= devices)
    fail("CUDA device {} does not exist ({} visible)", opts_.device, devices);
  if (c.head_dim != 64 && c.head_dim != 128)
    fail("the CUDA backend supports head_dim 64 or 128, the model has {}", c.head_dim);
  NF_CUDA_CHECK(cudaSetDevice(opts_.device));
  NF_CUDA_CHECK(cudaDeviceGetAttribute(&sm_count_, cudaDevAttrMultiProcessorCount, opts_.device));

  const int64_t H = c.hidden_size, hd = c.head_dim, nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t I = c.intermediate_size, V = c.vocab_size, T = opts_.max_batch_tokens;
  const int64_t Vall = model.vocab_size;
  const int64_t qkv_w = (nh + 2 * nkv) * hd;
  // Logits: [T, vocab] f32 on rank 0; with several ranks also the rank's [T, V] and the
  // gathered [N, T, V].
  const int64_t logit_floats = (rank == 0 ? Vall : 0) + (N > 1 ? (N + 1) * V : 0);
  const size_t act_bytes = static_cast<size_t>(T) * (2 * (2 * H + qkv_w + nh * hd + 3 * I + H) +
                                                     4 * static_cast<size_t>(logit_floats));
  const size_t need = weight_bytes(c) + act_bytes + cuda::Gemm::kDefaultWorkspace;
  size_t free_b = 0, total_b = 0;
  NF_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  const double budget = std::min(static_cast<double>(free_b),
                                 opts_.gpu_memory_utilization * static_cast<double>(total_b));
  if (static_cast<double>(need) > budget) {
    fail(
        "model needs {:.2f} GiB{} ({:.2f} GiB bf16 weights + {:.2f} GiB activations for {} batch "
        "tokens) but the GPU has {:.2f} GiB free ({:.2f} GiB usable at "
        "--gpu-memory-utilization {}); use a smaller model, fewer --max-batch-tokens{}",
        need / kGiB, N > 1 ? fmt::format(" per GPU at --tensor-parallel-size {}", N) : "",
        weight_bytes(c) / kGiB, act_bytes / kGiB, T, free_b / kGiB, budget / kGiB,
        opts_.gpu_memory_utilization, N > 1 ? " or more GPUs" : " or --tensor-parallel-size");
  }
  gemm_ = std::make_unique<cuda::Gemm>();

  // The rank's share of each tensor: `whole` tensors are replicated, `rows` splits the output
  // features (column-parallel QKV and gate/up), `cols` the input features (row-parallel o_proj
  // and down_proj), `vocab` takes the rank's block of vocabulary rows, zero-padded.
  auto whole = [](const std::string& name, int64_t numel) {
    return WeightPart{name, 1, numel, 0, 1, 0, numel, 0};
  };
  auto rows = [&](const std::string& name, int64_t nrows, int64_t ncols) {
    return WeightPart{name, nrows, ncols, rank * nrows / N, (rank + 1) * nrows / N, 0, ncols, 0};
  };
  auto cols = [&](const std::string& name, int64_t nrows, int64_t ncols) {
    return WeightPart{name, nrows, ncols, 0, nrows, rank * ncols / N, (rank + 1) * ncols / N, 0};
  };
  auto vocab = [&](const std::string& name) {
    const int64_t end = std::min(Vall, vocab_begin_ + V);
    return WeightPart{name, Vall, H, vocab_begin_, end, 0, H, V - (end - vocab_begin_)};
  };
  const int64_t NH = model.num_heads * hd, NKV = model.num_kv_heads * hd;
  const int64_t NI = model.intermediate_size;
  embed_ = upload(w, {vocab("model.embed_tokens.weight")});
  final_norm_ = upload(w, {whole("model.norm.weight", H)});
  if (!c.tie_word_embeddings) lm_head_ = upload(w, {vocab("lm_head.weight")});
  NF_CHECK(static_cast<int64_t>(rope_inv_freq.size()) == hd / 2,
           "rope_inv_freq has {} floats, need {}", rope_inv_freq.size(), hd / 2);
  inv_freq_.reset(rope_inv_freq.size_bytes());
  NF_CUDA_CHECK(cudaMemcpy(inv_freq_.data(), rope_inv_freq.data(), inv_freq_.bytes(),
                           cudaMemcpyHostToDevice));
  layers_.resize(static_cast<size_t>(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    Layer& l = layers_[static_cast<size_t>(i)];
    l.attn_norm = upload(w, {whole(p + "input_layernorm.weight", H)});
    l.w_qkv = upload(
        w, {rows(p + "self_attn.q_proj.weight", NH, H), rows(p + "self_attn.k_proj.weight", NKV, H),
            rows(p + "self_attn.v_proj.weight", NKV, H)});
    if (c.qkv_bias) {
      l.b_qkv = upload(
          w, {rows(p + "self_attn.q_proj.bias", NH, 1), rows(p + "self_attn.k_proj.bias", NKV, 1),
              rows(p + "self_attn.v_proj.bias", NKV, 1)});
    }
    if (c.qk_norm) {
      l.q_norm = upload(w, {whole(p + "self_attn.q_norm.weight", hd)});
      l.k_norm = upload(w, {whole(p + "self_attn.k_norm.weight", hd)});
    }
    l.w_o = upload(w, {cols(p + "self_attn.o_proj.weight", H, NH)});
    l.ffn_norm = upload(w, {whole(p + "post_attention_layernorm.weight", H)});
    l.w_gate_up =
        upload(w, {rows(p + "mlp.gate_proj.weight", NI, H), rows(p + "mlp.up_proj.weight", NI, H)});
    l.w_down = upload(w, {cols(p + "mlp.down_proj.weight", H, NI)});
  }
  staging_f32_ = {};
  staging_bf16_ = {};

  residual_.reset(static_cast<size_t>(T * H) * 2);
  h_.reset(static_cast<size_t>(T * H) * 2);
  qkv_.reset(static_cast<size_t>(T * qkv_w) * 2);
  attn_.reset(static_cast<size_t>(T * nh * hd) * 2);
  gate_up_.reset(static_cast<size_t>(T * 2 * I) * 2);
  act_.reset(static_cast<size_t>(T * I) * 2);
  rows_.reset(static_cast<size_t>(T * H) * 2);
  if (rank == 0) {
    logits_.reset(static_cast<size_t>(T * Vall) * 4);
    sampler_ = std::make_unique<cuda::GpuSampler>(cuda::SamplerConfig{
        .max_rows = static_cast<int>(T), .vocab = static_cast<int>(Vall), .sort_rows = 32});
  }
  if (N > 1) {
    logits_local_.reset(static_cast<size_t>(T * V) * 4);
    logits_gathered_.reset(static_cast<size_t>(N * T * V) * 4);
  }
  error_.reset(sizeof(int32_t));
  void* eh = nullptr;
  NF_CUDA_CHECK(cudaHostAlloc(&eh, sizeof(int32_t), cudaHostAllocDefault));
  error_host_.reset(static_cast<int32_t*>(eh));
  // FlashInfer's plan workspaces (2 x 136 MiB) come out of the KV pool's share.
#ifdef NANOFLOW_HAVE_FLASHINFER
  const bool fi_ok = cuda::fi::supports_head_dim(static_cast<int>(hd));
#else
  const bool fi_ok = false;
#endif
  if (opts_.attention == "flashinfer" && !fi_ok) {
    fail("--attention flashinfer: this build has no FlashInfer kernel for head_dim {} (built "
         "without the FlashInfer headers, or a head_dim other than 128)", hd);
  }
  if (opts_.attention != "auto" && opts_.attention != "flashinfer" && opts_.attention != "native" &&
      opts_.attention != "tc")
    fail("--attention {}: auto, flashinfer, native or tc", opts_.attention);
  tc_decode_ = opts_.attention == "tc";
  if (tc_decode_ && (!fi_ok || opts_.block_size != cuda::launch::kDecodePage ||
                     nh / nkv > cuda::launch::kDecodeMaxGroup))
    fail("--attention tc (tensor-core decode, FlashInfer prefill) needs the FlashInfer build, "
         "head_dim 128, blocks of {} tokens and at most {} query heads per kv head",
         cuda::launch::kDecodePage, cuda::launch::kDecodeMaxGroup);
#ifdef NANOFLOW_HAVE_FLASHINFER
  if (fi_ok && opts_.attention != "native") {
    for (auto* a : {&fi_attn_, &fi_prefill_})
      *a = std::make_unique<cuda::fi::BatchAttention>(
          static_cast<int>(nh), static_cast<int>(nkv), static_cast<int>(hd), opts_.block_size);
  }
#endif
  set_pipeline(opts_.pipeline);
  allocate_kv_pool();
  // Last: nothing after it throws, so a failed construction leaks no stream.
  NF_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  int least = 0, greatest = 0;  // numerically: the lowest priority is the largest number
  NF_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
  for (CopyLane& lane : kv_lanes_)
    NF_CUDA_CHECK(cudaStreamCreateWithPriority(&lane.stream, cudaStreamNonBlocking, least));
}

CudaBackend::~CudaBackend() {
  for (size_t s = 1; s < nano_streams_.size(); ++s) {
    cudaStreamSynchronize(nano_streams_[s].stream);
    cudaStreamDestroy(nano_streams_[s].stream);
    cudaEventDestroy(nano_streams_[s].done);
  }
  for (auto& [sms, gs] : green_sets_)
    for (NanoStream& ns : gs.streams) cudaEventDestroy(ns.done);  // streams: gs.parts
  for (cudaEvent_t e : nano_events_) cudaEventDestroy(e);
  if (nano_fork_ != nullptr) cudaEventDestroy(nano_fork_);
  for (cudaEvent_t e : comm_events_) cudaEventDestroy(e);
  if (comm_stream_ != nullptr) {
    cudaStreamSynchronize(comm_stream_);
    cudaStreamDestroy(comm_stream_);
  }
  if (stream_ != nullptr) {
    cudaStreamSynchronize(stream_);
    cudaStreamDestroy(stream_);
  }
  for (CopyLane& lane : kv_lanes_) {
    if (lane.stream == nullptr) continue;
    cudaStreamSynchronize(lane.stream);
    cudaStreamDestroy(lane.stream);
  }
  for (auto& [t, e] : kv_copies_) cudaEventDestroy(e);
  for (cudaEvent_t e : kv_free_events_) cudaEventDestroy(e);
  for (cudaEvent_t e : events_) cudaEventDestroy(e);
  for (cudaEvent_t e : {step_start_, step_end_, prev_end_})
    if (e != nullptr) cudaEventDestroy(e);
  clear_graphs();
}

cuda::DeviceBuffer CudaBackend::upload(const WeightSource& w,
                                       const std::vector<WeightPart>& parts) {
  int64_t total = 0;
  for (const WeightPart& p : parts) total += (p.r1 - p.r0 + p.pad_rows) * (p.c1 - p.c0);
  cuda::DeviceBuffer out(static_cast<size_t>(total) * 2);
  int64_t off = 0;
  for (const WeightPart& p : parts) {
    const int64_t width = p.c1 - p.c0, take = (p.r1 - p.r0) * width;
    const size_t part = static_cast<size_t>(take + p.pad_rows * width);
    if (staging_bf16_.size() < part) staging_bf16_.resize(part);
    uint16_t* dst = staging_bf16_.data();
    if (width == p.cols) {  // whole rows: read just those (a rank's share of the output features)
      if (staging_f32_.size() < static_cast<size_t>(take)) staging_f32_.resize(take);
      const std::span<float> rows(staging_f32_.data(), static_cast<size_t>(take));
      if (p.r0 == 0 && p.r1 == p.rows) {
        w.read_f32(p.name, rows);  // the whole tensor (`rows` and `cols` may be 1 x numel)
      } else {
        w.read_rows_f32(p.name, p.r0, p.r1, rows);
      }
      convert_bf16(staging_f32_.data(), dst, static_cast<size_t>(take));
    } else {  // a block of columns (row-parallel o_proj, down_proj): the whole tensor is read
      const size_t n = static_cast<size_t>(p.rows * p.cols);
      if (staging_f32_.size() < n) staging_f32_.resize(n);
      w.read_f32(p.name, std::span<float>(staging_f32_.data(), n));
      convert_bf16_cols(staging_f32_.data() + p.r0 * p.cols + p.c0, p.cols, dst, p.r1 - p.r0,
                        width);
    }
    std::fill(dst + take, dst + part, uint16_t{0});
    NF_CUDA_CHECK(cudaMemcpy(out.as<uint16_t>() + off, dst, part * 2, cudaMemcpyHostToDevice));
    off += static_cast<int64_t>(part);
  }
  return out;
}

// The KV pool takes what is left of the memory share after weights and activations (or exactly
// num_kv_blocks blocks), split evenly over the layers.
void CudaBackend::allocate_kv_pool() {
  const ModelConfig& c = local_;
  const size_t per_block_all_layers = local_kv_block_bytes();  // what a copy stages
  const size_t block_bytes = per_block_all_layers / static_cast<size_t>(c.num_layers);
  num_blocks_ = opts_.num_kv_blocks;
  NF_CHECK(layers_.size() <= static_cast<size_t>(cuda::kKvCopyMaxLayers), "{} layers: at most {}",
           layers_.size(), cuda::kKvCopyMaxLayers);
  // The offload copies' staging areas (kv_copy.h), before the pool takes what is left.
  for (CopyLane& lane : kv_lanes_) lane.stage.reset(per_block_all_layers * cuda::kKvCopyMaxBlocks);
  size_t free_b = 0, total_b = 0;
  NF_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
  // Headroom for the attention split workspace and cuBLASLt's internal allocations.
  const double reserve = 256.0 * (1 << 20);
  const double used = static_cast<double>(total_b - free_b);
  const double budget =
      opts_.gpu_memory_utilization * static_cast<double>(total_b) - used - reserve;
  if (num_blocks_ <= 0)
    num_blocks_ = static_cast<int64_t>(std::max(0.0, budget) / per_block_all_layers);
  const double need = static_cast<double>(num_blocks_) * per_block_all_layers;
  if (num_blocks_ < 1 || need > static_cast<double>(free_b)) {
    fail(
        "the KV cache does not fit: {} blocks need {:.2f} GiB, the GPU has {:.2f} GiB free after "
        "the weights and activations ({:.2f} GiB usable at --gpu-memory-utilization {})",
        std::max<int64_t>(num_blocks_, 1), std::max(need, double(per_block_all_layers)) / kGiB,
        free_b / kGiB, std::max(0.0, budget) / kGiB, opts_.gpu_memory_utilization);
  }
  for (Layer& l : layers_) {
    l.kv.reset(static_cast<size_t>(num_blocks_) * block_bytes);
    kv_layer_ptrs_.push_back(l.kv.as<std::byte>());
  }
  // Printed directly: nanoflow_cuda links before the core library, which holds the logger.
  fmt::print(stderr, "CUDA backend: {:.2f} GiB weights, {} KV blocks of {} tokens ({:.2f} GiB)\n",
             weight_bytes(c) / kGiB, num_blocks_, opts_.block_size, need / kGiB);
}

// Metadata layout (host pinned and device alike): i64 slot_mapping[T] first (8-byte aligned), then
// i32 token ids[T], positions[T], seq_indptr[B+1], block_indptr[B+1], block_ids[NB],
// sample_rows[S].
int64_t CudaBackend::upload_metadata(const ScheduledBatch& b) {
  const int64_t T = b.num_tokens(), B = b.num_requests();
  const int64_t NB = static_cast<int64_t>(b.block_ids.size());
  const int64_t S = static_cast<int64_t>(b.sample_rows.size());
  if (fi_attn_) {
    // FlashInfer reads a request's context length from its page count and last-page fill, so
    // it gets exactly the pages that hold the context, even where the block table is longer.
    const int bs = opts_.block_size;
    fi_page_indptr_host_.assign(1, 0);
    fi_page_ids_host_.clear();
    fi_last_page_len_host_.clear();
    for (int64_t r = 0; r < B; ++r) {
      const int32_t ctx = b.context_lens[static_cast<size_t>(r)];
      const int32_t pages = (ctx + bs - 1) / bs;
      const int32_t lo = b.block_indptr[static_cast<size_t>(r)];
      NF_CHECK(ctx >= 1 && lo + pages <= b.block_indptr[static_cast<size_t>(r) + 1],
               "forward: request {} has context {} but {} blocks", r, ctx,
               b.block_indptr[static_cast<size_t>(r) + 1] - lo);
      NF_CHECK(ctx == b.positions[static_cast<size_t>(b.seq_indptr[static_cast<size_t>(r) + 1]) - 1] + 1,
               "forward: request {}: context {} does not end at its last token", r, ctx);
      fi_page_ids_host_.insert(fi_page_ids_host_.end(), b.block_ids.begin() + lo,
                               b.block_ids.begin() + lo + pages);
      fi_page_indptr_host_.push_back(static_cast<int32_t>(fi_page_ids_host_.size()));
      fi_last_page_len_host_.push_back(ctx - (pages - 1) * bs);
    }
    fi_decodes_ = 0;
    while (fi_decodes_ < B && b.query_len(static_cast<int>(fi_decodes_)) == 1) ++fi_decodes_;
    fi_prefill_qo_indptr_host_.clear();
    fi_prefill_page_indptr_host_.clear();
    for (int64_t r = fi_decodes_; r <= B; ++r) {
      const size_t i = static_cast<size_t>(r), d = static_cast<size_t>(fi_decodes_);
      fi_prefill_qo_indptr_host_.push_back(b.seq_indptr[i] - b.seq_indptr[d]);
      fi_prefill_page_indptr_host_.push_back(fi_page_indptr_host_[i] - fi_page_indptr_host_[d]);
    }
  }
  const int64_t FP = static_cast<int64_t>(fi_page_ids_host_.size());
  const int64_t NP = static_cast<int64_t>(fi_prefill_qo_indptr_host_.size());
  const size_t fi_ints = fi_attn_ ? static_cast<size_t>(2 * B + 1 + FP + 2 * NP) : 0;
  // The per-token arrays are padded to the dense ops' row count (CUDA-graph bucket): slot -1
  // (no K/V write), token 0, position 0.
  const int64_t Tp = padded_tokens(T);
  const size_t bytes = static_cast<size_t>(Tp) * 8 +
                       static_cast<size_t>(2 * Tp + 2 * (B + 1) + NB + S) * 4 + fi_ints * 4;
  if (meta_host_bytes_ < bytes) {
    const size_t cap = align_up(std::max<size_t>(bytes * 2, 1 << 16), 4096);
    void* p = nullptr;
    NF_CUDA_CHECK(cudaHostAlloc(&p, cap, cudaHostAllocDefault));
    meta_host_.reset(static_cast<std::byte*>(p));
    meta_host_bytes_ = cap;
    clear_graphs();  // they hold the old blob's addresses
    meta_dev_.reset(cap);
  }
  std::byte* h = meta_host_.get();
  auto* dev = static_cast<std::byte*>(meta_dev_.data());
  size_t off = 0;
  auto put = [&](const void* src, int64_t n, size_t elem, DType t) {
    const size_t nb = static_cast<size_t>(n) * elem;
    if (nb > 0) std::memcpy(h + off, src, nb);
    TensorView v(dev + off, t, {n});
    off += nb;
    return v;
  };
  auto put_padded = [&](const auto* src, auto pad) {
    using E = std::remove_cv_t<std::remove_pointer_t<decltype(src)>>;
    E* dst = reinterpret_cast<E*>(h + off);
    std::memcpy(dst, src, static_cast<size_t>(T) * sizeof(E));
    std::fill(dst + T, dst + Tp, static_cast<E>(pad));
    TensorView v(dev + off, sizeof(E) == 8 ? DType::kI64 : DType::kI32, {Tp});
    off += static_cast<size_t>(Tp) * sizeof(E);
    return v;
  };
  slots_ = put_padded(b.slot_mapping.data(), -1);
  ids_ = put_padded(b.token_ids.data(), 0);
  positions_ = put_padded(b.positions.data(), 0);
  seq_indptr_ = put(b.seq_indptr.data(), B + 1, 4, DType::kI32);
  block_indptr_ = put(b.block_indptr.data(), B + 1, 4, DType::kI32);
  block_ids_ = put(b.block_ids.data(), NB, 4, DType::kI32);
  sample_rows_ = put(b.sample_rows.data(), S, 4, DType::kI32);
  if (fi_attn_) {
    fi_page_indptr_ = put(fi_page_indptr_host_.data(), B + 1, 4, DType::kI32);
    fi_page_ids_ = put(fi_page_ids_host_.data(), FP, 4, DType::kI32);
    fi_last_page_len_ = put(fi_last_page_len_host_.data(), B, 4, DType::kI32);
    fi_prefill_qo_indptr_ = put(fi_prefill_qo_indptr_host_.data(), NP, 4, DType::kI32);
    fi_prefill_page_indptr_ = put(fi_prefill_page_indptr_host_.data(), NP, 4, DType::kI32);
  }
  NF_CUDA_CHECK(cudaMemcpyAsync(dev, h, off, cudaMemcpyHostToDevice, stream_));
  int64_t max_context = 0;
  for (int32_t p : b.positions) max_context = std::max<int64_t>(max_context, int64_t{p} + 1);
  return max_context;
}

// Checks the batch, uploads its metadata and runs the layers and the LM head: logits_ then holds
// the fp32 logits of the S sample rows. Returns false for an empty batch.
bool CudaBackend::run_model(const ScheduledBatch& b) {
  const ModelConfig& c = local_;
  const int64_t T = b.num_tokens(), S = static_cast<int64_t>(b.sample_rows.size());
  const int64_t H = c.hidden_size, V = c.vocab_size;
  b.check_shape();
  NF_CHECK(T <= opts_.max_batch_tokens,
           "forward: {} tokens exceed the backend's max batch tokens {}", T,
           opts_.max_batch_tokens);
  if (T == 0) return false;
  NF_CUDA_CHECK(cudaSetDevice(opts_.device));
  if (step_start_ == nullptr) {
    for (cudaEvent_t* e : {&step_start_, &step_end_, &prev_end_}) NF_CUDA_CHECK(cudaEventCreate(e));
  }
  NF_CUDA_CHECK(cudaEventRecord(step_start_, stream_));

  const int first = opts_.profile_first_step;
  profiling_ = first >= 0 && step_ >= first && step_ < first + opts_.profile_steps;
  if (profiling_) {
    // Enough events for every op of every layer, created once.
    const size_t need = static_cast<size_t>(c.num_layers) * 12 + 16;
    while (events_.size() < need) {
      cudaEvent_t e = nullptr;
      NF_CUDA_CHECK(cudaEventCreate(&e));
      events_.push_back(e);
    }
    marks_.clear();
    mark("start", 0, 0);
  }
  // The schedule for this batch; a split one may regroup the requests.
  const BatchPlan bp = plan_batch(b, opts_.pipeline, grouped_);
  const ScheduledBatch& run = *bp.batch;
  const int64_t max_context = upload_metadata(run);
  if (profiling_) {  // serial and nano-batch schedules alike
    std::lock_guard<std::mutex> lock(profile_mu_);
    profiled_tokens_ += run.num_tokens();
    profiled_decode_rows_ += run.num_decodes();
  }
  mark("metadata_upload", 0, 0);
  NF_CUDA_CHECK(cudaMemsetAsync(error_.data(), 0, sizeof(int32_t), stream_));
  if (!bp.schedule->is_serial()) {
    run_pipelined(run, bp.plan);
  } else {
    run_layers(run, max_context);
  }

  if (S > 0) {
    // h_ holds the final-normed hidden states of all T tokens; gather the sample rows (the
    // embedding lookup is a row gather) and run the LM head on them alone.
    const TensorView rows = rows_.view(DType::kBf16, {S, H});
    cuda::embedding_lookup(sample_rows_, h_.view(DType::kBf16, {T, H}), rows,
                           error_.view(DType::kI32, {1}), stream_);
    const cuda::DeviceBuffer& head = lm_head_.data() != nullptr ? lm_head_ : embed_;
    const int N = opts_.tp_size;
    const TensorView y =
        N == 1 ? logits_.view(DType::kF32, {S, V}) : logits_local_.view(DType::kF32, {S, V});
    gemm_->run({.x = rows, .w = head.view(DType::kBf16, {V, H}), .y = y}, stream_);
    mark("lm_head_gemm", 2.0 * S * H * V, 2.0 * V * H + 4.0 * S * V);
    if (N > 1) {
      // Vocab-parallel head: every rank's [S, V] block gathered as [N, S, V]; rank 0 lays the
      // blocks side by side as the [S, vocab] logits (the zero padding rows past vocab dropped).
      float* gathered = logits_gathered_.as<float>();
      opts_.comm->all_gather_f32(logits_local_.as<float>(), gathered, static_cast<size_t>(S * V),
                                 stream_);
      if (opts_.tp_rank == 0) {
        const int64_t Vall = config_.vocab_size;
        for (int r = 0; r < N; ++r) {
          const int64_t begin = std::min(Vall, r * V), width = std::min(Vall, begin + V) - begin;
          if (width == 0) continue;
          NF_CUDA_CHECK(cudaMemcpy2DAsync(logits_.as<float>() + begin, Vall * 4,
                                          gathered + r * S * V, V * 4, width * 4, S,
                                          cudaMemcpyDeviceToDevice, stream_));
        }
      }
      mark("lm_head_gather", 0, 8.0 * N * S * V);
    }
  }
  NF_CUDA_CHECK(cudaMemcpyAsync(error_host_.get(), error_.data(), sizeof(int32_t),
                                cudaMemcpyDeviceToHost, stream_));
  return true;
}

void CudaBackend::forward(const ScheduledBatch& b, std::span<float> logits) {
  const int64_t S = static_cast<int64_t>(b.sample_rows.size());
  const bool returns_logits = opts_.tp_rank == 0;  // the other ranks only take part
  NF_CHECK(!returns_logits || static_cast<int64_t>(logits.size()) == S * config_.vocab_size,
           "forward: logits holds {} floats, need {}x{}", logits.size(), S, config_.vocab_size);
  if (!run_model(b)) return;
  if (S > 0 && returns_logits) {
    NF_CUDA_CHECK(cudaMemcpyAsync(logits.data(), logits_.data(), logits.size_bytes(),
                                  cudaMemcpyDeviceToHost, stream_));
  }
  finish_step();
}

void CudaBackend::forward_sample(const ScheduledBatch& b, const DeviceSampleBatch& in,
                                 DeviceSampleResult& out) {
  const int64_t S = static_cast<int64_t>(b.sample_rows.size()), V = config_.vocab_size;
  const int K = in.max_logprobs;
  NF_CHECK(static_cast<int64_t>(in.rows.size()) == S, "forward_sample: {} rows for {} sample rows",
           in.rows.size(), S);
  NF_CHECK(in.banned_indptr.empty() || static_cast<int64_t>(in.banned_indptr.size()) == S + 1,
           "forward_sample: banned_indptr has {} entries for {} rows", in.banned_indptr.size(), S);
  NF_CHECK(in.penalty_indptr.empty() || static_cast<int64_t>(in.penalty_indptr.size()) == S + 1,
           "forward_sample: penalty_indptr has {} entries for {} rows", in.penalty_indptr.size(), S);
  NF_CHECK(in.penalty_counts.size() == in.penalty_ids.size() &&
               in.bias_values.size() == in.bias_ids.size(),
           "forward_sample: penalty/bias CSR arrays differ in length");
  NF_CHECK(in.bias_indptr.empty() || static_cast<int64_t>(in.bias_indptr.size()) == S + 1,
           "forward_sample: bias_indptr has {} entries for {} rows", in.bias_indptr.size(), S);
  NF_CHECK(K >= 0 && K <= kMaxLogprobs, "forward_sample: {} logprobs (at most {})", K,
           kMaxLogprobs);
  int64_t host_rows = 0;
  for (const DeviceSampleRow& r : in.rows) host_rows += r.on_host ? 1 : 0;
  out.tokens.resize(static_cast<size_t>(S));
  out.logprobs.resize(static_cast<size_t>(S));
  out.top_ids.resize(static_cast<size_t>(S * K));
  out.top_logprobs.resize(static_cast<size_t>(S * K));
  out.host_logits.resize(static_cast<size_t>(host_rows * V));
  if (!run_model(b)) return;
  // Ranks other than 0 only take part in the forward: rank 0 samples.
  if (S == 0 || opts_.tp_rank != 0) return finish_step();

  // One pinned blob up and one down: row parameters, banned ids, penalty and bias CSRs;
  // tokens, logprobs, top-K.
  const size_t nban = in.banned_ids.size();
  // Penalty CSR (indptr, ids, counts) and bias CSR (indptr, ids, values): 4-byte words.
  const size_t npen = in.penalty_indptr.empty() ? 0 : in.penalty_ids.size();
  const size_t nbias = in.bias_indptr.empty() ? 0 : in.bias_ids.size();
  const size_t up_bytes =
      static_cast<size_t>(S) * sizeof(cuda::SampleRowParams) + (in.banned_indptr.size() + nban) * 4 +
      (in.penalty_indptr.size() + 2 * npen + in.bias_indptr.size() + 2 * nbias) * 4 +
      16;  // the down blob starts 16-byte aligned
  const size_t down_bytes = static_cast<size_t>(S) * 8 + static_cast<size_t>(S * K) * 8;
  if (sample_host_bytes_ < up_bytes + down_bytes) {
    const size_t cap = align_up(std::max<size_t>(2 * (up_bytes + down_bytes), 1 << 16), 4096);
    void* p = nullptr;
    NF_CUDA_CHECK(cudaHostAlloc(&p, cap, cudaHostAllocDefault));
    sample_host_.reset(static_cast<std::byte*>(p));
    sample_host_bytes_ = cap;
    sample_dev_.reset(cap);
  }
  std::byte* h = sample_host_.get();
  auto* d = static_cast<std::byte*>(sample_dev_.data());
  auto* params = reinterpret_cast<cuda::SampleRowParams*>(h);
  for (int64_t i = 0; i < S; ++i) {
    const DeviceSampleRow& r = in.rows[static_cast<size_t>(i)];
    cuda::SampleRowParams& p = params[i];
    p = cuda::SampleRowParams{};
    p.temperature = r.temperature;
    p.top_k = r.top_k;
    p.top_p = r.top_p;
    p.min_p = r.min_p;
    p.seed = r.seed;
    p.step = r.step;
    p.num_logprobs = std::min(r.num_logprobs, K);
    p.repetition_penalty = r.repetition_penalty;
    p.frequency_penalty = r.frequency_penalty;
    p.presence_penalty = r.presence_penalty;
    if (r.on_host) {  // sampled on the host: the cheapest device work (greedy, no logprobs)
      p.temperature = 0.0f;
      p.top_k = 0;
      p.top_p = 1.0f;
      p.min_p = 0.0f;
      p.num_logprobs = 0;
      p.repetition_penalty = 1.0f;
      p.frequency_penalty = 0.0f;
      p.presence_penalty = 0.0f;
    }
  }
  size_t off = static_cast<size_t>(S) * sizeof(cuda::SampleRowParams);
  // After the row parameters, 4-byte words: the banned-id CSR, then the adjustment CSRs
  // (runtime/sample_pack.h): indptr, ids, then counts or bias values.
  auto upload_words = [&](const void* src, size_t n, DType type) {
    if (n > 0) std::memcpy(h + off, src, n * 4);
    const cuda::TensorView v(d + off, type, {static_cast<int64_t>(n)});
    off += n * 4;
    return v;
  };
  cuda::SampleArgs a;
  if (!in.banned_indptr.empty()) {
    a.banned_indptr = upload_words(in.banned_indptr.data(), in.banned_indptr.size(), DType::kI32);
    a.banned_ids = upload_words(in.banned_ids.data(), nban, DType::kI32);
  }
  if (!in.penalty_indptr.empty()) {
    a.penalty_indptr = upload_words(in.penalty_indptr.data(), in.penalty_indptr.size(), DType::kI32);
    a.penalty_ids = upload_words(in.penalty_ids.data(), npen, DType::kI32);
    a.penalty_counts = upload_words(in.penalty_counts.data(), npen, DType::kI32);
  }
  if (!in.bias_indptr.empty()) {
    a.bias_indptr = upload_words(in.bias_indptr.data(), in.bias_indptr.size(), DType::kI32);
    a.bias_ids = upload_words(in.bias_ids.data(), nbias, DType::kI32);
    a.bias_values = upload_words(in.bias_values.data(), nbias, DType::kF32);
  }
  NF_CUDA_CHECK(cudaMemcpyAsync(d, h, off, cudaMemcpyHostToDevice, stream_));
  const size_t down = align_up(off, 16);
  a.logits = logits_.view(DType::kF32, {S, V});
  a.params = cuda::TensorView(d, DType::kU8, {S, static_cast<int64_t>(sizeof(cuda::SampleRowParams))});
  a.tokens = cuda::TensorView(d + down, DType::kI32, {S});
  a.logprobs = cuda::TensorView(d + down + S * 4, DType::kF32, {S});
  if (K > 0) {
    a.top_ids = cuda::TensorView(d + down + S * 8, DType::kI32, {S, K});
    a.top_logprobs = cuda::TensorView(d + down + S * 8 + S * K * 4, DType::kF32, {S, K});
  }
  a.host_params = std::span<const cuda::SampleRowParams>(params, static_cast<size_t>(S));
  a.sample_vocab = in.sample_vocab;
  sampler_->sample(a, stream_);
  mark("sampling", 0, 4.0 * S * V);
  NF_CUDA_CHECK(cudaMemcpyAsync(h + down, d + down, down_bytes, cudaMemcpyDeviceToHost, stream_));
  int64_t hr = 0;
  for (int64_t i = 0; i < S; ++i) {
    if (!in.rows[static_cast<size_t>(i)].on_host) continue;
    NF_CUDA_CHECK(cudaMemcpyAsync(out.host_logits.data() + hr++ * V, logits_.as<float>() + i * V,
                                  static_cast<size_t>(V) * 4, cudaMemcpyDeviceToHost, stream_));
  }
  finish_step();
  std::memcpy(out.tokens.data(), h + down, static_cast<size_t>(S) * 4);
  std::memcpy(out.logprobs.data(), h + down + S * 4, static_cast<size_t>(S) * 4);
  if (K > 0) {
    std::memcpy(out.top_ids.data(), h + down + S * 8, static_cast<size_t>(S * K) * 4);
    std::memcpy(out.top_logprobs.data(), h + down + S * 8 + S * K * 4,
                static_cast<size_t>(S * K) * 4);
  }
}

// Our own kernels' context splits (attn_splits_) and their workspace (attn_ws_view_) for `rows`
// query rows.
}  // namespace nf
