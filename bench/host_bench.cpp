// Host time of one engine iteration (scheduler + KV manager + batch building + output
// processing) with a backend that does no work: the CPU side that must hide under a GPU step.
// Steady state of NanoFlow's dense batch: 512 running requests decoding, the rest of a
// 2048-token budget filled with prefill chunks, prompts 1024 and outputs 512 tokens.
#include <benchmark/benchmark.h>
#include <nanoflow/engine.h>

#include <random>

#include "model/model_config.h"
#include "runtime/backend.h"

namespace {

class NullBackend final : public nf::Backend {
 public:
  NullBackend() {
    config_.vocab_size = 32;
    config_.max_position_embeddings = 8192;
  }
  const nf::ModelConfig& config() const override { return config_; }
  int block_size() const override { return 16; }
  int64_t num_kv_blocks() const override { return 800 * 100; }
  void forward(const nf::ScheduledBatch& b, std::span<float> logits) override {
    benchmark::DoNotOptimize(b.token_ids.data());
    std::fill(logits.begin(), logits.end(), 0.0f);
  }

 private:
  nf::ModelConfig config_;
};

void BM_EngineStep(benchmark::State& state) {
  nanoflow::EngineConfig c;
  c.max_batch_tokens = 2048;
  c.max_running_requests = static_cast<int>(state.range(0));
  c.async_schedule = state.range(1) != 0;
  nanoflow::Engine engine(c, std::make_unique<NullBackend>(), {});
  std::mt19937 rng(1);
  nanoflow::SamplingParams p;
  p.temperature = 0;
  p.max_tokens = 512;
  p.ignore_eos = true;
  auto add = [&] {
    std::vector<int32_t> prompt(1024);
    for (auto& t : prompt) t = static_cast<int32_t>(rng() % 32);
    engine.add_request(prompt, p);
  };
  for (int i = 0; i < c.max_running_requests + 64; ++i) add();
  // Warm up to the steady state: all slots running, decode plus prefill in every step.
  for (int i = 0; i < 600; ++i) engine.step();
  std::vector<nanoflow::RequestOutput> outs;
  const auto before = engine.stats();
  for (auto _ : state) {
    engine.step();
    outs.clear();
    engine.poll_outputs(outs, std::chrono::milliseconds(0));
    for (const auto& o : outs)
      if (o.finished()) add();
  }
  const auto after = engine.stats();
  const double steps = static_cast<double>(after.steps - before.steps);
  state.counters["running"] = after.num_running;
  state.counters["tokens_per_step"] = static_cast<double>(after.scheduled_tokens - before.scheduled_tokens) / steps;
  state.counters["schedule_ms"] = (after.schedule_ms - before.schedule_ms) / steps;
}
BENCHMARK(BM_EngineStep)->Args({512, 0})->Args({512, 1})->Args({680, 1})->Unit(benchmark::kMillisecond)->MinTime(3.0);

}  // namespace

BENCHMARK_MAIN();
