// Paged attention on the GPU against the CPU reference (cpu::paged_attention) over the same
// bf16 cache: decode, prefill and chunked-prefill requests mixed in one batch, page boundaries
// (block_size 16, contexts of 15/16/17), GQA ratios 1, 4, 7, 8 and 16, head_dim 64 and 128,
// and one split and several splits of the context. FlashInfer's batch prefill kernel (the one
// the backend runs when built in) is checked against the same reference on the same batches.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "backends/cpu/ops.h"
#include "backends/cuda/attention.h"
#include "backends/cuda/device.h"
#include "backends/cuda/flashinfer/fi_attention.h"
#include "backends/cuda/launch.h"
#include "kernel_test_util.h"

namespace nf {
namespace {

using cuda::DType;
using cuda::TensorView;
using test::download_bf16;
using test::upload;
using test::upload_bf16;

// Relative Frobenius error budget: bf16 q/k/v and output, fp32 softmax and accumulation.
constexpr double kBf16Budget = 1e-2;
constexpr int kBlockSize = 16;

struct Request {
  int context;     // tokens in the cache after this step
  int new_tokens;  // tokens computed this step: positions [context - new_tokens, context)
};

struct AttnCase {
  int heads, kv_heads, head_dim;
};

// A batch over a shared cache with random contents and random, distinct block ids.
struct Batch {
  int heads = 0, kv_heads = 0, head_dim = 0;
  int64_t tokens = 0, num_blocks = 0, q_stride = 0;
  std::vector<float> q;      // [T, q_stride] (packed qkv rows; only the q heads are read)
  std::vector<float> cache;  // [num_blocks, 2, KVH, 16, D]
  std::vector<int32_t> positions, seq_indptr{0}, block_indptr{0}, block_ids;
  int64_t max_context = 0;
};

Batch make_batch(const AttnCase& c, const std::vector<Request>& reqs, std::mt19937& rng) {
  Batch b;
  b.heads = c.heads;
  b.kv_heads = c.kv_heads;
  b.head_dim = c.head_dim;
  int64_t blocks_needed = 0;
  for (const Request& r : reqs) blocks_needed += (r.context + kBlockSize - 1) / kBlockSize;
  b.num_blocks = blocks_needed + 5;  // some blocks belong to nobody
  std::vector<int32_t> pool(b.num_blocks);
  std::iota(pool.begin(), pool.end(), 0);
  std::shuffle(pool.begin(), pool.end(), rng);
  size_t next = 0;
  for (const Request& r : reqs) {
    const int nb = (r.context + kBlockSize - 1) / kBlockSize;
    for (int i = 0; i < nb; ++i) b.block_ids.push_back(pool[next++]);
    b.block_indptr.push_back(static_cast<int32_t>(b.block_ids.size()));
    for (int p = r.context - r.new_tokens; p < r.context; ++p) b.positions.push_back(p);
    b.seq_indptr.push_back(static_cast<int32_t>(b.positions.size()));
    b.max_context = std::max<int64_t>(b.max_context, r.context);
  }
  b.tokens = static_cast<int64_t>(b.positions.size());
  b.q_stride = static_cast<int64_t>(c.heads + 2 * c.kv_heads) * c.head_dim;
  b.q = test::randn_bf16(b.tokens * b.q_stride, rng);
  b.cache = test::randn_bf16(b.num_blocks * 2 * c.kv_heads * kBlockSize * c.head_dim, rng);
  return b;
}

std::vector<float> reference(const Batch& b, float scale) {
  std::vector<float> cache = b.cache;
  cpu::PagedKv kv{cache.data(), b.num_blocks, b.kv_heads, kBlockSize, b.head_dim};
  cpu::AttentionBatch ab{b.positions, b.seq_indptr, b.block_indptr, b.block_ids};
  std::vector<float> out(b.tokens * b.heads * b.head_dim);
  cpu::paged_attention(test::host_pool(), b.q.data(), b.q_stride, kv, ab, b.heads, scale,
                       out.data());
  return out;
}

// Which kernel run_gpu runs: the plain one (attention.cu), or one of the tensor-core decode
// kernels (decode_attention.cu, launch::kDecodeStreams / kDecodePerRequest) for decode rows.
constexpr int kPlain = -1;
constexpr int kDecodeKernels[] = {cuda::launch::kDecodeStreams, cuda::launch::kDecodePerRequest};
const char* kernel_name(int kernel) {
  return kernel == kPlain                         ? "plain"
         : kernel == cuda::launch::kDecodeStreams ? "tc streams"
                                                  : "tc per request";
}

// Runs `kernel` with `splits` context splits (0: the heuristic) and returns the output;
// sm_count: the SMs the decode kernels may use (0: all).
std::vector<float> run_gpu(const Batch& b, float scale, int splits, int kernel = kPlain,
                           int sm_count = 0) {
  auto d_q = upload_bf16(b.q);
  auto d_cache = upload_bf16(b.cache);
  auto d_pos = upload(b.positions);
  auto d_seq = upload(b.seq_indptr);
  auto d_bind = upload(b.block_indptr);
  auto d_bids = upload(b.block_ids);
  const int64_t out_elems = b.tokens * b.heads * b.head_dim;
  cuda::DeviceBuffer d_out(out_elems * 2);
  test::poison(d_out);
  if (splits == 0) {
    const auto devices = cuda::list_devices();
    splits = cuda::paged_attention_num_splits(b.tokens, b.heads, b.kv_heads, b.max_context,
                                              devices.at(0).multiprocessors);
  }
  const size_t ws_bytes =
      cuda::paged_attention_workspace_bytes(b.tokens, b.heads, b.head_dim, splits);
  cuda::DeviceBuffer d_ws(std::max<size_t>(ws_bytes, 16));
  test::poison(d_ws);
  cuda::PagedAttentionArgs args;
  args.q = TensorView(d_q.data(), DType::kBf16, {b.tokens, b.q_stride});
  args.kv_cache = TensorView(d_cache.data(), DType::kBf16,
                             {b.num_blocks, 2, b.kv_heads, kBlockSize, b.head_dim});
  args.positions = TensorView(d_pos.data(), DType::kI32, {b.tokens});
  args.seq_indptr =
      TensorView(d_seq.data(), DType::kI32, {static_cast<int64_t>(b.seq_indptr.size())});
  args.block_indptr =
      TensorView(d_bind.data(), DType::kI32, {static_cast<int64_t>(b.block_indptr.size())});
  args.block_ids =
      TensorView(d_bids.data(), DType::kI32, {static_cast<int64_t>(b.block_ids.size())});
  args.out = TensorView(d_out.data(), DType::kBf16,
                        {b.tokens, static_cast<int64_t>(b.heads) * b.head_dim});
  args.workspace = TensorView(d_ws.data(), DType::kU8, {static_cast<int64_t>(d_ws.bytes())});
  args.num_heads = b.heads;
  args.scale = scale;
  args.num_splits = splits;
  args.sm_count = sm_count;
  if (kernel != kPlain) {
    args.decode_kernel = kernel;
    cuda::paged_decode_attention(args, nullptr);
  } else {
    cuda::paged_attention(args, nullptr);
  }
  test::sync();
  return download_bf16(d_out, out_elems);
}

const AttnCase kCases[] = {{8, 8, 128}, {32, 8, 128}, {32, 4, 128}, {8, 8, 64},
                           {16, 4, 64}, {32, 4, 64},  {28, 4, 128}, {16, 1, 64}};

class Attention : public test::KernelTest {};

// Both kernels: the plain one and the tensor-core decode kernel (decode_attention.cu).
TEST_F(Attention, DecodeAcrossPageBoundaries) {
  const std::vector<Request> reqs = {{1, 1},  {15, 1}, {16, 1}, {17, 1},  {31, 1},  {32, 1},
                                     {33, 1}, {63, 1}, {64, 1}, {65, 1},  {97, 1},  {129, 1},
                                     {1000, 1}};
  for (const AttnCase& c : kCases) {
    for (int splits : {1, 0, 3}) {
      for (int kernel : {kPlain, kDecodeKernels[0], kDecodeKernels[1]}) {
        SCOPED_TRACE(testing::Message()
                     << "H " << c.heads << " KVH " << c.kv_heads << " D " << c.head_dim
                     << " splits " << splits << " " << kernel_name(kernel));
        const Batch b = make_batch(c, reqs, rng_);
        const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
        test::expect_close(run_gpu(b, scale, splits, kernel), reference(b, scale), kBf16Budget,
                           "decode");
      }
    }
  }
}

TEST_F(Attention, PrefillAndChunkedPrefillMixed) {
  // Whole prompts, chunks of a longer prompt (context beyond the new tokens), and decodes.
  const std::vector<Request> reqs = {{7, 7},  {1, 1},   {97, 97}, {300, 37},
                                     {17, 2}, {16, 16}, {15, 15}, {129, 1}};
  for (const AttnCase& c : kCases) {
    for (int splits : {1, 2, 7}) {
      SCOPED_TRACE(testing::Message() << "H " << c.heads << " KVH " << c.kv_heads << " D "
                                      << c.head_dim << " splits " << splits);
      const Batch b = make_batch(c, reqs, rng_);
      const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
      test::expect_close(run_gpu(b, scale, splits), reference(b, scale), kBf16Budget, "prefill");
    }
  }
}

TEST_F(Attention, LongContexts) {
  for (const AttnCase& c : {AttnCase{8, 1, 128}, AttnCase{8, 8, 64}}) {
    // A 4097-token prompt computed at once, and 4097- and 16385-token decodes.
    const Batch b = make_batch(c, {{4097, 4097}, {4097, 1}, {16385, 1}}, rng_);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    const auto ref = reference(b, scale);
    for (int splits : {1, 0}) {
      SCOPED_TRACE(testing::Message() << "H " << c.heads << " KVH " << c.kv_heads << " D "
                                      << c.head_dim << " splits " << splits);
      test::expect_close(run_gpu(b, scale, splits), ref, kBf16Budget, "long");
    }
  }
}

TEST_F(Attention, PeakedScoresStayFinite) {
  // Large logits (scale 1): softmax must stay stable with the online rescaling.
  const AttnCase c{32, 8, 128};
  Batch b = make_batch(c, {{200, 3}, {1000, 1}}, rng_);
  for (auto& x : b.q) x = test::bf16_round(x * 4.0f);
  for (int splits : {1, 4}) {
    SCOPED_TRACE(testing::Message() << "splits " << splits);
    test::expect_close(run_gpu(b, 1.0f, splits), reference(b, 1.0f), kBf16Budget, "peaked");
  }
}

TEST_F(Attention, PositionBeyondBlockTableGivesNan) {
  const AttnCase c{8, 8, 64};
  const int64_t row = static_cast<int64_t>(c.heads) * c.head_dim;
  // Row `bad` all NaN, the others finite.
  auto expect_nan_row = [&](const Batch& b, int kernel, int64_t bad) {
    for (int splits : {1, 3}) {
      const auto out = run_gpu(b, 0.125f, splits, kernel);
      for (int64_t t = 0; t < b.tokens; ++t) {
        const auto first = out.begin() + t * row;
        const size_t nans =
            std::count_if(first, first + row, [](float x) { return std::isnan(x); });
        EXPECT_EQ(nans, t == bad ? static_cast<size_t>(row) : 0u)
            << "token " << t << " splits " << splits << " " << kernel_name(kernel);
      }
    }
  };
  Batch b = make_batch(c, {{20, 2}, {5, 1}}, rng_);
  b.positions[1] = 40;  // the first request has 2 blocks (32 slots)
  expect_nan_row(b, kPlain, 1);
  // The tensor-core decode kernel: decode rows, the second one past its single block.
  Batch d = make_batch(c, {{20, 1}, {5, 1}}, rng_);
  d.positions[1] = 40;
  for (int kernel : kDecodeKernels) expect_nan_row(d, kernel, 1);
}

// The tensor-core decode kernel (also in DecodeAcrossPageBoundaries): long contexts, peaked
// scores, and a steady decode step.
TEST_F(Attention, TensorCoreDecodeLongContextsAndPeakedScores) {
  for (const AttnCase& c : {AttnCase{8, 1, 128}, AttnCase{32, 8, 128}, AttnCase{8, 8, 64}}) {
    const Batch b = make_batch(c, {{4097, 1}, {16385, 1}, {2, 1}}, rng_);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    const auto ref = reference(b, scale);
    for (int splits : {1, 0, 64})
      for (int kernel : kDecodeKernels) {
        SCOPED_TRACE(testing::Message()
                     << "H " << c.heads << " KVH " << c.kv_heads << " D " << c.head_dim
                     << " splits " << splits << " " << kernel_name(kernel));
        test::expect_close(run_gpu(b, scale, splits, kernel), ref, kBf16Budget, "tc long");
      }
  }
  const AttnCase c{32, 8, 128};
  Batch b = make_batch(c, {{200, 1}, {1000, 1}}, rng_);
  for (auto& x : b.q) x = test::bf16_round(x * 4.0f);
  for (int splits : {1, 4})
    for (int kernel : kDecodeKernels)
      test::expect_close(run_gpu(b, 1.0f, splits, kernel), reference(b, 1.0f), kBf16Budget,
                         "tc peaked");
}

TEST_F(Attention, TensorCoreDecodeOnlyBatch) {
  std::vector<Request> reqs;
  for (int i = 0; i < 200; ++i) reqs.push_back({1 + (i * 37) % 2000, 1});
  for (const AttnCase& c : {AttnCase{32, 8, 128}, AttnCase{28, 4, 128}}) {
    SCOPED_TRACE(testing::Message() << "H " << c.heads << " KVH " << c.kv_heads);
    const Batch b = make_batch(c, reqs, rng_);
    const float scale = 1.0f / std::sqrt(128.0f);
    const auto ref = reference(b, scale);
    for (int kernel : kDecodeKernels)
      test::expect_close(run_gpu(b, scale, 0, kernel), ref, kBf16Budget, kernel_name(kernel));
  }
}

// The streaming kernel on few SMs (each warp walks many items, its copies running ahead across
// item boundaries), with NaN in every cache row no request owns: a block's rows past its
// request's context, and whole blocks, must never reach the output (P = 0 times NaN is NaN).
TEST_F(Attention, TensorCoreDecodeStreamsOnFewSmsIgnoreRowsPastTheContext) {
  std::vector<Request> reqs;
  for (int i = 0; i < 90; ++i) reqs.push_back({1 + (i * 53) % 700, 1});
  for (const AttnCase& c : {AttnCase{32, 8, 128}, AttnCase{9, 3, 64}, AttnCase{16, 1, 128}}) {
    Batch b = make_batch(c, reqs, rng_);
    const auto ref = reference(b, 0.1f);
    // NaN in the unused rows of each request's last block, and in the blocks nobody owns.
    const int64_t row = c.head_dim, block = 2LL * c.kv_heads * kBlockSize * row;
    std::vector<bool> owned(static_cast<size_t>(b.num_blocks), false);
    for (size_t r = 0; r + 1 < b.block_indptr.size(); ++r) {
      for (int32_t k = b.block_indptr[r]; k < b.block_indptr[r + 1]; ++k)
        owned[static_cast<size_t>(b.block_ids[static_cast<size_t>(k)])] = true;
      const int ctx = b.positions[r] + 1;
      const int32_t last = b.block_ids[static_cast<size_t>(b.block_indptr[r + 1] - 1)];
      for (int pos = ctx % kBlockSize; pos != 0 && pos < kBlockSize; ++pos)
        for (int kvh = 0; kvh < 2 * c.kv_heads; ++kvh)
          std::fill_n(b.cache.begin() + last * block + (kvh * kBlockSize + pos) * row, row, NAN);
    }
    for (int64_t k = 0; k < b.num_blocks; ++k)
      if (!owned[static_cast<size_t>(k)]) std::fill_n(b.cache.begin() + k * block, block, NAN);
    for (int sm_count : {1, 3})
      for (int splits : {1, 2}) {
        SCOPED_TRACE(testing::Message()
                     << "H " << c.heads << " KVH " << c.kv_heads << " D " << c.head_dim << " SMs "
                     << sm_count << " splits " << splits);
        test::expect_close(run_gpu(b, 0.1f, splits, cuda::launch::kDecodeStreams, sm_count), ref,
                           kBf16Budget, "tc streams");
      }
  }
}

#ifdef NANOFLOW_HAVE_FLASHINFER
// FlashInfer over the same batch: one plan, one run, as the backend does per layer.
std::vector<float> run_flashinfer(const Batch& b, float scale) {
  const int B = static_cast<int>(b.seq_indptr.size()) - 1;
  std::vector<int32_t> last(B);
  for (int r = 0; r < B; ++r) {
    const int ctx = b.positions[b.seq_indptr[r + 1] - 1] + 1;
    const int pages = b.block_indptr[r + 1] - b.block_indptr[r];
    last[r] = ctx - (pages - 1) * kBlockSize;
  }
  auto d_q = upload_bf16(b.q);
  auto d_cache = upload_bf16(b.cache);
  auto d_seq = upload(b.seq_indptr);
  auto d_bind = upload(b.block_indptr);
  auto d_bids = upload(b.block_ids);
  auto d_last = upload(last);
  const int64_t out_elems = b.tokens * b.heads * b.head_dim;
  cuda::DeviceBuffer d_out(out_elems * 2);
  test::poison(d_out);
  cuda::fi::BatchAttention attn(b.heads, b.kv_heads, b.head_dim, kBlockSize);
  const std::string err = attn.plan(b.seq_indptr.data(), b.block_indptr.data(), B, nullptr);
  EXPECT_EQ(err, "");
  cuda::fi::BatchAttention::RunArgs a;
  a.q = d_q.data();
  a.q_stride_n = b.q_stride;
  a.kv_layer = d_cache.data();
  a.qo_indptr = d_seq.as<int32_t>();
  a.kv_page_indptr = d_bind.as<int32_t>();
  a.kv_page_ids = d_bids.as<int32_t>();
  a.kv_last_page_len = d_last.as<int32_t>();
  a.out = d_out.data();
  a.sm_scale = scale;
  EXPECT_EQ(attn.run(a, nullptr), cudaSuccess);
  test::sync();
  return download_bf16(d_out, out_elems);
}

// GQA ratios 1, 4, 7, 8 at head_dim 128 (the instantiated kernel).
const AttnCase kFiCases[] = {{8, 8, 128}, {32, 8, 128}, {32, 4, 128}, {28, 4, 128}, {8, 1, 128}};

TEST_F(Attention, FlashInferDecodePrefillMixed) {
  // Decodes at and around page boundaries, whole prompts of 1, 7, 97 and 1000 tokens, and
  // chunks of longer prompts, in one batch.
  const std::vector<Request> reqs = {{1, 1},   {15, 1},  {16, 1},    {17, 1},   {33, 1},
                                     {97, 1},  {1000, 1}, {7, 7},    {97, 97},  {1000, 1000},
                                     {300, 37}, {17, 2},  {16, 16},  {129, 1}};
  for (const AttnCase& c : kFiCases) {
    SCOPED_TRACE(testing::Message() << "H " << c.heads << " KVH " << c.kv_heads);
    const Batch b = make_batch(c, reqs, rng_);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    test::expect_close(run_flashinfer(b, scale), reference(b, scale), kBf16Budget, "flashinfer");
  }
}

TEST_F(Attention, FlashInferLongContexts) {
  // A 4097-token prompt at once and 4097- and 16385-token decodes (split-KV paths).
  for (const AttnCase& c : {AttnCase{8, 1, 128}, AttnCase{32, 8, 128}}) {
    SCOPED_TRACE(testing::Message() << "H " << c.heads << " KVH " << c.kv_heads);
    const Batch b = make_batch(c, {{4097, 4097}, {4097, 1}, {16385, 1}}, rng_);
    const float scale = 1.0f / std::sqrt(static_cast<float>(c.head_dim));
    test::expect_close(run_flashinfer(b, scale), reference(b, scale), kBf16Budget, "long");
  }
}

TEST_F(Attention, FlashInferDecodeOnlyBatch) {
  // Only decodes, many requests: the shape of a steady decode step.
  std::vector<Request> reqs;
  for (int i = 0; i < 200; ++i) reqs.push_back({1 + (i * 37) % 2000, 1});
  const AttnCase c{32, 8, 128};
  const Batch b = make_batch(c, reqs, rng_);
  const float scale = 1.0f / std::sqrt(128.0f);
  test::expect_close(run_flashinfer(b, scale), reference(b, scale), kBf16Budget, "decode");
}
#endif  // NANOFLOW_HAVE_FLASHINFER

}  // namespace
}  // namespace nf
