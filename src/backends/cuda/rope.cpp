#include "backends/cuda/rope.h"

#include "backends/cuda/launch.h"
#include "common/status.h"

namespace nf::cuda {

void rope_kv_write(const RopeKvShape& shape, const TensorView& qkv, const TensorView& positions,
                   const TensorView& inv_freq, const TensorView& kv_cache,
                   const TensorView& slot_mapping, cudaStream_t stream) {
  constexpr const char* op = "rope_kv_write";
  const int H = shape.num_heads, KVH = shape.num_kv_heads, D = shape.head_dim;
  NF_CHECK(H > 0 && KVH > 0 && H % KVH == 0, "{}: {} query heads over {} kv heads", op, H, KVH);
  NF_CHECK(D > 0 && D % 16 == 0 && D <= launch::kRopeMaxHeadDim,
           "{}: head_dim {} must be a multiple of 16 and at most {}", op, D,
           launch::kRopeMaxHeadDim);
  check_tensor(qkv, op, "qkv", DType::kBf16, 2);
  check_tensor(positions, op, "positions", DType::kI32, 1);
  check_tensor(inv_freq, op, "inv_freq", DType::kF32, 1);
  check_tensor(kv_cache, op, "kv_cache", DType::kBf16, 5);
  check_tensor(slot_mapping, op, "slot_mapping", DType::kI64, 1);
  const int64_t tokens = qkv.size(0);
  check_dim(qkv, op, "qkv", 1, static_cast<int64_t>(H + 2 * KVH) * D);
  check_dim(positions, op, "positions", 0, tokens);
  check_dim(slot_mapping, op, "slot_mapping", 0, tokens);
  check_dim(inv_freq, op, "inv_freq", 0, D / 2);
  check_dim(kv_cache, op, "kv_cache", 1, 2);
  check_dim(kv_cache, op, "kv_cache", 2, KVH);
  check_dim(kv_cache, op, "kv_cache", 4, D);
  NF_CHECK(reinterpret_cast<uintptr_t>(qkv.data) % 16 == 0 &&
               reinterpret_cast<uintptr_t>(kv_cache.data) % 16 == 0,
           "{}: qkv and kv_cache must be 16-byte aligned", op);
  NF_CHECK(tokens <= INT32_MAX, "{}: {} tokens", op, tokens);
  const int64_t block_size = kv_cache.size(3);
  NF_CHECK(block_size > 0, "{}: kv_cache {} has empty blocks", op, kv_cache.str());
  if (tokens == 0) return;
  launch::rope_kv_write(qkv.ptr<launch::bf16>(), positions.ptr<int32_t>(), inv_freq.ptr<float>(),
                        kv_cache.ptr<launch::bf16>(), slot_mapping.ptr<int64_t>(), tokens, H, KVH,
                        D, block_size, kv_cache.size(0) * block_size, stream);
}

}  // namespace nf::cuda
