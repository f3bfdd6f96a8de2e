#include "backends/cuda/attention.h"

#include <cuda.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/launch.h"
#include "common/status.h"

namespace nf::cuda {

int paged_attention_num_splits(int64_t tokens, int num_heads, int num_kv_heads, int64_t max_context,
                               int sm_count) {
  NF_CHECK(num_kv_heads > 0 && num_heads % num_kv_heads == 0 && sm_count > 0,
           "paged_attention_num_splits: {} heads, {} kv heads, {} SMs", num_heads, num_kv_heads,
           sm_count);
  const int64_t group = num_heads / num_kv_heads;
  const int64_t chunks = (group + launch::kAttentionMaxGroup - 1) / launch::kAttentionMaxGroup;
  const int64_t ctas = std::max<int64_t>(1, tokens * num_kv_heads * chunks);
  // About 8 CTAs per SM (4 resident, and a second wave to even out the tails).
  const int64_t target = 8 * static_cast<int64_t>(sm_count);
  if (ctas >= target) return 1;
  // At least 8 tiles of keys per split, so the combine pass stays cheap.
  const int64_t by_context = max_context / (8 * launch::kAttentionTile);
  const int64_t splits =
      std::min({(target + ctas - 1) / ctas, by_context, int64_t{launch::kAttentionMaxSplits}});
  return static_cast<int>(std::max<int64_t>(1, splits));
}

size_t paged_attention_workspace_bytes(int64_t tokens, int num_heads, int head_dim,
                                       int num_splits) {
  if (num_splits <= 1) return 0;
  return static_cast<size_t>(
             launch::attention_workspace_floats(tokens, num_heads, head_dim, num_splits)) *
         sizeof(float);
}

namespace {

// Checks the arguments of `op` and turns them into the raw launch (tokens 0: nothing to run).
launch::AttentionLaunch attention_launch(const PagedAttentionArgs& args, const char* op) {
  check_tensor(args.q, op, "q", DType::kBf16, 2);
  check_tensor(args.kv_cache, op, "kv_cache", DType::kBf16, 5);
  check_tensor(args.positions, op, "positions", DType::kI32, 1);
  check_tensor(args.seq_indptr, op, "seq_indptr", DType::kI32, 1);
  check_tensor(args.block_indptr, op, "block_indptr", DType::kI32, 1);
  check_tensor(args.block_ids, op, "block_ids", DType::kI32, 1);
  check_tensor(args.out, op, "out", DType::kBf16, 2);
  const TensorView& kv = args.kv_cache;
  const int64_t tokens = args.q.size(0);
  const int kv_heads = static_cast<int>(kv.size(2));
  const int head_dim = static_cast<int>(kv.size(4));
  const int heads = args.num_heads;
  NF_CHECK(head_dim == 64 || head_dim == 128, "{}: head_dim {} (64 and 128 are built)", op,
           head_dim);
  check_dim(kv, op, "kv_cache", 1, 2);
  NF_CHECK(kv_heads > 0 && heads > 0 && heads % kv_heads == 0,
           "{}: {} query heads over {} kv heads", op, heads, kv_heads);
  NF_CHECK(kv.size(3) > 0, "{}: kv_cache {} has empty blocks", op, kv.str());
  NF_CHECK(args.q.size(1) >= static_cast<int64_t>(heads) * head_dim,
           "{}: q {} is narrower than {} heads of {}", op, args.q.str(), heads, head_dim);
  check_dim(args.positions, op, "positions", 0, tokens);
  check_dim(args.out, op, "out", 0, tokens);
  check_dim(args.out, op, "out", 1, static_cast<int64_t>(heads) * head_dim);
  const int64_t num_seqs = args.seq_indptr.size(0) - 1;
  NF_CHECK(num_seqs >= 1 || tokens == 0, "{}: seq_indptr {} holds no request", op,
           args.seq_indptr.str());
  check_dim(args.block_indptr, op, "block_indptr", 0, num_seqs + 1);
  NF_CHECK(args.scale > 0.0f, "{}: scale {} must be positive", op, args.scale);
  NF_CHECK(args.num_splits >= 1 && args.num_splits <= launch::kAttentionMaxSplits,
           "{}: num_splits {} outside [1, {}]", op, args.num_splits, launch::kAttentionMaxSplits);
  NF_CHECK(tokens <= INT32_MAX && num_seqs <= INT32_MAX &&
               static_cast<int64_t>(kv_heads) * heads <= 65535,
           "{}: too many tokens ({}), requests ({}) or heads ({})", op, tokens, num_seqs, heads);
  NF_CHECK(reinterpret_cast<uintptr_t>(kv.data) % 16 == 0, "{}: kv_cache must be 16-byte aligned",
           op);
  const size_t ws = paged_attention_workspace_bytes(tokens, heads, head_dim, args.num_splits);
  if (ws > 0) {
    check_tensor(args.workspace, op, "workspace", DType::kU8, 1);
    NF_CHECK(
        args.workspace.bytes() >= ws && reinterpret_cast<uintptr_t>(args.workspace.data) % 16 == 0,
        "{}: workspace {} (aligned to 16 bytes) needs {} bytes for {} splits", op,
        args.workspace.str(), ws, args.num_splits);
  }
  launch::AttentionLaunch a;
  a.q = args.q.ptr<launch::bf16>();
  a.q_stride = args.q.size(1);
  a.kv = kv.ptr<launch::bf16>();
  a.kv_heads = kv_heads;
  a.block_size = kv.size(3);
  a.positions = args.positions.ptr<int32_t>();
  a.seq_indptr = args.seq_indptr.ptr<int32_t>();
  a.block_indptr = args.block_indptr.ptr<int32_t>();
  a.block_ids = args.block_ids.ptr<int32_t>();
  a.num_seqs = static_cast<int>(num_seqs);
  a.out = args.out.ptr<launch::bf16>();
  a.tokens = tokens;
  a.num_heads = heads;
  a.head_dim = head_dim;
  a.scale = args.scale;
  a.num_splits = args.num_splits;
  a.workspace = ws > 0 ? args.workspace.ptr<float>() : nullptr;
  a.num_blocks = kv.size(0);
  return a;
}

// The TMA descriptor of one layer's kv pool for the streaming decode kernel, made once per pool
// (the driver call takes microseconds) and kept: pools live as long as the engine.
//
// One box is one block's K and V rows of one kv head, as [K|V][half][row][64 dims]: the head's
// 128-byte halves of a row are split apart, so that with the 128-byte swizzle the rows of a
// half are conflict-free for ldmatrix (decode_attention.cu addresses them so).
struct KvMap {
  alignas(64) CUtensorMap map;
};
const KvMap& kv_tensor_map(const launch::AttentionLaunch& a) {
  using Encode = decltype(&cuTensorMapEncodeTiled);
  static const auto encode = reinterpret_cast<Encode>(driver_entry_point("cuTensorMapEncodeTiled"));
  NF_CHECK(encode != nullptr,
           "paged_decode_attention: the CUDA driver lacks cuTensorMapEncodeTiled (TMA); use "
           "the per-request kernel");
  static std::mutex mu;
  static std::map<std::tuple<const void*, int64_t, int, int>, KvMap> maps;
  const std::lock_guard lock(mu);
  const auto key = std::tuple{static_cast<const void*>(a.kv), a.num_blocks, a.kv_heads, a.head_dim};
  auto it = maps.find(key);
  if (it != maps.end()) return it->second;
  const auto D = static_cast<cuuint64_t>(a.head_dim), page = static_cast<cuuint64_t>(a.block_size);
  const cuuint64_t dims[5] = {64, page, D / 64, static_cast<cuuint64_t>(a.kv_heads),
                              2 * static_cast<cuuint64_t>(a.num_blocks)};
  const cuuint64_t strides[4] = {D * 2, 128, page * D * 2,
                                 static_cast<cuuint64_t>(a.kv_heads) * page * D * 2};
  const cuuint32_t box[5] = {64, static_cast<cuuint32_t>(page), static_cast<cuuint32_t>(D / 64), 1,
                             2};
  const cuuint32_t element_strides[5] = {1, 1, 1, 1, 1};
  KvMap m;
  std::memset(&m, 0, sizeof m);
  const CUresult r = encode(&m.map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 5,
                            const_cast<launch::bf16*>(a.kv), dims, strides, box, element_strides,
                            CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  NF_CHECK(r == CUDA_SUCCESS, "paged_decode_attention: cuTensorMapEncodeTiled failed ({})",
           static_cast<int>(r));
  return maps.emplace(key, m).first->second;
}

}  // namespace

void paged_attention(const PagedAttentionArgs& args, cudaStream_t stream) {
  const launch::AttentionLaunch a = attention_launch(args, "paged_attention");
  if (a.tokens > 0) launch::paged_attention(a, stream);
}

void paged_decode_attention(const PagedAttentionArgs& args, cudaStream_t stream) {
  constexpr const char* op = "paged_decode_attention";
  launch::AttentionLaunch a = attention_launch(args, op);
  NF_CHECK(a.tokens == a.num_seqs, "{}: {} tokens for {} requests (decode rows only: one each)",
           op, a.tokens, a.num_seqs);
  NF_CHECK(a.block_size == launch::kDecodePage, "{}: blocks of {} tokens ({} is built)", op,
           a.block_size, launch::kDecodePage);
  NF_CHECK(a.num_heads / a.kv_heads <= launch::kDecodeMaxGroup,
           "{}: {} query heads per kv head (at most {})", op, a.num_heads / a.kv_heads,
           launch::kDecodeMaxGroup);
  NF_CHECK(a.q_stride % 8 == 0 && reinterpret_cast<uintptr_t>(a.q) % 16 == 0,
           "{}: q rows must be 16-byte aligned", op);
  NF_CHECK(args.decode_kernel == launch::kDecodeStreams ||
               args.decode_kernel == launch::kDecodePerRequest,
           "{}: decode_kernel {} (0: streams, 1: per request)", op, args.decode_kernel);
  NF_CHECK(args.sm_count >= 0, "{}: sm_count {}", op, args.sm_count);
  a.sm_count = args.sm_count;
  a.decode_kernel = args.decode_kernel;
  NF_CHECK(args.stream_debug >= 0 && args.stream_debug <= 2, "{}: stream_debug {}", op,
           args.stream_debug);
  a.stream_ring = args.stream_ring;
  a.stream_debug = args.stream_debug;
  if (a.tokens == 0) return;
  const KvMap* map = a.decode_kernel == launch::kDecodeStreams ? &kv_tensor_map(a) : nullptr;
  launch::paged_decode_attention(a, map, stream);
}

}  // namespace nf::cuda
