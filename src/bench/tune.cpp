#include "bench/tune.h"

#include <algorithm>
#include <chrono>
#include <random>
#include <vector>

#include "common/status.h"
#include "model/model_config.h"
#include "model/model_loader.h"
#include "runtime/pipeline.h"
#include "runtime/pipeline_search.h"
#ifdef NANOFLOW_HAVE_CUDA
#include "backends/cuda/cuda_backend.h"
#endif

namespace nf {

#ifndef NANOFLOW_HAVE_CUDA
nlohmann::json run_tune(const TuneConfig&) {
  fail(
      "tune: this build has no CUDA backend (nano-batch schedules are chosen on the GPU; the CPU "
      "backend runs every schedule one nano-operation after the other, so serial is its best)");
}
#else
namespace {

// An iteration of `decodes` single-token requests (contexts spread over 1025..1536) and prefill
// chunks filling the rest of `tokens`, each request on consecutive blocks of the pool (the block
// contents do not matter for timing).
ScheduledBatch iteration(int tokens, int decodes, int chunk, int block_size, int64_t pool_blocks) {
  ScheduledBatch b;
  b.seq_indptr.push_back(0);
  b.block_indptr.push_back(0);
  std::mt19937 rng(3);
  int64_t next_block = 0;
  auto add = [&](int q, int ctx) {
    const int blocks = (ctx + block_size - 1) / block_size;
    NF_CHECK(next_block + blocks <= pool_blocks,
             "tune: the KV pool ({} blocks) is too small for "
             "the representative iteration",
             pool_blocks);
    for (int i = 0; i < q; ++i) {
      const int p = ctx - q + i;
      b.token_ids.push_back(static_cast<int32_t>(rng() % 1000));
      b.positions.push_back(p);
      b.slot_mapping.push_back((next_block + p / block_size) * block_size + p % block_size);
    }
    for (int k = 0; k < blocks; ++k) b.block_ids.push_back(static_cast<int32_t>(next_block + k));
    next_block += blocks;
    b.seq_indptr.push_back(b.seq_indptr.back() + q);
    b.block_indptr.push_back(static_cast<int32_t>(b.block_ids.size()));
    b.context_lens.push_back(ctx);
    b.request_ids.push_back(static_cast<nanoflow::RequestId>(b.request_ids.size()));
  };
  for (int i = 0; i < decodes; ++i) add(1, 1025 + static_cast<int>(rng() % 512));
  for (int left = tokens - decodes; left > 0; left -= chunk)
    add(std::min(chunk, left), std::min(chunk, left));
  // One sampled row: the LM head and the logits' copy back are the same for every schedule.
  b.sample_rows = {b.seq_indptr.back() - 1};
  b.check_shape();
  return b;
}

}  // namespace

nlohmann::json run_tune(const TuneConfig& tc) {
  const LoadedModel model = load_model(tc.model).take();
  CudaBackendConfig bc;
  bc.max_batch_tokens = tc.max_batch_tokens;
  bc.gpu_memory_utilization = tc.gpu_memory_utilization;
  bc.device = tc.device;
  bc.attention = "flashinfer";
  const std::vector<float> inv_freq = rope_inv_freq(model.config.rope, model.config.head_dim);
  CudaBackend backend(model.config, *model.weights, inv_freq, bc);
  const int T = tc.max_batch_tokens;
  // Decode-heavy: a third of the rows decodes (as at 1024/512), as many as the pool holds.
  const int64_t pool = backend.num_kv_blocks();
  const int per_decode = (1536 + backend.block_size() - 1) / backend.block_size();
  const int decodes = static_cast<int>(std::min<int64_t>(T / 3, pool * 8 / 10 / per_decode));
  struct Kind {
    const char* name;
    ScheduledBatch batch;
  };
  std::vector<Kind> kinds;
  kinds.push_back({"decode-heavy", iteration(T, decodes, T, backend.block_size(), pool)});
  kinds.push_back({"prefill", iteration(T, 0, std::max(1, T / 2), backend.block_size(), pool)});

  const std::vector<PipelineSchedule> candidates = candidate_schedules();
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  nlohmann::json out;
  out["model"] = tc.model;
  out["max_batch_tokens"] = T;
  out["measurements"] = nlohmann::json::array();
  std::vector<float> logits;
  std::vector<PipelineSchedule> chosen;
  std::vector<double> shares;
  int skipped = 0;
  for (Kind& k : kinds) {
    const ScheduledBatch& b = k.batch;
    int d = 0;
    for (int r = 0; r < b.num_requests(); ++r) d += b.seq_indptr[r + 1] - b.seq_indptr[r] == 1;
    const double share = static_cast<double>(d) / b.num_tokens();
    logits.resize(b.sample_rows.size() * static_cast<size_t>(model.config.vocab_size));
    double best_ms = 0;
    PipelineSchedule best;
    for (size_t i = 0; i < candidates.size(); ++i) {
      if (i > 0 && elapsed() > tc.budget_s) {
        ++skipped;
        continue;
      }
      PipelineSchedule s = candidates[i];
      s.min_decode_share = 0;
      backend.set_pipeline(s.is_serial() ? PipelineConfig{} : PipelineConfig{{s}});
      for (int w = 0; w < 2; ++w) backend.forward(b, logits);  // warm-up (graphs, plans)
      std::vector<double> ms;
      for (int r = 0; r < tc.repeats; ++r) {
        const auto a = std::chrono::steady_clock::now();
        backend.forward(b, logits);  // synchronizes at its end
        ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - a)
                         .count());
      }
      std::sort(ms.begin(), ms.end());
      const double med = ms[ms.size() / 2];
      out["measurements"].push_back({{"iteration", k.name},
                                     {"tokens", b.num_tokens()},
                                     {"decode_rows", d},
                                     {"schedule", s.name},
                                     {"ms", med}});
      if (i == 0 || med < best_ms) {
        best_ms = med;
        best = s;
      }
    }
    out["best"][k.name] = {{"schedule", best.name}, {"ms", best_ms}, {"decode_share", share}};
    chosen.push_back(best);
    shares.push_back(share);
  }
  // The decode-heavy choice for batches at least halfway to its decode share, the prefill
  // choice below that (serial ones included, so that each range gets its own).
  PipelineConfig pc;
  for (size_t i = 0; i < chosen.size(); ++i) {
    chosen[i].min_decode_share = i == 0 ? shares[0] / 2 : 0.0;
    pc.schedules.push_back(chosen[i]);
  }
  out["schedules"] = to_json(pc)["schedules"];
  out["candidates"] = candidates.size();
  out["skipped_over_budget"] = skipped;
  out["elapsed_s"] = elapsed();
  return out;
}
#endif

}  // namespace nf
