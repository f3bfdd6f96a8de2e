// Timings of the kernels at Llama-3-8B serving shapes, for the GPU machine. Disabled by default
// (they check nothing); run them with
//   test_kernels --gtest_also_run_disabled_tests --gtest_filter='*Bench*'
#include <algorithm>
#include <numeric>

#include "backends/cuda/activation.h"
#include "backends/cuda/attention.h"
#include "backends/cuda/device.h"
#include "backends/cuda/gemm.h"
#include "backends/cuda/norm.h"
#include "backends/cuda/rope.h"
#include "backends/cuda/sampling.h"
#include "kernel_test_util.h"

namespace nf {
namespace {

using cuda::DeviceBuffer;
using cuda::DType;
using cuda::TensorView;

// Mean milliseconds of fn over `iters` launches, after 3 warm-up launches.
template <typename Fn>
double time_ms(Fn&& fn, int iters = 20) {
  for (int i = 0; i < 3; ++i) fn();
  cudaEvent_t a, b;
  NF_CUDA_CHECK(cudaEventCreate(&a));
  NF_CUDA_CHECK(cudaEventCreate(&b));
  NF_CUDA_CHECK(cudaEventRecord(a));
  for (int i = 0; i < iters; ++i) fn();
  NF_CUDA_CHECK(cudaEventRecord(b));
  NF_CUDA_CHECK(cudaEventSynchronize(b));
  float ms = 0;
  NF_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
  NF_CUDA_CHECK(cudaEventDestroy(a));
  NF_CUDA_CHECK(cudaEventDestroy(b));
  return ms / iters;
}

DeviceBuffer random_bf16(int64_t n, std::mt19937& rng) {
  return test::upload_bf16(test::randn_bf16(static_cast<size_t>(n), rng));
}

class Bench : public test::KernelTest {};

// Decode attention: `reqs` requests of `ctx` context, one new token each, 32/8 heads of 128.
void bench_decode(int reqs, int ctx, std::mt19937& rng) {
  const int H = 32, KVH = 8, D = 128, bs = 16;
  const int nb_per = (ctx + bs - 1) / bs;
  const int64_t num_blocks = static_cast<int64_t>(reqs) * nb_per;
  std::vector<int32_t> positions(reqs, ctx - 1), seq(reqs + 1), bind(reqs + 1), bids(num_blocks);
  std::iota(seq.begin(), seq.end(), 0);
  for (int r = 0; r <= reqs; ++r) bind[r] = r * nb_per;
  std::iota(bids.begin(), bids.end(), 0);
  std::shuffle(bids.begin(), bids.end(), rng);
  DeviceBuffer q = random_bf16(static_cast<int64_t>(reqs) * H * D, rng);
  DeviceBuffer cache(num_blocks * 2 * KVH * bs * D * 2);
  NF_CUDA_CHECK(cudaMemset(cache.data(), 0x3c, cache.bytes()));
  auto d_pos = test::upload(positions), d_seq = test::upload(seq), d_bind = test::upload(bind),
       d_bids = test::upload(bids);
  DeviceBuffer out(static_cast<int64_t>(reqs) * H * D * 2);
  const int splits = cuda::paged_attention_num_splits(reqs, H, KVH, ctx,
                                                      cuda::list_devices().at(0).multiprocessors);
  DeviceBuffer ws(std::max<size_t>(16, cuda::paged_attention_workspace_bytes(reqs, H, D, splits)));
  cuda::PagedAttentionArgs a;
  a.q = TensorView(q.data(), DType::kBf16, {reqs, H * D});
  a.kv_cache = TensorView(cache.data(), DType::kBf16, {num_blocks, 2, KVH, bs, D});
  a.positions = TensorView(d_pos.data(), DType::kI32, {reqs});
  a.seq_indptr = TensorView(d_seq.data(), DType::kI32, {reqs + 1});
  a.block_indptr = TensorView(d_bind.data(), DType::kI32, {reqs + 1});
  a.block_ids = TensorView(d_bids.data(), DType::kI32, {num_blocks});
  a.out = TensorView(out.data(), DType::kBf16, {reqs, H * D});
  a.workspace = TensorView(ws.data(), DType::kU8, {static_cast<int64_t>(ws.bytes())});
  a.num_heads = H;
  a.scale = 0.088f;
  a.num_splits = splits;
  const double ms = time_ms([&] { cuda::paged_attention(a, nullptr); });
  const double bytes = static_cast<double>(reqs) * ctx * KVH * D * 2 * 2;
  std::printf("decode attention %d x %d (splits %d): %.3f ms, %.2f TB/s of KV\n", reqs, ctx, splits,
              ms, bytes / ms / 1e9);
}

TEST_F(Bench, DISABLED_Attention) {
  bench_decode(683, 1280, rng_);
  bench_decode(256, 4096, rng_);
  bench_decode(64, 16384, rng_);
  bench_decode(8, 16384, rng_);
  // Causal prefill of one 2048-token prompt.
  const int H = 32, KVH = 8, D = 128, bs = 16, T = 2048;
  const int64_t nb = T / bs;
  std::vector<int32_t> positions(T), seq{0, T}, bind{0, static_cast<int32_t>(nb)}, bids(nb);
  std::iota(positions.begin(), positions.end(), 0);
  std::iota(bids.begin(), bids.end(), 0);
  DeviceBuffer q = random_bf16(static_cast<int64_t>(T) * H * D, rng_);
  DeviceBuffer cache = random_bf16(nb * 2 * KVH * bs * D, rng_);
  auto d_pos = test::upload(positions), d_seq = test::upload(seq), d_bind = test::upload(bind),
       d_bids = test::upload(bids);
  DeviceBuffer out(static_cast<int64_t>(T) * H * D * 2);
  cuda::PagedAttentionArgs a;
  a.q = TensorView(q.data(), DType::kBf16, {T, H * D});
  a.kv_cache = TensorView(cache.data(), DType::kBf16, {nb, 2, KVH, bs, D});
  a.positions = TensorView(d_pos.data(), DType::kI32, {T});
  a.seq_indptr = TensorView(d_seq.data(), DType::kI32, {2});
  a.block_indptr = TensorView(d_bind.data(), DType::kI32, {2});
  a.block_ids = TensorView(d_bids.data(), DType::kI32, {nb});
  a.out = TensorView(out.data(), DType::kBf16, {T, H * D});
  a.num_heads = H;
  a.scale = 0.088f;
  const double ms = time_ms([&] { cuda::paged_attention(a, nullptr); }, 5);
  const double flops = 4.0 * H * D * (static_cast<double>(T) * (T + 1) / 2);
  std::printf("prefill attention %d tokens: %.3f ms, %.1f TFLOP/s\n", T, ms, flops / ms / 1e9);
}

TEST_F(Bench, DISABLED_Elementwise) {
  const int64_t T = 2048, hidden = 4096, inter = 14336;
  DeviceBuffer x = random_bf16(T * hidden, rng_), res = random_bf16(T * hidden, rng_),
               w = random_bf16(hidden, rng_), out(T * hidden * 2);
  double ms = time_ms([&] {
    cuda::add_rms_norm(TensorView(x.data(), DType::kBf16, {T, hidden}),
                       TensorView(res.data(), DType::kBf16, {T, hidden}),
                       TensorView(w.data(), DType::kBf16, {hidden}),
                       TensorView(out.data(), DType::kBf16, {T, hidden}), 1e-5f, nullptr);
  });
  std::printf("add_rms_norm %ldx%ld: %.4f ms, %.2f TB/s\n", T, hidden, ms,
              8.0 * T * hidden / ms / 1e9);
  DeviceBuffer gu = random_bf16(T * 2 * inter, rng_), act(T * inter * 2);
  ms = time_ms([&] {
    cuda::silu_and_mul(TensorView(gu.data(), DType::kBf16, {T, 2 * inter}),
                       TensorView(act.data(), DType::kBf16, {T, inter}), nullptr);
  });
  std::printf("silu_and_mul %ldx%ld: %.4f ms, %.2f TB/s\n", T, inter, ms,
              6.0 * T * inter / ms / 1e9);
  const int H = 32, KVH = 8, D = 128;
  const int64_t row = (H + 2 * KVH) * D, nb = T / 16 + 1;
  DeviceBuffer qkv = random_bf16(T * row, rng_), cache(nb * 2 * KVH * 16 * D * 2);
  std::vector<int32_t> pos(T);
  std::iota(pos.begin(), pos.end(), 0);
  std::vector<int64_t> slots(T);
  std::iota(slots.begin(), slots.end(), 0);
  std::vector<float> freq(D / 2, 0.01f);
  auto d_pos = test::upload(pos), d_slots = test::upload(slots), d_freq = test::upload(freq);
  ms = time_ms([&] {
    cuda::rope_kv_write({H, KVH, D}, TensorView(qkv.data(), DType::kBf16, {T, row}),
                        TensorView(d_pos.data(), DType::kI32, {T}),
                        TensorView(d_freq.data(), DType::kF32, {D / 2}),
                        TensorView(cache.data(), DType::kBf16, {nb, 2, KVH, 16, D}),
                        TensorView(d_slots.data(), DType::kI64, {T}), nullptr);
  });
  std::printf("rope_kv_write %ld tokens: %.4f ms\n", T, ms);
}

TEST_F(Bench, DISABLED_Gemm) {
  cuda::Gemm gemm;
  const int64_t shapes[][3] = {{2048, 6144, 4096},
                               {2048, 4096, 4096},
                               {2048, 28672, 4096},
                               {2048, 4096, 14336},
                               {256, 128256, 4096}};
  for (const auto& s : shapes) {
    const int64_t m = s[0], n = s[1], k = s[2];
    DeviceBuffer x = random_bf16(m * k, rng_), w = random_bf16(n * k, rng_), y(m * n * 2);
    cuda::GemmArgs args;
    args.x = TensorView(x.data(), DType::kBf16, {m, k});
    args.w = TensorView(w.data(), DType::kBf16, {n, k});
    args.y = TensorView(y.data(), DType::kBf16, {m, n});
    const double ms = time_ms([&] { gemm.run(args, nullptr); });
    std::printf("gemm %ldx%ldx%ld: %.3f ms, %.0f TFLOP/s\n", m, n, k, ms,
                2.0 * m * n * k / ms / 1e9);
  }
}

TEST_F(Bench, DISABLED_Sampling) {
  const int rows = 256, vocab = 152064;
  cuda::GpuSampler sampler({.max_rows = rows, .vocab = vocab, .sort_rows = 64});
  DeviceBuffer logits = test::upload(test::randu(static_cast<size_t>(rows) * vocab, rng_, -10, 10));
  DeviceBuffer tokens(rows * 4), lps(rows * 4), top_ids(rows * 20 * 4), top_lps(rows * 20 * 4);
  struct Kind {
    const char* name;
    cuda::SampleRowParams p;
  };
  const Kind kinds[] = {{"greedy", {0.0f, 0, 1.0f, 0.0f, 1, 0, 0, 0}},
                        {"temperature", {0.8f, 0, 1.0f, 0.0f, 1, 0, 0, 0}},
                        {"top_k 50", {0.8f, 50, 1.0f, 0.0f, 1, 0, 0, 0}},
                        {"top_p 0.9", {0.8f, 0, 0.9f, 0.0f, 1, 0, 0, 0}},
                        {"greedy + 5 logprobs", {0.0f, 0, 1.0f, 0.0f, 1, 0, 5, 0}}};
  for (const Kind& k : kinds) {
    std::vector<cuda::SampleRowParams> params(rows, k.p);
    DeviceBuffer d_params = test::upload(params);
    cuda::SampleArgs a;
    a.logits = TensorView(logits.data(), DType::kF32, {rows, vocab});
    a.params = TensorView(d_params.data(), DType::kU8, {rows, sizeof(cuda::SampleRowParams)});
    a.tokens = TensorView(tokens.data(), DType::kI32, {rows});
    a.logprobs = TensorView(lps.data(), DType::kF32, {rows});
    a.top_ids = TensorView(top_ids.data(), DType::kI32, {rows, 20});
    a.top_logprobs = TensorView(top_lps.data(), DType::kF32, {rows, 20});
    a.host_params = params;
    const double ms = time_ms([&] { sampler.sample(a, nullptr); }, 5);
    std::printf("sampling %d x %d, %s: %.3f ms\n", rows, vocab, k.name, ms);
  }
}

}  // namespace
}  // namespace nf
