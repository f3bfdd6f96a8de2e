#include "backends/cuda/optimum.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/gemm.h"
#include "backends/cuda/gpu_power.h"
#include "backends/cuda/tensor.h"
#include "common/half.h"
#include "common/status.h"

namespace nf::cuda {

OptimumProfile profile_optimum(const ModelConfig& c, int batch_tokens, int device,
                               double sustain_seconds) {
  NF_CHECK(batch_tokens > 0, "profile_optimum: batch of {} tokens", batch_tokens);
  NF_CUDA_CHECK(cudaSetDevice(device));
  const int64_t m = batch_tokens, H = c.hidden_size, hd = c.head_dim;
  const int64_t q = c.num_heads * hd, qkv = (c.num_heads + 2 * c.num_kv_heads) * hd;
  const int64_t I = c.intermediate_size;
  struct Shape {
    const char* name;
    int64_t n, k;
    bool bias;
  };
  const Shape shapes[] = {
      {"qkv", qkv, H, c.qkv_bias}, {"o", H, q, false}, {"gate_up", 2 * I, H, false},
      {"down", H, I, false}};
  int64_t max_x = 0, max_w = 0, max_y = 0;
  for (const Shape& s : shapes) {
    max_x = std::max(max_x, m * s.k);
    max_w = std::max(max_w, s.n * s.k);
    max_y = std::max(max_y, m * s.n);
  }
  DeviceBuffer x(static_cast<size_t>(max_x) * 2), w(static_cast<size_t>(max_w) * 2),
      y(static_cast<size_t>(max_y) * 2), bias(static_cast<size_t>(qkv) * 2);
  // Random values, as real activations and weights: constant inputs toggle fewer bits, draw
  // less power and let the tensor cores clock higher, which would inflate the optimum.
  {
    std::vector<uint16_t> host(static_cast<size_t>(std::max(max_x, max_w)));
    std::mt19937 rng(1);
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    for (uint16_t& v : host) v = float_to_bf16(u(rng));
    NF_CUDA_CHECK(cudaMemcpy(x.data(), host.data(), x.bytes(), cudaMemcpyHostToDevice));
    NF_CUDA_CHECK(cudaMemcpy(w.data(), host.data(), w.bytes(), cudaMemcpyHostToDevice));
    NF_CUDA_CHECK(cudaMemset(bias.data(), 0, bias.bytes()));
  }
  cudaStream_t stream = nullptr;
  NF_CUDA_CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t e0 = nullptr, e1 = nullptr;
  NF_CUDA_CHECK(cudaEventCreate(&e0));
  NF_CUDA_CHECK(cudaEventCreate(&e1));
  Gemm gemm;
  OptimumProfile out;
  out.batch_tokens = batch_tokens;
  double flops = 0;
  std::vector<GemmArgs> layer;
  for (const Shape& s : shapes) {
    GemmArgs a{.x = x.view(DType::kBf16, {m, s.k}),
               .w = w.view(DType::kBf16, {s.n, s.k}),
               .y = y.view(DType::kBf16, {m, s.n})};
    if (s.bias) a.bias = bias.view(DType::kBf16, {s.n});
    layer.push_back(a);
    for (int i = 0; i < 5; ++i) gemm.run(a, stream);  // warm-up (and the plan)
    std::vector<double> times;
    for (int rep = 0; rep < 7; ++rep) {
      constexpr int kIters = 10;
      NF_CUDA_CHECK(cudaEventRecord(e0, stream));
      for (int i = 0; i < kIters; ++i) gemm.run(a, stream);
      NF_CUDA_CHECK(cudaEventRecord(e1, stream));
      NF_CUDA_CHECK(cudaEventSynchronize(e1));
      float ms = 0;
      NF_CUDA_CHECK(cudaEventElapsedTime(&ms, e0, e1));
      times.push_back(ms / kIters);
    }
    std::sort(times.begin(), times.end());
    GemmTiming t;
    t.name = s.name;
    t.m = m;
    t.n = s.n;
    t.k = s.k;
    t.ms = times[times.size() / 2];
    const double f = 2.0 * m * s.n * s.k;
    t.tflops = f / (t.ms * 1e-3) / 1e12;
    flops += f;
    out.layer_ms += t.ms;
    out.gemms.push_back(t);
  }
  // From one layer's GEMM time: their rate, and tokens per second over all layers.
  auto tflops = [&](double layer_ms) { return flops / (layer_ms * 1e-3) / 1e12; };
  auto tokens_per_s = [&](double layer_ms) {
    return m / (static_cast<double>(c.num_layers) * layer_ms * 1e-3);
  };
  out.gemm_tflops = tflops(out.layer_ms);
  out.tokens_per_s = tokens_per_s(out.layer_ms);

  if (sustain_seconds > 0) {
    // Chunks of 16 layers (~20 ms on an H200) back to back until sustain_seconds have passed;
    // the median chunk of the second half, when clocks and power have settled.
    constexpr int kLayers = 16, kGroup = 8;
    cudaEvent_t ev[kGroup + 1];
    for (cudaEvent_t& e : ev) NF_CUDA_CHECK(cudaEventCreate(&e));
    std::vector<double> chunk_ms;
    const auto t0 = std::chrono::steady_clock::now();
    double elapsed = 0;
    // The energy of the second half: from the first group queued after half the time (the GPU
    // has then finished every earlier group) to the end.
    double e_half = std::numeric_limits<double>::quiet_NaN(), t_half = 0;
    int64_t layers_late = 0;
    while (elapsed < sustain_seconds) {
      if (std::isnan(e_half) && elapsed >= sustain_seconds / 2) {
        e_half = gpu_energy_j(device);
        t_half = elapsed;
      }
      if (elapsed >= sustain_seconds / 2) layers_late += kGroup * kLayers;
      // kGroup chunks queued at once, so the GPU waits for the host once per ~160 ms.
      NF_CUDA_CHECK(cudaEventRecord(ev[0], stream));
      for (int i = 0; i < kGroup; ++i) {
        for (int l = 0; l < kLayers; ++l)
          for (const GemmArgs& a : layer) gemm.run(a, stream);
        NF_CUDA_CHECK(cudaEventRecord(ev[i + 1], stream));
      }
      NF_CUDA_CHECK(cudaEventSynchronize(ev[kGroup]));
      for (int i = 0; i < kGroup; ++i) {
        float ms = 0;
        NF_CUDA_CHECK(cudaEventElapsedTime(&ms, ev[i], ev[i + 1]));
        chunk_ms.push_back(ms / kLayers);
      }
      elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    }
    for (cudaEvent_t e : ev) cudaEventDestroy(e);
    std::vector<double> late(chunk_ms.begin() + static_cast<std::ptrdiff_t>(chunk_ms.size() / 2),
                             chunk_ms.end());
    std::sort(late.begin(), late.end());
    out.sustain_seconds = elapsed;
    out.sustained_layer_ms = late[late.size() / 2];
    out.sustained_gemm_tflops = tflops(out.sustained_layer_ms);
    out.sustained_tokens_per_s = tokens_per_s(out.sustained_layer_ms);
    const double e_end = gpu_energy_j(device);
    if (!std::isnan(e_half) && !std::isnan(e_end) && layers_late > 0 && elapsed > t_half) {
      out.sustained_power_w = (e_end - e_half) / (elapsed - t_half);
      // Joules per layer-set over the layers per token: each token passes num_layers of them.
      out.sustained_j_per_token = (e_end - e_half) / static_cast<double>(layers_late) *
                                  c.num_layers / static_cast<double>(m);
    }
  }
  cudaEventDestroy(e0);
  cudaEventDestroy(e1);
  cudaStreamDestroy(stream);
  return out;
}

}  // namespace nf::cuda
