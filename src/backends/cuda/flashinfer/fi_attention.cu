// FlashInfer FA2 batch prefill over the paged KV cache. This file is the only one that includes
// FlashInfer's headers (compiled as C++17 with FlashInfer's own flags, see CMakeLists.txt); it
// instantiates only what we run: bf16 Q/KV/O, int32 indices, head_dim 128, causal mask, no
// positional encoding (RoPE is applied before the K/V write), K and V with equal strides.
#include "backends/cuda/flashinfer/fi_attention.h"

#include <flashinfer/attention/mask.cuh>
#include <flashinfer/attention/prefill.cuh>
#include <flashinfer/attention/scheduler.cuh>
#include <flashinfer/attention/variants.cuh>
#include <flashinfer/page.cuh>

#include <exception>
#include <vector>

namespace nf::cuda::fi {
namespace {

using DTypeQ = nv_bfloat16;
using DTypeKV = nv_bfloat16;
using DTypeO = nv_bfloat16;
using IdType = int32_t;
constexpr uint32_t kHeadDim = 128;
constexpr size_t kFloatWorkspace = size_t{128} << 20;  // split-KV partial outputs (as FlashInfer's wrappers)
constexpr size_t kIntWorkspace = size_t{8} << 20;      // the plan: tile and chunk indices

// The parameter block FlashInfer's paged prefill kernel reads: the fields of its generated
// PagedParams for the default attention variant (see its jit/attention/modules.py).
struct PagedParams {
  using DTypeQ = fi::DTypeQ;
  using DTypeKV = fi::DTypeKV;
  using DTypeO = fi::DTypeO;
  using IdType = fi::IdType;

  DTypeQ* q;
  flashinfer::paged_kv_t<DTypeKV, IdType> paged_kv;
  IdType* q_indptr;
  DTypeO* o;
  float* lse;
  flashinfer::uint_fastdiv group_size;

  uint8_t* maybe_custom_mask;
  int32_t* maybe_mask_indptr;
  float* maybe_alibi_slopes;
  uint32_t* maybe_prefix_len_ptr;
  uint16_t* maybe_token_pos_in_items_ptr;
  uint16_t* maybe_max_item_len_ptr;
  uint8_t* maybe_k_cache_sf;
  uint8_t* maybe_v_cache_sf;
  double logits_soft_cap;
  double sm_scale;
  double rope_rcp_scale;
  double rope_rcp_theta;
  int64_t token_pos_in_items_len;

  uint32_t num_qo_heads;
  IdType q_stride_n;
  IdType q_stride_h;
  uint32_t k_sf_stride_page;
  uint32_t k_sf_stride_n;
  uint32_t k_sf_stride_h;
  uint32_t v_sf_stride_page;
  uint32_t v_sf_stride_n;
  uint32_t v_sf_stride_h;
  int32_t window_left;

  IdType* request_indices;
  IdType* qo_tile_indices;
  IdType* kv_tile_indices;
  IdType* merge_indptr;
  IdType* o_indptr;
  bool* block_valid_mask;
  IdType* kv_chunk_size_ptr;
  uint32_t max_total_num_rows;
  uint32_t* total_num_rows;
  uint32_t padded_batch_size;
  bool partition_kv;

