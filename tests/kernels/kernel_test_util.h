// Shared helpers of the CUDA kernel tests: device detection (tests skip without a GPU), fresh
// seeded random inputs, bf16 rounding, device upload/download, NaN poisoning and error norms.
#pragma once

#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/tensor.h"
#include "common/half.h"
#include "common/thread_pool.h"

namespace nf::test {

inline bool has_cuda_device() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear "no driver" / "no device"
    return false;
  }
  return n > 0;
}

inline ThreadPool& host_pool() {
  static ThreadPool pool;
  return pool;
}

// Base fixture: skips without a CUDA device, seeds rng_ from std::random_device (or from
// NF_TEST_SEED to replay a failure) and prints the seed when the test fails.
class KernelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!has_cuda_device()) GTEST_SKIP() << "no CUDA device";
    const char* env = std::getenv("NF_TEST_SEED");
    seed_ = env != nullptr ? static_cast<uint32_t>(std::stoul(env)) : std::random_device{}();
    rng_.seed(seed_);
  }
  void TearDown() override {
    if (HasFailure())
      std::printf("[ seed     ] NF_TEST_SEED=%u reproduces this test's inputs\n", seed_);
  }

  uint32_t seed_ = 0;
  std::mt19937 rng_;
};

inline float bf16_round(float x) {
  return bf16_to_float(float_to_bf16(x));
}

// n normal values (times scale) rounded to bf16, so the host and the device see the same inputs.
inline std::vector<float> randn_bf16(size_t n, std::mt19937& rng, float scale = 1.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = bf16_round(d(rng));
  return v;
}

inline std::vector<float> randu(size_t n, std::mt19937& rng, float lo, float hi) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = d(rng);
  return v;
}

inline void sync() {
  NF_CUDA_CHECK(cudaDeviceSynchronize());
}

template <typename T>
cuda::DeviceBuffer upload(const std::vector<T>& v) {
  cuda::DeviceBuffer b(std::max<size_t>(v.size() * sizeof(T), 16));
  if (!v.empty())
    NF_CUDA_CHECK(cudaMemcpy(b.data(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return b;
}

inline cuda::DeviceBuffer upload_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = float_to_bf16(v[i]);
  return upload(h);
}

template <typename T>
std::vector<T> download(const cuda::DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  if (n > 0) NF_CUDA_CHECK(cudaMemcpy(v.data(), b.data(), n * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

inline std::vector<float> download_bf16(const cuda::DeviceBuffer& b, size_t n) {
  const auto h = download<uint16_t>(b, n);
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = bf16_to_float(h[i]);
  return v;
}

// Fills a buffer with 0xFF bytes: NaN as bf16 and f32, -1 as integers. Outputs are poisoned
// before each run, so an element a kernel forgot to write stays NaN and fails the checks.
inline void poison(const cuda::DeviceBuffer& b) {
  NF_CUDA_CHECK(cudaMemset(b.data(), 0xff, b.bytes()));
}

inline size_t count_non_finite(const std::vector<float>& v) {
  size_t n = 0;
  for (float x : v) n += !std::isfinite(x);
  return n;
}

// ||out - ref|| / ||ref|| in double; NaN or infinity when out holds any.
inline double rel_frobenius(const std::vector<float>& out, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const double d = static_cast<double>(out[i]) - ref[i];
    num += d * d;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-30);
}

// Every element written and finite, and the relative Frobenius error within budget.
inline void expect_close(const std::vector<float>& out, const std::vector<float>& ref,
                         double budget, const std::string& what) {
  ASSERT_EQ(out.size(), ref.size()) << what;
  const size_t bad = count_non_finite(out);
  EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << out.size()
                     << " elements are NaN/inf (unwritten or broken)";
  const double err = rel_frobenius(out, ref);
  EXPECT_LE(err, budget) << what << ": relative Frobenius error " << err;
}

}  // namespace nf::test
