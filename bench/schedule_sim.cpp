// Offline-run simulation of the scheduler and KV manager: the real engine over a backend that
// does no work, with a KV pool of a given size, and a cost model of one step's GPU time fitted to
// the H200 per-op profile of dummy:llama3-8b (bench/results/cuda_flashinfer_llama3-8b_1024_512.json):
//   ms = fixed + per_token * T + per_kv_token * (context tokens read by attention)
// It answers "how many steps, how full, how many preemptions" for a scheduling policy without a
// GPU; the time is an estimate, the counts are exact.
//
//   bench_schedule [--requests 2000] [--input 1024] [--output 512] [--blocks 55615]
//                  [--max-batch-tokens 2048] [--max-running 1024]
//                  [--ms-fixed 1.0] [--ms-per-token 0.0212] [--ms-per-kv-token 3.9e-5]
//                  [--kv-admission peak|greedy] [--dataset TRACE] [--trace FILE]
// --dataset takes the first --requests lengths of an Azure CSV, the ShareGPT length CSV or a
// Mooncake JSONL (src/bench/datasets.h) instead of constant --input/--output. --trace writes one
// line per step: tokens, requests, decode rows, context tokens read, modelled ms.
#include <nanoflow/engine.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>

#include "bench/datasets.h"
#include "model/model_config.h"
#include "runtime/backend.h"

namespace {

struct CostModel {
  double fixed = 1.0, per_token = 0.0212, per_kv_token = 3.9e-5;
};

class NullBackend final : public nf::Backend {
 public:
  NullBackend(int64_t blocks, const CostModel& cost) : blocks_(blocks), cost_(cost) {
    config_.vocab_size = 32;
    config_.max_position_embeddings = 1 << 20;
  }
  const nf::ModelConfig& config() const override { return config_; }
  int block_size() const override { return 16; }
  int64_t num_kv_blocks() const override { return blocks_; }
  void forward(const nf::ScheduledBatch& b, std::span<float> logits) override {
    double ctx = 0;
    for (int32_t c : b.context_lens) ctx += c;
    const double ms = cost_.fixed + cost_.per_token * b.num_tokens() + cost_.per_kv_token * ctx;
    ms_ += ms;
    if (trace_ != nullptr) {
      int decodes = 0;
      for (int i = 0; i < b.num_requests(); ++i)
        if (b.seq_indptr[i + 1] - b.seq_indptr[i] == 1) ++decodes;
      std::fprintf(trace_, "%d %d %d %.0f %.3f\n", b.num_tokens(), b.num_requests(), decodes, ctx,
                   ms);
    }
    std::fill(logits.begin(), logits.end(), 0.0f);
  }
  double ms() const { return ms_; }
  void set_trace(std::FILE* f) { trace_ = f; }

 private:
  nf::ModelConfig config_;
  int64_t blocks_;
  CostModel cost_;
  double ms_ = 0;
  std::FILE* trace_ = nullptr;
};

}  // namespace

int main(int argc, char** argv) {
  int requests = 2000, input = 1024, output = 512, max_tokens = 2048, max_running = 1024;
  int64_t blocks = 55615;
  CostModel cost;
  std::string admission = "peak", dataset, trace_path;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string k = argv[i];
    const char* v = argv[i + 1];
    if (k == "--requests") requests = std::atoi(v);
    else if (k == "--input") input = std::atoi(v);
    else if (k == "--output") output = std::atoi(v);
    else if (k == "--blocks") blocks = std::atoll(v);
    else if (k == "--max-batch-tokens") max_tokens = std::atoi(v);
    else if (k == "--max-running") max_running = std::atoi(v);
    else if (k == "--ms-fixed") cost.fixed = std::atof(v);
    else if (k == "--ms-per-token") cost.per_token = std::atof(v);
    else if (k == "--ms-per-kv-token") cost.per_kv_token = std::atof(v);
    else if (k == "--kv-admission") admission = v;
    else if (k == "--dataset") dataset = v;
    else if (k == "--trace") trace_path = v;
    else {
      std::fprintf(stderr, "unknown option %s\n", k.c_str());
      return 2;
    }
  }
  nanoflow::EngineConfig c;
  c.max_batch_tokens = max_tokens;
  c.max_running_requests = max_running;
  c.kv_admission = admission;
  auto backend = std::make_unique<NullBackend>(blocks, cost);
  NullBackend* be = backend.get();
  std::FILE* trace_file = nullptr;
  if (!trace_path.empty()) {
    trace_file = std::fopen(trace_path.c_str(), "w");
    if (trace_file == nullptr) {
      std::fprintf(stderr, "cannot write %s\n", trace_path.c_str());
      return 2;
    }
    std::fprintf(trace_file, "tokens requests decodes context_tokens model_ms\n");
    be->set_trace(trace_file);
  }
  nanoflow::Engine engine(c, std::move(backend), {});
  std::vector<nf::TraceRequest> trace;
  if (!dataset.empty()) {
    trace = nf::load_trace(dataset, requests);
    requests = static_cast<int>(trace.size());
  }
  std::mt19937 rng(1);
  nanoflow::SamplingParams p;
  p.temperature = 0;
  p.ignore_eos = true;
  double tokens = 0;
  for (int i = 0; i < requests; ++i) {
    const int in = trace.empty() ? input : std::max(1, trace[i].input_len);
    p.max_tokens = trace.empty() ? output : std::max(1, trace[i].output_len);
    std::vector<int32_t> prompt(static_cast<size_t>(in));
    for (auto& t : prompt) t = static_cast<int32_t>(rng() % 32);
    engine.add_request(std::move(prompt), p);
    tokens += in + p.max_tokens;
  }
  std::vector<nanoflow::RequestOutput> outs;
  int finished = 0;
  int64_t full_steps = 0;
  while (finished < requests) {
    const auto before = engine.stats().scheduled_tokens;
    engine.step();
    if (engine.stats().scheduled_tokens - before == max_tokens) ++full_steps;
    outs.clear();
    engine.poll_outputs(outs, std::chrono::milliseconds(0));
    for (const auto& o : outs)
      if (o.finished()) ++finished;
  }
  if (trace_file != nullptr) std::fclose(trace_file);
  const auto s = engine.stats();
  std::printf(
      "{\"kv_admission\": \"%s\", \"dataset\": \"%s\", \"requests\": %d, \"input\": %d, \"output\": %d, \"kv_blocks\": %lld, \"steps\": %lld, "
      "\"full_steps\": %lld, \"tokens_per_step\": %.1f, \"preemptions\": %lld, "
      "\"scheduled_tokens\": %lld, \"model_s\": %.2f, \"model_total_tok_s\": %.0f}\n",
      admission.c_str(), dataset.c_str(), requests, input, output, static_cast<long long>(blocks), static_cast<long long>(s.steps),
      static_cast<long long>(full_steps), static_cast<double>(s.scheduled_tokens) / s.steps,
      static_cast<long long>(s.preemptions), static_cast<long long>(s.scheduled_tokens),
      be->ms() / 1e3, tokens / (be->ms() / 1e3));
  return 0;
}
