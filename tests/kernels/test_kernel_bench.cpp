// Timings of the kernels at Llama-3-8B serving shapes, for the GPU machine. Disabled by default
// (they check nothing); run them with
//   test_kernels --gtest_also_run_disabled_tests --gtest_filter='*Bench*'
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <numeric>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "backends/cuda/activation.h"
#include "backends/cuda/attention.h"
#include "backends/cuda/device.h"
#include "backends/cuda/gemm.h"
#include "backends/cuda/gpu_power.h"
#include "backends/cuda/green_context.h"
#include "backends/cuda/launch.h"
#include "backends/cuda/norm.h"
#include "backends/cuda/rope.h"
#include "backends/cuda/sampling.h"
#include "kernel_test_util.h"
#ifdef NANOFLOW_HAVE_FLASHINFER
#include "backends/cuda/flashinfer/fi_attention.h"
#endif

namespace nf {
namespace {

using cuda::DeviceBuffer;
using cuda::DType;
using cuda::TensorView;

// Median, min and max over `reps` samples of the mean milliseconds of `inner` back-to-back
// launches, after 3 warm-up launches (the same method as scripts/probe_cudnn_attention.py),
// timed with events on `stream` (the one fn launches on).
template <typename Fn>
std::array<double, 3> median_ms(Fn&& fn, int reps = 9, int inner = 10,
                                cudaStream_t stream = nullptr) {
  for (int i = 0; i < 3; ++i) fn();
  cudaEvent_t a, b;
  NF_CUDA_CHECK(cudaEventCreate(&a));
  NF_CUDA_CHECK(cudaEventCreate(&b));
  std::vector<double> samples;
  for (int r = 0; r < reps; ++r) {
    NF_CUDA_CHECK(cudaEventRecord(a, stream));
    for (int i = 0; i < inner; ++i) fn();
    NF_CUDA_CHECK(cudaEventRecord(b, stream));
    NF_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    NF_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    samples.push_back(ms / inner);
  }
  NF_CUDA_CHECK(cudaEventDestroy(a));
  NF_CUDA_CHECK(cudaEventDestroy(b));
  std::sort(samples.begin(), samples.end());
  return {samples[samples.size() / 2], samples.front(), samples.back()};
}

// Mean milliseconds of fn over `iters` launches, after 3 warm-up launches.
template <typename Fn>
double time_ms(Fn&& fn, int iters = 20) {
  return median_ms(fn, 1, iters)[0];
}

// Two streams forked from and joined back into the default stream: run(a, b, launch) makes a
// and b wait for the default stream's work, calls launch() (which issues on a and b), and makes
// the default stream wait for both.
struct ForkJoin {
  cudaEvent_t fork = nullptr, done_a = nullptr, done_b = nullptr;
  ForkJoin() {
    for (cudaEvent_t* e : {&fork, &done_a, &done_b})
      NF_CUDA_CHECK(cudaEventCreateWithFlags(e, cudaEventDisableTiming));
  }
  ~ForkJoin() {
    for (cudaEvent_t e : {fork, done_a, done_b}) cudaEventDestroy(e);
  }
  template <typename Fn>
  void run(cudaStream_t a, cudaStream_t b, Fn&& launch) {
    NF_CUDA_CHECK(cudaEventRecord(fork, nullptr));
    NF_CUDA_CHECK(cudaStreamWaitEvent(a, fork, 0));
    NF_CUDA_CHECK(cudaStreamWaitEvent(b, fork, 0));
    launch();
    NF_CUDA_CHECK(cudaEventRecord(done_a, a));
    NF_CUDA_CHECK(cudaEventRecord(done_b, b));
    NF_CUDA_CHECK(cudaStreamWaitEvent(nullptr, done_a, 0));
    NF_CUDA_CHECK(cudaStreamWaitEvent(nullptr, done_b, 0));
  }
};

DeviceBuffer random_bf16(int64_t n, std::mt19937& rng) {
  return test::upload_bf16(test::randn_bf16(static_cast<size_t>(n), rng));
}

class Bench : public test::KernelTest {};

// Decode attention: `reqs` requests of `ctx` context, one new token each, 32/8 heads of 128;
// kernel: -1 the plain kernel, else a decode kernel of decode_attention.cu (launch::kDecode*).
void bench_decode(int reqs, int ctx, std::mt19937& rng, int kernel = -1) {
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
  a.decode_kernel = std::max(kernel, 0);
  const double ms = time_ms([&] {
    if (kernel >= 0) {
      cuda::paged_decode_attention(a, nullptr);
    } else {
      cuda::paged_attention(a, nullptr);
    }
  });
  const double bytes = static_cast<double>(reqs) * ctx * KVH * D * 2 * 2;
  const char* name = kernel < 0                               ? ""
                     : kernel == cuda::launch::kDecodeStreams ? " (tensor cores, streams)"
                                                              : " (tensor cores, per request)";
  std::printf("decode attention%s %d x %d (splits %d): %.3f ms, %.2f TB/s of KV\n", name, reqs, ctx,
              splits, ms, bytes / ms / 1e9);
}

TEST_F(Bench, DISABLED_DecodeAttentionTensorCores) {
  for (const auto& [reqs, ctx] : {std::pair{683, 1280}, {401, 1280}, {256, 4096}, {64, 16384}}) {
    for (int kernel : {-1, cuda::launch::kDecodePerRequest, cuda::launch::kDecodeStreams})
      bench_decode(reqs, ctx, rng_, kernel);
  }
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

#ifdef NANOFLOW_HAVE_FLASHINFER

// One case of the cuDNN comparison: request b has q_lens[b] new tokens, the last of its
// kv_lens[b] tokens of context (causal, bottom-right aligned).
struct FiCase {
  const char* name;
  const char* kind;  // "decode" or "prefill"
  std::vector<int> q_lens, kv_lens;
  int split_pages = -1;  // BatchAttention::plan's: -1 FlashInfer's heuristic, 0 no split
  int q_stride = 0;      // elements between query rows; 0: H * D (the engine's is (H + 2 KVH) * D)
};

// A FlashInfer batch on the engine's per-layer KV layout [num_pages, 2, KVH, page, 128], bf16,
// 32/8 heads of 128: request b has q_lens[b] new rows, the last of its kv_lens[b] tokens of
// context; its pages are shuffled over pools `slack` times the pages used (the engine's pool is
// larger than what one batch reads), `pools` of them (one per layer); queries q_stride apart.
class FiBatch {
 public:
  static constexpr int H = 32, KVH = 8, D = 128;
  FiBatch(std::mt19937& rng, const std::vector<int>& q_lens, const std::vector<int>& kv_lens,
          int page_size, int pools, double slack, int64_t q_stride)
      : attn_(std::make_unique<cuda::fi::BatchAttention>(H, KVH, D, page_size)),
        q_stride_(q_stride) {
    const int B = static_cast<int>(q_lens.size()), P = page_size;
    qo_.assign(B + 1, 0);
    pind_.assign(B + 1, 0);
    std::vector<int32_t> last(B);
    for (int b = 0; b < B; ++b) {
      qo_[b + 1] = qo_[b] + q_lens[b];
      for (int i = 0; i < q_lens[b]; ++i) positions_.push_back(kv_lens[b] - q_lens[b] + i);
      const int pages = (kv_lens[b] + P - 1) / P;
      pind_[b + 1] = pind_[b] + pages;
      last[b] = kv_lens[b] - (pages - 1) * P;
      kv_bytes_ += static_cast<double>(kv_lens[b]) * KVH * D * 2 * 2;
    }
    const int64_t used = pind_[B], pool = static_cast<int64_t>(used * slack);
    std::vector<int32_t> ids(pool);
    std::iota(ids.begin(), ids.end(), 0);
    std::shuffle(ids.begin(), ids.end(), rng);
    ids.resize(used);
    // Random KV: a random block of at most 16 MiB repeated over each pool (filling GiBs on the
    // host is slow).
    pool_bytes_ = static_cast<size_t>(pool) * 2 * KVH * P * D * 2;
    DeviceBuffer block = random_bf16(std::min<int64_t>(pool_bytes_ / 2, 8LL << 20), rng);
    for (int r = 0; r < pools; ++r) {
      kv_.emplace_back(pool_bytes_);
      for (size_t off = 0; off < pool_bytes_; off += block.bytes())
        NF_CUDA_CHECK(cudaMemcpy(static_cast<char*>(kv_.back().data()) + off, block.data(),
                                 std::min(block.bytes(), pool_bytes_ - off),
                                 cudaMemcpyDeviceToDevice));
    }
    q_ = random_bf16(static_cast<int64_t>(tokens()) * q_stride, rng);
    out_ = DeviceBuffer(static_cast<size_t>(tokens()) * H * D * 2);
    d_qo_ = test::upload(qo_);
    d_pind_ = test::upload(pind_);
    d_ids_ = test::upload(ids);
    d_last_ = test::upload(last);
    d_pos_ = test::upload(positions_);
    page_size_ = P;
    a_.q = q_.data();
    a_.q_stride_n = q_stride;
    a_.qo_indptr = d_qo_.as<int32_t>();
    a_.kv_page_indptr = d_pind_.as<int32_t>();
    a_.kv_page_ids = d_ids_.as<int32_t>();
    a_.kv_last_page_len = d_last_.as<int32_t>();
    a_.out = out_.data();
    a_.sm_scale = 1.0f / std::sqrt(static_cast<float>(D));
  }
  // FlashInfer's host plan (see BatchAttention::plan); an empty string or the error.
  std::string plan(int split_pages = -1) {
    return attn_->plan(qo_.data(), pind_.data(), static_cast<int>(qo_.size()) - 1, nullptr,
                       split_pages);
  }
  cudaError_t try_run(int pool, cudaStream_t stream) {
    a_.kv_layer = kv_[static_cast<size_t>(pool)].data();
    return attn_->run(a_, stream);
  }
  void run(int pool, cudaStream_t stream) { NF_CUDA_CHECK(try_run(pool, stream)); }
  // The same batch (decode rows only) on one of our tensor-core decode kernels (`kernel`:
  // launch::kDecode*; decode_attention.cu), with `splits` context splits, the streaming one's
  // grid on `sm_count` SMs (0: all).
  void run_tc(int pool, cudaStream_t stream, int kernel, int sm_count = 0, int splits = 1,
              cuda::launch::DecodeRing ring = {}, int debug = 0) {
    const int64_t T = tokens(), B = static_cast<int64_t>(qo_.size()) - 1;
    const size_t ws = cuda::paged_attention_workspace_bytes(T, H, D, splits);
    if (ws_.bytes() < ws) ws_ = DeviceBuffer(ws);
    cuda::PagedAttentionArgs a;
    a.q = TensorView(q_.data(), DType::kBf16, {T, q_stride_});
    a.kv_cache = TensorView(kv_[static_cast<size_t>(pool)].data(), DType::kBf16,
                            {static_cast<int64_t>(pool_bytes_ / (2 * KVH * page_size_ * D * 2)), 2,
                             KVH, page_size_, D});
    a.positions = TensorView(d_pos_.data(), DType::kI32, {T});
    a.seq_indptr = TensorView(d_qo_.data(), DType::kI32, {B + 1});
    a.block_indptr = TensorView(d_pind_.data(), DType::kI32, {B + 1});
    a.block_ids = TensorView(d_ids_.data(), DType::kI32, {num_pages()});
    a.out = TensorView(out_.data(), DType::kBf16, {T, H * D});
    if (ws > 0) a.workspace = TensorView(ws_.data(), DType::kU8, {static_cast<int64_t>(ws)});
    a.num_heads = H;
    a.scale = a_.sm_scale;
    a.num_splits = splits;
    a.decode_kernel = kernel;
    a.sm_count = sm_count;
    a.stream_ring = ring;
    a.stream_debug = debug;
    cuda::paged_decode_attention(a, stream);
  }
  int tokens() const { return qo_.back(); }
  int64_t num_pages() const { return pind_.back(); }
  int64_t q_stride() const { return q_stride_; }
  double kv_bytes() const { return kv_bytes_; }  // K and V read by one run
  size_t pool_bytes() const { return pool_bytes_; }
  DeviceBuffer& out() { return out_; }

 private:
  std::unique_ptr<cuda::fi::BatchAttention> attn_;  // unique_ptr: FiBatch moves, it does not
  cuda::fi::BatchAttention::RunArgs a_;
  int64_t q_stride_;
  std::vector<int32_t> qo_, pind_, positions_;
  std::vector<DeviceBuffer> kv_;
  DeviceBuffer q_, out_, d_qo_, d_pind_, d_ids_, d_last_, d_pos_, ws_;
  int page_size_ = 16;
  double kv_bytes_ = 0;
  size_t pool_bytes_ = 0;
};

// The engine's 1024/512 decode batch: `rows` decodes of contexts 1025..1536, queries inside the
// fused QKV rows, on `pools` layer pools 20% larger than used; planned.
FiBatch decode_batch(std::mt19937& rng, int rows, int page_size, int pools) {
  std::vector<int> ctx(static_cast<size_t>(rows));
  for (int& l : ctx) l = 1025 + static_cast<int>(rng() % 512);
  FiBatch b(rng, std::vector<int>(static_cast<size_t>(rows), 1), ctx, page_size, pools, 1.2,
            (FiBatch::H + 2 * FiBatch::KVH) * FiBatch::D);
  EXPECT_EQ(b.plan(), "");
  return b;
}

// FlashInfer through our nf::cuda::fi::BatchAttention on the engine's per-layer KV layout
// [num_pages, 2, KVH, 16, 128] with a shuffled page table; prints one `FI_ATTN {json}` line.
void bench_fi_case(const FiCase& c, std::mt19937& rng) {
  constexpr int H = FiBatch::H, D = FiBatch::D;
  const int B = static_cast<int>(c.q_lens.size());
  FiBatch fb(rng, c.q_lens, c.kv_lens, 16, 1, 1.0, c.q_stride > 0 ? c.q_stride : H * D);
  const int T = fb.tokens();
  double causal_pairs = 0;
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < c.q_lens[b]; ++i) causal_pairs += c.kv_lens[b] - c.q_lens[b] + 1 + i;
  std::string head = std::string("FI_ATTN {\"case\":\"") + c.name + "\",\"kind\":\"" + c.kind +
                     "\",\"batch\":" + std::to_string(B) + ",\"q_tokens\":" + std::to_string(T) +
                     ",\"num_pages\":" + std::to_string(fb.num_pages()) +
                     ",\"kv_layout\":\"interleaved [pages,2,8,16,128]\",\"split_pages\":" +
                     std::to_string(c.split_pages) +
                     ",\"q_stride\":" + std::to_string(fb.q_stride());

  // plan() on the host, then its copy to the device: the per-batch cost (first and steady).
  using clock = std::chrono::steady_clock;
  auto t0 = clock::now();
  std::string err = fb.plan(c.split_pages);
  NF_CUDA_CHECK(cudaDeviceSynchronize());
  const double plan_first_us = std::chrono::duration<double, std::micro>(clock::now() - t0).count();
  std::vector<double> plan_us;
  for (int i = 0; i < 20 && err.empty(); ++i) {
    t0 = clock::now();
    err = fb.plan(c.split_pages);
    NF_CUDA_CHECK(cudaDeviceSynchronize());
    plan_us.push_back(std::chrono::duration<double, std::micro>(clock::now() - t0).count());
  }
  if (!err.empty()) {
    std::printf("%s,\"error\":\"plan: %s\"}\n", head.c_str(), err.c_str());
    return;
  }
  std::sort(plan_us.begin(), plan_us.end());

  test::poison(fb.out());
  cudaError_t st = fb.try_run(0, nullptr);
  if (st == cudaSuccess) st = cudaDeviceSynchronize();
  if (st != cudaSuccess) {
    std::printf("%s,\"error\":\"run: %s\"}\n", head.c_str(), cudaGetErrorString(st));
    cudaGetLastError();
    return;
  }
  const size_t nonfinite =
      test::count_non_finite(test::download_bf16(fb.out(), static_cast<size_t>(T) * H * D));
  const auto ms = median_ms([&] { fb.run(0, nullptr); });
  std::string metric;
  char buf[128];
  if (std::string(c.kind) == "decode") {
    std::snprintf(buf, sizeof buf, ",\"kv_bytes\":%.0f,\"TB_per_s\":%.3f", fb.kv_bytes(),
                  fb.kv_bytes() / ms[0] / 1e9);
  } else {
    const double flops = 4.0 * H * D * causal_pairs;
    std::snprintf(buf, sizeof buf, ",\"causal_flops\":%.0f,\"TFLOP_per_s\":%.1f", flops,
                  flops / ms[0] / 1e9);
  }
  metric = buf;
  std::printf(
      "%s,\"ms\":%.4f,\"ms_min\":%.4f,\"ms_max\":%.4f%s,\"plan_first_us\":%.1f,"
      "\"plan_us\":%.1f,\"nonfinite_outputs\":%zu}\n",
      head.c_str(), ms[0], ms[1], ms[2], metric.c_str(), plan_first_us, plan_us[plan_us.size() / 2],
      nonfinite);
  std::fflush(stdout);
}

// The cases of scripts/probe_cudnn_attention.py (cuDNN paged SDPA), for a per-phase choice of
// library: Llama-3-8B heads (32/8, 128), bf16, page size 16.
TEST_F(Bench, DISABLED_FlashInferPaged) {
  const std::vector<FiCase> cases = {
      {"decode_683x1280", "decode", std::vector<int>(683, 1), std::vector<int>(683, 1280)},
      {"decode_256x4096", "decode", std::vector<int>(256, 1), std::vector<int>(256, 4096)},
      {"decode_64x16384", "decode", std::vector<int>(64, 1), std::vector<int>(64, 16384)},
      {"decode_560x1280", "decode", std::vector<int>(560, 1), std::vector<int>(560, 1280)},
      {"prefill_1x2048_prefix0", "prefill", {2048}, {2048}},
      {"prefill_1x1488_prefix0", "prefill", {1488}, {1488}},
      {"prefill_1x1488_prefix1024", "prefill", {1488}, {1024 + 1488}},
      {"prefill_4x512_prefix0", "prefill", std::vector<int>(4, 512), std::vector<int>(4, 512)},
  };
  for (const FiCase& c : cases) bench_fi_case(c, rng_);
}

// The engine's decode batch at 1024/512 (560 rows, contexts spread over 1025..1536, queries inside
// the fused QKV rows) with FlashInfer's split heuristic, no split, and fixed KV chunks: what the
// engine's in-situ 4.0 TB/s owes to length spread, query stride or the split choice.
TEST_F(Bench, DISABLED_FlashInferDecodeSplits) {
  std::vector<int> spread(560), spread683(683);
  for (int& l : spread) l = 1025 + static_cast<int>(rng_() % 512);
  for (int& l : spread683) l = 1025 + static_cast<int>(rng_() % 512);
  const std::vector<int> ones(560, 1), flat(560, 1280);
  const int qkv = (32 + 2 * 8) * 128;
  const std::vector<FiCase> cases = {
      {"decode_560x1280", "decode", ones, flat},
      {"decode_560x1280_qkv_stride", "decode", ones, flat, -1, qkv},
      {"decode_560_spread", "decode", ones, spread, -1, qkv},
      {"decode_560_spread_nosplit", "decode", ones, spread, 0, qkv},
      {"decode_560_spread_split8", "decode", ones, spread, 8, qkv},
      {"decode_560_spread_split16", "decode", ones, spread, 16, qkv},
      {"decode_560_spread_split32", "decode", ones, spread, 32, qkv},
      {"decode_683_spread", "decode", std::vector<int>(683, 1), spread683, -1, qkv},
      {"decode_683_spread_split16", "decode", std::vector<int>(683, 1), spread683, 16, qkv},
  };
  for (const FiCase& c : cases) bench_fi_case(c, rng_);
}

// A bf16 GEMM x[m, k] w[n, k]^T with random operands.
struct GemmCase {
  GemmCase(std::mt19937& rng, int64_t m, int64_t n, int64_t k)
      : x(random_bf16(m * k, rng)), w(random_bf16(n * k, rng)), y(m * n * 2) {
    args.x = TensorView(x.data(), DType::kBf16, {m, k});
    args.w = TensorView(w.data(), DType::kBf16, {n, k});
    args.y = TensorView(y.data(), DType::kBf16, {m, n});
  }
  DeviceBuffer x, w, y;
  cuda::GemmArgs args;
};

// The engine reads a different layer's KV pool (3-4 GB each) at every attention call, while the
// isolated benches above reread one. Decode attention on the 1024/512 batch (560 rows) over R = 16
// layer pools: warm (one pool), rotating, and interleaved with a gate/up GEMM as in the engine.
// Page sizes 16, 32, 64. Prints one `FI_TLB {json}` line per page size.
// (bench/results/attention_decode_in_situ.json: rotating pools cost nothing; following a GEMM
// costs ~2-6%, as in the engine.)
TEST_F(Bench, DISABLED_FlashInferDecodeRotation) {
  const int B = 560, R = 16;
  // A gate/up GEMM at 2048 tokens: what runs between two attention calls in the engine.
  GemmCase g(rng_, 2048, 28672, 4096);
  cuda::Gemm gemm;
  const double gemm_ms = median_ms([&] { gemm.run(g.args, nullptr); })[0];
  for (const int P : {16, 32, 64}) {
    FiBatch d = decode_batch(rng_, B, P, R);
    int i = 0;
    const double warm = median_ms([&] { d.run(0, nullptr); })[0];
    const double rotate = median_ms([&] { d.run(i++ % R, nullptr); }, 9, R)[0];
    const double with_gemm = median_ms(
        [&] {
          gemm.run(g.args, nullptr);
          d.run(i++ % R, nullptr);
        },
        9, R)[0];
    auto tb = [&](double ms) { return d.kv_bytes() / ms / 1e9; };
    std::printf(
        "FI_TLB {\"page_size\":%d,\"batch\":%d,\"pool_gb\":%.2f,\"layers\":%d,"
        "\"gemm_ms\":%.4f,\"warm_ms\":%.4f,\"warm_TBps\":%.3f,\"rotate_ms\":%.4f,"
        "\"rotate_TBps\":%.3f,\"gemm_then_attn_ms\":%.4f,\"attn_after_gemm_TBps\":%.3f}\n",
        P, B, d.pool_bytes() / 1e9, R, gemm_ms, warm, tb(warm), rotate, tb(rotate), with_gemm,
        tb(with_gemm - gemm_ms));
    std::fflush(stdout);
  }
}

// Issue 6's first question on our own kernels: does FlashInfer decode attention on one stream
// beside a cuBLASLt GEMM on another beat running them back to back, and with which GEMM SM
// target (cuBLASLt's CUBLASLT_MATMUL_DESC_SM_COUNT_TARGET; FlashInfer's grid cannot be bounded,
// its CTAs take whatever SMs the GEMM leaves)? Shapes of a 1024/512 iteration split in two
// nano-batches: 280 decode rows beside a gate/up GEMM of 1024 tokens, and the whole 560 rows
// beside 2048 tokens. Each pair: alone, back to back, and concurrent (attention launched first,
// and GEMM first). Prints one `OVERLAP {json}` line per (shape, SM target, order).
TEST_F(Bench, DISABLED_OverlapDecodeGemm) {
  cudaStream_t s_attn = nullptr, s_gemm = nullptr;
  NF_CUDA_CHECK(cudaStreamCreateWithFlags(&s_attn, cudaStreamNonBlocking));
  NF_CUDA_CHECK(cudaStreamCreateWithFlags(&s_gemm, cudaStreamNonBlocking));
  ForkJoin fj;
  int sms = 0;
  NF_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  constexpr int kPools = 8;  // attention reads a different layer's pool each time, as in the engine
  for (const auto [rows, m] : {std::pair{280, int64_t{1024}}, std::pair{560, int64_t{2048}}}) {
    FiBatch d = decode_batch(rng_, rows, 16, kPools);
    GemmCase g(rng_, m, 28672, 4096);
    cuda::Gemm gemm;
    int i = 0;
    const double attn_ms = median_ms([&] { d.run(i++ % kPools, nullptr); }, 9, kPools)[0];
    for (const int target : {0, sms - 16, sms - 32, sms - 48, sms - 66}) {
      gemm.set_sm_count_target(target);
      const double gemm_ms = median_ms([&] { gemm.run(g.args, nullptr); })[0];
      const double serial_ms = median_ms(
          [&] {
            d.run(i++ % kPools, nullptr);
            gemm.run(g.args, nullptr);
          },
          9, kPools)[0];
      for (const bool attn_first : {true, false}) {
        const double concurrent_ms = median_ms(
            [&] {
              fj.run(s_attn, s_gemm, [&] {
                if (attn_first) d.run(i++ % kPools, s_attn);
                gemm.run(g.args, s_gemm);
                if (!attn_first) d.run(i++ % kPools, s_attn);
              });
            },
            9, kPools)[0];
        std::printf(
            "OVERLAP {\"decode_rows\":%d,\"gemm_m\":%ld,\"gemm\":\"%ldx28672x4096\","
            "\"gemm_sm_target\":%d,\"order\":\"%s\",\"attn_ms\":%.4f,\"attn_TBps\":%.3f,"
            "\"gemm_ms\":%.4f,\"serial_ms\":%.4f,\"concurrent_ms\":%.4f,"
            "\"concurrent_over_serial\":%.3f,\"ideal_over_serial\":%.3f}\n",
            rows, m, m, target, attn_first ? "attention first" : "gemm first", attn_ms,
            d.kv_bytes() / attn_ms / 1e9, gemm_ms, serial_ms, concurrent_ms,
            concurrent_ms / serial_ms, std::max(attn_ms, gemm_ms) / serial_ms);
        std::fflush(stdout);
      }
    }
  }
  NF_CUDA_CHECK(cudaStreamDestroy(s_attn));
  NF_CUDA_CHECK(cudaStreamDestroy(s_gemm));
}
// Green contexts (hard SM partitions, backends/cuda/green_context.h): the decode attention on
// `k` SMs and a gate/up GEMM on the rest, each in its own green context, alone and at once,
// against both on the whole GPU back to back (H200-NOTES' Python probe, on our kernels). Prints
// one `GREEN {json}` line per partition, or why it could not run.
TEST_F(Bench, DISABLED_GreenContextOverlap) {
  constexpr int kPools = 8;
  FiBatch d = decode_batch(rng_, 560, 16, kPools);
  GemmCase g(rng_, 2048, 28672, 4096);
  cuda::Gemm gemm;
  int i = 0;
  const double gemm_full = median_ms([&] { gemm.run(g.args, nullptr); })[0];
  // FlashInfer's decode kernel, then our tensor-core ones (one split: the partition's CTAs).
  for (const int kernel : {-1, cuda::launch::kDecodePerRequest, cuda::launch::kDecodeStreams}) {
    int sm_count = 0;  // the partition's, for the streaming kernel's grid
    auto attn = [&](cudaStream_t s) {
      if (kernel >= 0) {
        d.run_tc(i++ % kPools, s, kernel, sm_count);
      } else {
        d.run(i++ % kPools, s);
      }
    };
    const double attn_full = median_ms([&] { attn(nullptr); }, 9, kPools)[0];
    for (const int k : {16, 24, 32, 48, 64}) {
      std::string why;
      const auto parts = cuda::GreenPartitions::create(0, {k, -1}, &why);
      if (parts == nullptr) {
        std::printf("GREEN {\"attention_sms\":%d,\"error\":\"%s\"}\n", k, why.c_str());
        continue;
      }
      const cudaStream_t sa = parts->stream(0), sr = parts->stream(1);
      gemm.set_sm_count_target(parts->sm_count(1));
      sm_count = parts->sm_count(0);
      const double attn_green = median_ms([&] { attn(sa); }, 9, kPools, sa)[0];
      const double gemm_green = median_ms([&] { gemm.run(g.args, sr); }, 9, 10, sr)[0];
      ForkJoin fj;
      const double both = median_ms(
          [&] {
            fj.run(sa, sr, [&] {
              attn(sa);
              gemm.run(g.args, sr);
            });
          },
          9, kPools)[0];
      gemm.set_sm_count_target(0);
      sm_count = 0;
      std::printf(
          "GREEN {\"kernel\":\"%s\",\"attention_sms\":%d,\"gemm_sms\":%d,"
          "\"attn_full_ms\":%.4f,\"gemm_full_ms\":%.4f,\"attn_green_ms\":%.4f,"
          "\"attn_green_TBps\":%.3f,\"attn_green_GBps_per_sm\":%.1f,\"gemm_green_ms\":%.4f,"
          "\"both_green_ms\":%.4f,\"both_over_serial_full\":%.3f}\n",
          kernel < 0                               ? "flashinfer"
          : kernel == cuda::launch::kDecodeStreams ? "tc streams"
                                                   : "tc per request",
          parts->sm_count(0), parts->sm_count(1), attn_full, gemm_full, attn_green,
          d.kv_bytes() / attn_green / 1e9, d.kv_bytes() / attn_green / 1e6 / parts->sm_count(0),
          gemm_green, both, both / (attn_full + gemm_full));
      std::fflush(stdout);
      NF_CUDA_CHECK(cudaDeviceSynchronize());
    }
  }
}
#endif  // NANOFLOW_HAVE_FLASHINFER

// Soft partitions (the engine's NanoOp::sm_target, no green contexts): the streaming decode
// kernel with a grid of k persistent CTAs (one per SM) on one ordinary stream, beside the
// gate/up GEMM of GreenContextOverlap on another with a cuBLASLt target of the other SMs (or
// none), either launched first; against the per-request kernel and the GEMM back to back on the
// whole GPU. Prints one `SOFT {json}` line per (k, GEMM target, order).
TEST_F(Bench, DISABLED_SoftPartitionOverlap) {
  constexpr int kPools = 8;
  FiBatch d = decode_batch(rng_, 560, 16, kPools);
  GemmCase g(rng_, 2048, 28672, 4096);
  cuda::Gemm gemm;
  int sms = 0, i = 0;
  NF_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaStream_t sa = nullptr, sg = nullptr;
  NF_CUDA_CHECK(cudaStreamCreateWithFlags(&sa, cudaStreamNonBlocking));
  NF_CUDA_CHECK(cudaStreamCreateWithFlags(&sg, cudaStreamNonBlocking));
  ForkJoin fj;
  const double gemm_full = median_ms([&] { gemm.run(g.args, nullptr); })[0];
  const double attn_full = median_ms(
      [&] { d.run_tc(i++ % kPools, nullptr, cuda::launch::kDecodePerRequest, 0); }, 9, kPools)[0];
  for (const int k : {16, 24, 32, 48}) {
    auto attn = [&](cudaStream_t s) { d.run_tc(i++ % kPools, s, cuda::launch::kDecodeStreams, k); };
    const double attn_ms = median_ms([&] { attn(nullptr); }, 9, kPools)[0];
    for (const int target : {sms - k, 0}) {
      gemm.set_sm_count_target(target);
      const double gemm_ms = median_ms([&] { gemm.run(g.args, nullptr); })[0];
      for (const bool attn_first : {true, false}) {
        const double both = median_ms(
            [&] {
              fj.run(sa, sg, [&] {
                if (attn_first) attn(sa);
                gemm.run(g.args, sg);
                if (!attn_first) attn(sa);
              });
            },
            9, kPools)[0];
        std::printf(
            "SOFT {\"attention_grid\":%d,\"gemm_sm_target\":%d,\"order\":\"%s\","
            "\"attn_full_ms\":%.4f,\"gemm_full_ms\":%.4f,\"attn_grid_ms\":%.4f,"
            "\"attn_grid_GBps_per_sm\":%.1f,\"gemm_target_ms\":%.4f,\"both_ms\":%.4f,"
            "\"both_over_serial_full\":%.3f}\n",
            k, target, attn_first ? "attention first" : "gemm first", attn_full, gemm_full, attn_ms,
            d.kv_bytes() / attn_ms / 1e6 / k, gemm_ms, both, both / (attn_full + gemm_full));
        std::fflush(stdout);
      }
    }
    gemm.set_sm_count_target(0);
  }
  NF_CUDA_CHECK(cudaStreamDestroy(sa));
  NF_CUDA_CHECK(cudaStreamDestroy(sg));
}

// The GPU's idle power over one second (an `ENERGY {json}` line).
void print_idle_power() {
  const double ea = cuda::gpu_energy_j(0);
  const auto t0 = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(1));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("ENERGY {\"case\":\"idle\",\"power_w\":%.1f,\"sm_mhz\":%.0f}\n",
              (cuda::gpu_energy_j(0) - ea) / s, cuda::gpu_sm_clock_mhz(0));
}

// Runs `rep` (which launches on the default stream, or forks from it) back to back for ~2 s
// after ~0.5 s at the power limit, and prints one `ENERGY {json}` line: per repetition the
// milliseconds (events), the joules (NVML's energy counter) and their ratio, the mean power, and
// the SM clock sampled a third of the way in.
template <typename Fn>
void measure_energy(const char* name, int k, Fn&& rep) {
  const int reps = std::max(20, static_cast<int>(2000.0 / time_ms(rep, 10)));
  for (int r = 0; r < reps / 4; ++r) rep();
  cudaEvent_t e0, e1;
  NF_CUDA_CHECK(cudaEventCreate(&e0));
  NF_CUDA_CHECK(cudaEventCreate(&e1));
  NF_CUDA_CHECK(cudaDeviceSynchronize());
  const double ea = cuda::gpu_energy_j(0);
  NF_CUDA_CHECK(cudaEventRecord(e0, nullptr));
  double mhz = 0;
  for (int r = 0; r < reps; ++r) {
    rep();
    if (r == reps / 3) mhz = cuda::gpu_sm_clock_mhz(0);  // the queue runs ~1k launches ahead
  }
  NF_CUDA_CHECK(cudaEventRecord(e1, nullptr));
  NF_CUDA_CHECK(cudaEventSynchronize(e1));
  const double eb = cuda::gpu_energy_j(0);
  float ms = 0;
  NF_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
  const double rep_ms = ms / reps, rep_j = (eb - ea) / reps;
  std::printf(
      "ENERGY {\"case\":\"%s\",\"attention_sms\":%d,\"ms\":%.4f,\"joules\":%.4f,\"power_w\":%.1f,"
      "\"sm_mhz\":%.0f,\"reps\":%d}\n",
      name, k, rep_ms, rep_j, rep_j / rep_ms * 1e3, mhz, reps);
  std::fflush(stdout);
  NF_CUDA_CHECK(cudaEventDestroy(e0));
  NF_CUDA_CHECK(cudaEventDestroy(e1));
}

// Time and energy of the overlap (backends/cuda/gpu_power.h): on the H200 a sustained load
// sits at the 700 W limit, so an overlap saves time only as far as it saves energy. Each case
// runs back to back for ~2 s; per repetition: milliseconds (events), joules (NVML's energy
// counter), the mean power and the SM clock sampled a third of the way in. Cases: two gate/up
// GEMMs (2048 x 28672 x 4096) on the whole GPU; the 560-row decode attention on the whole GPU
// (per-request kernel); both back to back; the streaming kernel alone on k SMs; and the pair at
// once, the attention on k SMs beside the GEMMs targeted at the rest. Idle power first. Prints
// one `ENERGY {json}` line per case.
TEST_F(Bench, DISABLED_OverlapEnergy) {
  if (std::isnan(cuda::gpu_energy_j(0))) GTEST_SKIP() << "NVML's energy counter cannot be read";
  constexpr int kPools = 8;
  FiBatch d = decode_batch(rng_, 560, 16, kPools);
  GemmCase g(rng_, 2048, 28672, 4096);
  cuda::Gemm gemm;
  int sms = 0, i = 0;
  NF_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  cudaStream_t sa = nullptr, sg = nullptr;
  NF_CUDA_CHECK(cudaStreamCreateWithFlags(&sa, cudaStreamNonBlocking));
  NF_CUDA_CHECK(cudaStreamCreateWithFlags(&sg, cudaStreamNonBlocking));
  ForkJoin fj;
  print_idle_power();
  auto gemms = [&](cudaStream_t s) {
    gemm.run(g.args, s);
    gemm.run(g.args, s);
  };
  measure_energy("two gemms, whole GPU", 0, [&] { gemms(nullptr); });
  measure_energy("attention, whole GPU", 0,
                 [&] { d.run_tc(i++ % kPools, nullptr, cuda::launch::kDecodePerRequest, 0); });
  measure_energy("both back to back, whole GPU", 0, [&] {
    gemms(nullptr);
    d.run_tc(i++ % kPools, nullptr, cuda::launch::kDecodePerRequest, 0);
  });
  for (const int k : {28, 40}) {
    measure_energy("attention alone on k SMs", k,
                   [&] { d.run_tc(i++ % kPools, nullptr, cuda::launch::kDecodeStreams, k); });
    gemm.set_sm_count_target(sms - k);
    measure_energy("gemms alone on the rest", k, [&] { gemms(nullptr); });
    measure_energy("both at once", k, [&] {
      fj.run(sa, sg, [&] {
        d.run_tc(i++ % kPools, sa, cuda::launch::kDecodeStreams, k);
        gemms(sg);
      });
    });
    gemm.set_sm_count_target(0);
  }
  NF_CUDA_CHECK(cudaStreamDestroy(sa));
  NF_CUDA_CHECK(cudaStreamDestroy(sg));
}

// Where the decode attention's energy goes: FlashInfer's decode kernel and our per-request
// kernel on the whole GPU, our streaming kernel on 132 and 28 SMs, and on 28 SMs its copies
// alone (stream_debug 1: the TMA stream into shared memory, no math) and its math
// alone (2: no loads). The 560-row batch; one `ENERGY {json}` line per case, with the joules
// per GB of KV read.
TEST_F(Bench, DISABLED_AttentionEnergy) {
  if (std::isnan(cuda::gpu_energy_j(0))) GTEST_SKIP() << "NVML's energy counter cannot be read";
  constexpr int kPools = 8;
  FiBatch d = decode_batch(rng_, 560, 16, kPools);
  int i = 0;
  print_idle_power();
  std::printf("ENERGY {\"case\":\"kv bytes per call\",\"gb\":%.4f}\n", d.kv_bytes() / 1e9);
#ifdef NANOFLOW_HAVE_FLASHINFER
  measure_energy("flashinfer, whole GPU", 0, [&] { d.run(i++ % kPools, nullptr); });
#endif
  measure_energy("per-request kernel, whole GPU", 0,
                 [&] { d.run_tc(i++ % kPools, nullptr, cuda::launch::kDecodePerRequest, 0); });
  for (const int k : {132, 28}) {
    for (const int mode : {0, 1, 2}) {
      if (k == 132 && mode != 0) continue;
      const char* name = mode == 0   ? "streaming kernel"
                         : mode == 1 ? "its copies alone"
                                     : "its math alone";
      measure_energy(name, k, [&] {
        d.run_tc(i++ % kPools, nullptr, cuda::launch::kDecodeStreams, k, 1, {}, mode);
      });
    }
  }
}

// The streaming decode kernel's ring shapes on k SMs of the whole GPU (its grid is sm_count
// CTAs, so that is a partition without green contexts), with its experiment modes: 0 as built,
// 1 no math (the copies alone), 2 no copies (the math alone). Prints `RING {json}` lines.
// NF_BENCH_RINGS: "tile_kb stages warps;..." (default: the built shapes).
TEST_F(Bench, DISABLED_DecodeStreamsRings) {
  constexpr int kPools = 8;
  FiBatch d = decode_batch(rng_, 560, 16, kPools);
  int i = 0;
  std::string rings = "16 2 8;16 3 4;8 2 8;8 3 8";
  if (const char* e = std::getenv("NF_BENCH_RINGS")) rings = e;
  std::stringstream ss(rings);
  for (std::string ring; std::getline(ss, ring, ';');) {
    cuda::launch::DecodeRing shape;
    std::sscanf(ring.c_str(), "%d %d %d", &shape.tile_kb, &shape.stages, &shape.warps);
    for (const int mode : {0, 1, 2}) {
      for (const int sms : {16, 32, 132}) {
        const double ms = median_ms(
            [&] {
              d.run_tc(i++ % kPools, nullptr, cuda::launch::kDecodeStreams, sms, 1, shape, mode);
            },
            9, kPools)[0];
        std::printf(
            "RING {\"ring\":\"%s\",\"mode\":%d,\"sms\":%d,\"ms\":%.4f,\"TBps\":%.3f,"
            "\"GBps_per_sm\":%.1f}\n",
            ring.c_str(), mode, sms, ms, d.kv_bytes() / ms / 1e9, d.kv_bytes() / ms / 1e6 / sms);
        std::fflush(stdout);
      }
    }
  }
}

// One streaming decode launch set on NF_BENCH_SMS SMs (default 32), for a profiler.
TEST_F(Bench, DISABLED_DecodeStreamsOnce) {
  FiBatch d = decode_batch(rng_, 560, 16, 2);
  const char* e = std::getenv("NF_BENCH_SMS");
  const int sms = e != nullptr ? std::atoi(e) : 32;
  for (int i = 0; i < 6; ++i) d.run_tc(i % 2, nullptr, cuda::launch::kDecodeStreams, sms);
  NF_CUDA_CHECK(cudaDeviceSynchronize());
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
    // The engine's 32 layers have distinct weights: the same GEMM over 8 weight copies.
    std::vector<DeviceBuffer> ws;
    for (int r = 0; r < 8; ++r) {
      ws.emplace_back(w.bytes());
      NF_CUDA_CHECK(cudaMemcpy(ws.back().data(), w.data(), w.bytes(), cudaMemcpyDeviceToDevice));
    }
    int i = 0;
    const double ms_rot = time_ms(
        [&] {
          args.w = TensorView(ws[static_cast<size_t>(i++ % 8)].data(), DType::kBf16, {n, k});
          gemm.run(args, nullptr);
        },
        24);
    std::printf(
        "gemm %ldx%ldx%ld: %.3f ms, %.0f TFLOP/s; over 8 weight copies %.3f ms, %.0f TFLOP/s\n", m,
        n, k, ms, 2.0 * m * n * k / ms / 1e9, ms_rot, 2.0 * m * n * k / ms_rot / 1e9);
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
