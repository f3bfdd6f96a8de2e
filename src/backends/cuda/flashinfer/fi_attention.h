// Batch attention over our paged KV cache through FlashInfer's FA2 batch-prefill kernel (causal,
// bf16, head_dim 128), for prefill chunks and decode rows alike in one launch: for GQA the
// prefill kernel's tensor-core path is also FlashInfer's recommended decode kernel.
// The kernel library is header-only (third_party/flashinfer, fetched by
// scripts/fetch_third_party.sh); this target compiles only when the headers are present
// (NANOFLOW_HAVE_FLASHINFER). Free of fmt and of FlashInfer's headers, so anyone may include it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace nf::cuda::fi {

// Head dims with an instantiated kernel.
bool supports_head_dim(int head_dim);

// Owns FlashInfer's plan workspaces (device float/int buffers and the page-locked int buffer).
// plan() runs once per forward on the host (the split of every request into CTA tiles and KV
// chunks) and copies the plan to the device on `stream`; run() is then launched once per layer.
// Not thread-safe; plan() must not be called while a run() of the previous plan is in flight
// on another stream (the backend synchronizes at the end of every forward).
class BatchAttention {
 public:
  BatchAttention(int num_qo_heads, int num_kv_heads, int head_dim, int page_size);
  ~BatchAttention();
  BatchAttention(const BatchAttention&) = delete;
  BatchAttention& operator=(const BatchAttention&) = delete;

  // qo_indptr [B+1]: query rows of request b are [qo_indptr[b], qo_indptr[b+1]), the last
  // rows of its context; kv_page_indptr [B+1]: its pages in the page table. Host pointers.
  // split_pages > 0 splits every request's KV into chunks of that many pages (merged after);
  // 0 never splits; -1 lets FlashInfer's heuristic decide. Returns an empty string, or the error.
  std::string plan(const int32_t* qo_indptr, const int32_t* kv_page_indptr, int batch_size,
                   cudaStream_t stream, int split_pages = -1);

  struct RunArgs {
    const void* q = nullptr;          // bf16 [T, >= H*D] with row stride q_stride_n elements
    int64_t q_stride_n = 0;
    void* kv_layer = nullptr;         // bf16 [num_pages, 2, KVH, page_size, D]: K then V per page
    const int32_t* qo_indptr = nullptr;       // device [B+1]
    const int32_t* kv_page_indptr = nullptr;  // device [B+1]
    const int32_t* kv_page_ids = nullptr;     // device [kv_page_indptr[B]]
    const int32_t* kv_last_page_len = nullptr;  // device [B], in 1..page_size
    void* out = nullptr;              // bf16 [T, H*D]
    float sm_scale = 0.0f;
  };
  // Returns cudaSuccess or the launch error.
  cudaError_t run(const RunArgs& args, cudaStream_t stream);

 private:
  struct Impl;
  Impl* impl_ = nullptr;
};

}  // namespace nf::cuda::fi