  __host__ __device__ __forceinline__ uint32_t get_qo_len(uint32_t batch_idx) const {
    return q_indptr[batch_idx + 1] - q_indptr[batch_idx];
  }
  __host__ __device__ __forceinline__ uint32_t get_kv_len(uint32_t batch_idx) const {
    return paged_kv.get_length(batch_idx);
  }
};

using Variant = flashinfer::DefaultAttention</*custom_mask=*/false, /*sliding_window=*/false,
                                             /*soft_cap=*/false, /*alibi=*/false>;
constexpr auto kCausal = flashinfer::MaskMode::kCausal;
constexpr auto kNoRope = flashinfer::PosEncodingMode::kNone;

template <uint32_t kCtaTileQ>
cudaError_t launch(const PagedParams& p, DTypeO* tmp_v, float* tmp_s, cudaStream_t stream) {
  return flashinfer::BatchPrefillWithPagedKVCacheDispatched<
      /*SAME_KV_STRIDES=*/true, kCtaTileQ, kHeadDim, kHeadDim, kNoRope,
      /*USE_FP16_QK_REDUCTION=*/false, kCausal, /*USE_TOKEN_HEAD_SF=*/false, Variant, PagedParams>(
      p, tmp_v, tmp_s, /*enable_pdl=*/false, stream);
}

}  // namespace

bool supports_head_dim(int head_dim) {
  return head_dim == static_cast<int>(kHeadDim);
}

struct BatchAttention::Impl {
  int num_qo_heads = 0, num_kv_heads = 0, head_dim = 0, page_size = 0;
  void* float_ws = nullptr;
  void* int_ws = nullptr;
  void* int_ws_host = nullptr;
  flashinfer::PrefillPlanInfo plan;
  int batch_size = 0;
  bool planned = false;
};

BatchAttention::BatchAttention(int num_qo_heads, int num_kv_heads, int head_dim, int page_size)
    : impl_(new Impl) {
  impl_->num_qo_heads = num_qo_heads;
  impl_->num_kv_heads = num_kv_heads;
  impl_->head_dim = head_dim;
  impl_->page_size = page_size;
  if (cudaMalloc(&impl_->float_ws, kFloatWorkspace) != cudaSuccess ||
      cudaMalloc(&impl_->int_ws, kIntWorkspace) != cudaSuccess ||
      cudaHostAlloc(&impl_->int_ws_host, kIntWorkspace, cudaHostAllocDefault) != cudaSuccess) {
    cudaGetLastError();
    cudaFree(impl_->float_ws);
    cudaFree(impl_->int_ws);
    cudaFreeHost(impl_->int_ws_host);
    delete impl_;
    impl_ = nullptr;
    throw std::bad_alloc();
  }
}

BatchAttention::~BatchAttention() {
  if (impl_ == nullptr) return;
  cudaFree(impl_->float_ws);
  cudaFree(impl_->int_ws);
  cudaFreeHost(impl_->int_ws_host);
  delete impl_;
}

std::string BatchAttention::plan(const int32_t* qo_indptr, const int32_t* kv_page_indptr,
                                 int batch_size, cudaStream_t stream, int split_pages) {
  Impl& s = *impl_;
  s.planned = false;
  if (s.head_dim != static_cast<int>(kHeadDim)) return "FlashInfer attention: head_dim is not 128";
  // FlashInfer's plan takes mutable pointers but only reads them.
  std::vector<IdType> qo(qo_indptr, qo_indptr + batch_size + 1);
  std::vector<IdType> kv(kv_page_indptr, kv_page_indptr + batch_size + 1);
  try {
    const cudaError_t st = flashinfer::PrefillPlan<IdType>(
        s.float_ws, kFloatWorkspace, s.int_ws, s.int_ws_host, kIntWorkspace, s.plan, qo.data(),
        kv.data(), static_cast<uint32_t>(qo.back()), static_cast<uint32_t>(batch_size),
        static_cast<uint32_t>(s.num_qo_heads), static_cast<uint32_t>(s.num_kv_heads), kHeadDim,
        kHeadDim, static_cast<uint32_t>(s.page_size), /*enable_cuda_graph=*/false,
        /*sizeof_dtype_o=*/2, /*window_left=*/-1, /*fixed_split_size=*/split_pages > 0 ? split_pages : -1,
        /*disable_split_kv=*/split_pages == 0, /*num_colocated_ctas=*/0, /*uniform_q_len=*/0,
        /*fixed_uniform_q_len=*/false, stream);
    if (st != cudaSuccess) return std::string("FlashInfer plan: ") + cudaGetErrorString(st);
  } catch (const std::exception& e) {
    return std::string("FlashInfer plan: ") + e.what();
  }
  s.batch_size = batch_size;
  s.planned = true;
  return {};
}

cudaError_t BatchAttention::run(const RunArgs& a, cudaStream_t stream) {
  Impl& s = *impl_;
  if (!s.planned) return cudaErrorInvalidValue;
  using flashinfer::GetPtrFromBaseOffset;
  const int64_t D = kHeadDim, P = s.page_size, KVH = s.num_kv_heads;
  // Page p holds K at [p, 0] and V at [p, 1]: both are HND pages with the same strides.
  const int64_t strides[3] = {2 * KVH * P * D, P * D, D};  // page, head, token (HND)
  auto* kv = static_cast<DTypeKV*>(a.kv_layer);
  PagedParams p{};
  p.q = static_cast<DTypeQ*>(const_cast<void*>(a.q));
  p.paged_kv = flashinfer::paged_kv_t<DTypeKV, IdType>(
      static_cast<uint32_t>(KVH), static_cast<uint32_t>(P), kHeadDim,
      static_cast<uint32_t>(s.batch_size), flashinfer::QKVLayout::kHND, kv, kv + KVH * P * D,
      strides, const_cast<IdType*>(a.kv_page_ids), const_cast<IdType*>(a.kv_page_indptr),
      const_cast<IdType*>(a.kv_last_page_len));
  p.q_indptr = const_cast<IdType*>(a.qo_indptr);
  p.o = static_cast<DTypeO*>(a.out);
  p.lse = nullptr;
  p.group_size = flashinfer::uint_fastdiv(static_cast<uint32_t>(s.num_qo_heads / s.num_kv_heads));
  p.logits_soft_cap = 0.0;
  p.sm_scale = a.sm_scale;
  p.rope_rcp_scale = 1.0;
  p.rope_rcp_theta = 1.0;
  p.num_qo_heads = static_cast<uint32_t>(s.num_qo_heads);
  p.q_stride_n = static_cast<IdType>(a.q_stride_n);
  p.q_stride_h = static_cast<IdType>(D);
  p.window_left = -1;
  void* ib = s.int_ws;
  p.request_indices = GetPtrFromBaseOffset<IdType>(ib, s.plan.request_indices_offset);
  p.qo_tile_indices = GetPtrFromBaseOffset<IdType>(ib, s.plan.qo_tile_indices_offset);
  p.kv_tile_indices = GetPtrFromBaseOffset<IdType>(ib, s.plan.kv_tile_indices_offset);
  p.o_indptr = GetPtrFromBaseOffset<IdType>(ib, s.plan.o_indptr_offset);
  p.kv_chunk_size_ptr = GetPtrFromBaseOffset<IdType>(ib, s.plan.kv_chunk_size_ptr_offset);
  DTypeO* tmp_v = nullptr;
  float* tmp_s = nullptr;
  if (s.plan.split_kv) {
    p.merge_indptr = GetPtrFromBaseOffset<IdType>(ib, s.plan.merge_indptr_offset);
    tmp_v = GetPtrFromBaseOffset<DTypeO>(s.float_ws, s.plan.v_offset);
    tmp_s = GetPtrFromBaseOffset<float>(s.float_ws, s.plan.s_offset);
  }
  p.padded_batch_size = static_cast<uint32_t>(s.plan.padded_batch_size);
  p.max_total_num_rows = static_cast<uint32_t>(s.plan.total_num_rows);
  p.partition_kv = false;
  try {
    switch (s.plan.cta_tile_q) {
      case 128:
        return launch<128>(p, tmp_v, tmp_s, stream);
      case 64:
        return launch<64>(p, tmp_v, tmp_s, stream);
      case 16:
        return launch<16>(p, tmp_v, tmp_s, stream);
      default:
        return cudaErrorNotSupported;
    }
  } catch (const std::exception&) {
    return cudaErrorLaunchFailure;
  }
}

}  // namespace nf::cuda::fi
