// The cuBLASLt GEMM wrapper against the CPU fp32 GEMM (OpenBLAS) on the same bf16 inputs:
// Llama-3-8B layer shapes at token counts 1, 7, 97 and 2048, with and without bias, with
// beta = 1 accumulation, fp32 output (logits), and an SM-count target.
#include <algorithm>
#include <chrono>
#include <cmath>

#include "backends/cpu/ops.h"
#include "backends/cuda/gemm.h"
#include "backends/cuda/gpu_power.h"
#include "kernel_test_util.h"

namespace nf {
namespace {

using cuda::DType;
using cuda::TensorView;
using test::download;
using test::download_bf16;
using test::upload;
using test::upload_bf16;

// Relative Frobenius error budget: bf16 inputs, fp32 accumulation, bf16 (or f32) output.
constexpr double kBf16Budget = 1e-2;
constexpr double kF32OutBudget = 1e-3;

struct Shape {
  int64_t m, n, k;
};

class GemmTest : public test::KernelTest {
 protected:
  // Runs y = x w^T (+ bias) (+ beta * y0) on both sides and compares.
  void check(cuda::Gemm& gemm, const Shape& s, bool bias, float beta, DType out_dtype) {
    SCOPED_TRACE(testing::Message()
                 << "m " << s.m << " n " << s.n << " k " << s.k << " bias " << bias << " beta "
                 << beta << " out " << cuda::dtype_name(out_dtype));
    const float wscale = 1.0f / std::sqrt(static_cast<float>(s.k));
    const auto x = test::randn_bf16(s.m * s.k, rng_);
    const auto w = test::randn_bf16(s.n * s.k, rng_, wscale);
    const auto b = test::randn_bf16(s.n, rng_);
    const auto y0 = test::randn_bf16(s.m * s.n, rng_);
    std::vector<float> ref = beta != 0.0f ? y0 : std::vector<float>(s.m * s.n, 0.0f);
    cpu::gemm_xwt(x.data(), w.data(), ref.data(), s.m, s.n, s.k, beta);
    if (bias)
      for (int64_t i = 0; i < s.m; ++i)
        for (int64_t j = 0; j < s.n; ++j) ref[i * s.n + j] += b[j];

    const bool f32 = out_dtype == DType::kF32;
    auto d_x = upload_bf16(x), d_w = upload_bf16(w);
    auto d_b = f32 ? upload(b) : upload_bf16(b);
    cuda::DeviceBuffer d_y;
    if (beta != 0.0f) {
      d_y = f32 ? upload(y0) : upload_bf16(y0);
    } else {
      d_y.reset(s.m * s.n * cuda::dtype_size(out_dtype));
      test::poison(d_y);  // beta = 0: y is write-only, NaN must not leak in
    }
    cuda::GemmArgs args;
    args.x = TensorView(d_x.data(), DType::kBf16, {s.m, s.k});
    args.w = TensorView(d_w.data(), DType::kBf16, {s.n, s.k});
    args.y = TensorView(d_y.data(), out_dtype, {s.m, s.n});
    if (bias) args.bias = TensorView(d_b.data(), out_dtype, {s.n});
    args.beta = beta;
    gemm.run(args, nullptr);
    test::sync();
    const auto out = f32 ? download<float>(d_y, s.m * s.n) : download_bf16(d_y, s.m * s.n);
    test::expect_close(out, ref, f32 ? kF32OutBudget : kBf16Budget, "gemm");
  }
};

TEST_F(GemmTest, LayerShapesWithAndWithoutBias) {
  cuda::Gemm gemm;
  const Shape shapes[] = {{1, 4096, 4096},     {7, 6144, 4096},  {97, 28672, 4096},
                          {2048, 4096, 14336}, {1000, 1000, 97}, {3, 8, 8}};
  for (const Shape& s : shapes)
    for (bool bias : {false, true}) check(gemm, s, bias, 0.0f, DType::kBf16);
}

TEST_F(GemmTest, BetaAccumulatesIntoY) {
  cuda::Gemm gemm;
  for (const Shape& s : {Shape{7, 4096, 4096}, Shape{97, 1024, 512}}) {
    check(gemm, s, false, 1.0f, DType::kBf16);
    check(gemm, s, true, 0.5f, DType::kBf16);
  }
}

TEST_F(GemmTest, F32OutputForLogits) {
  cuda::Gemm gemm;
  for (const Shape& s : {Shape{1, 32000, 4096}, Shape{97, 32000, 2048}}) {
    check(gemm, s, false, 0.0f, DType::kF32);
    check(gemm, s, true, 0.0f, DType::kF32);
  }
}

TEST_F(GemmTest, PlansAreCachedPerShapeAndSmTarget) {
  cuda::Gemm gemm;
  const Shape s{64, 1024, 1024};
  check(gemm, s, false, 0.0f, DType::kBf16);
  check(gemm, s, false, 0.0f, DType::kBf16);
  EXPECT_EQ(gemm.cached_plans(), 1u);
  check(gemm, s, true, 0.0f, DType::kBf16);
  EXPECT_EQ(gemm.cached_plans(), 2u);
  gemm.set_sm_count_target(66);
  check(gemm, Shape{2048, 4096, 4096}, false, 0.0f, DType::kBf16);
  EXPECT_EQ(gemm.cached_plans(), 3u);
  gemm.set_sm_count_target(0);
  check(gemm, Shape{2048, 4096, 4096}, false, 0.0f, DType::kBf16);
  EXPECT_EQ(gemm.cached_plans(), 4u);
}

TEST_F(GemmTest, EmptyBatchIsANoOp) {
  cuda::Gemm gemm;
  cuda::DeviceBuffer w(64 * 64 * 2);
  cuda::GemmArgs args;
  args.x = TensorView(w.data(), DType::kBf16, {0, 64});
  args.w = TensorView(w.data(), DType::kBf16, {64, 64});
  args.y = TensorView(w.data(), DType::kBf16, {0, 64});
  gemm.run(args, nullptr);
  test::sync();
  EXPECT_EQ(gemm.cached_plans(), 0u);
}

// NVML through backends/cuda/gpu_power.h: the energy counter grows while GEMMs run, and the
// power and SM clock read as physical values (not a timing: any GPU passes).
TEST_F(GemmTest, GpuPowerCountsTheEnergyOfGemms) {
  const double e0 = cuda::gpu_energy_j(0);
  if (std::isnan(e0)) GTEST_SKIP() << "NVML's energy counter cannot be read here";
  cuda::Gemm gemm;
  cuda::DeviceBuffer x(1024 * 4096 * 2), w(4096 * 4096 * 2), y(1024 * 4096 * 2);
  cuda::GemmArgs args;
  args.x = TensorView(x.data(), DType::kBf16, {1024, 4096});
  args.w = TensorView(w.data(), DType::kBf16, {4096, 4096});
  args.y = TensorView(y.data(), DType::kBf16, {1024, 4096});
  const auto t0 = std::chrono::steady_clock::now();
  double secs = 0;
  while (secs < 0.3) {
    for (int i = 0; i < 50; ++i) gemm.run(args, nullptr);
    test::sync();
    secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  const double watts = (cuda::gpu_energy_j(0) - e0) / secs;
  EXPECT_GT(watts, 1.0);
  EXPECT_LT(watts, 5000.0);
  EXPECT_GT(cuda::gpu_power_w(0), 0.0);
  EXPECT_GT(cuda::gpu_sm_clock_mhz(0), 0.0);
  EXPECT_TRUE(std::isnan(cuda::gpu_energy_j(-1)));
}

}  // namespace
}  // namespace nf
