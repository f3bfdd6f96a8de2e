#include "bench/offline.h"

#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <unordered_map>

#include "bench/datasets.h"
#include "common/stats.h"
#include "common/status.h"
#include "model/model_config.h"
#include "model/model_loader.h"
#include "runtime/pipeline.h"
#ifdef NANOFLOW_HAVE_CUDA
#include "backends/cuda/device.h"
#include "backends/cuda/gpu_power.h"
#include "backends/cuda/optimum.h"
#endif

namespace nf {
namespace {

struct Workload {
  std::vector<nanoflow::GenerateRequest> requests;
  int64_t prompt_tokens = 0, output_tokens = 0;
};

Workload make_workload(const OfflineBenchConfig& cfg, const ModelConfig& mc) {
  Workload w;
  std::mt19937_64 rng(cfg.seed);
  const PromptVocab vocab = prompt_vocab(static_cast<int>(mc.vocab_size));
  std::vector<TraceRequest> trace;
  const int rows = cfg.num_requests * std::max(1, cfg.turns);
  if (!cfg.dataset.empty()) {
    trace = load_trace(cfg.dataset, rows);
    if (trace.empty()) fail("--dataset {}: no requests", cfg.dataset);
  } else {
    trace.resize(static_cast<size_t>(rows));
    for (TraceRequest& r : trace) {
      r.input_len = cfg.input_len;
      r.output_len = cfg.output_len;
    }
  }
  // Traced lengths that do not fit the context are clipped (prompt first, then output).
  const int ctx = static_cast<int>(mc.max_position_embeddings);
  const int max_in = cfg.max_input_len > 0 ? cfg.max_input_len : ctx - 1;
  for (TraceRequest& r : trace) {
    r.input_len = std::clamp(r.input_len, 1, max_in);
    r.output_len = std::clamp(r.output_len, 1, std::max(1, ctx - r.input_len));
    nanoflow::GenerateRequest g;
    g.prompt = trace_prompt(r, vocab, cfg.seed, rng);
    g.params.max_tokens = r.output_len;
    g.params.ignore_eos = true;
    g.params.temperature = 0;
    w.prompt_tokens += r.input_len;
    w.output_tokens += r.output_len;
    w.requests.push_back(std::move(g));
  }
  return w;
}

// Multi-turn conversations in waves: conversation c's turn t takes the new text and output
// length of w.requests[c * turns + t]; its prompt is everything before plus that text. A
// conversation that would outgrow the context ends early.
struct MultiTurnResult {
  double secs = 0;
  int64_t prompt_tokens = 0, output_tokens = 0, requests = 0;
  std::vector<double> ttft_s;  // per request, in submission order
  std::vector<nlohmann::json> per_turn;
};

MultiTurnResult run_multi_turn(nanoflow::Engine& engine, const Workload& w, int conversations,
                               int turns, int context) {
  using Clock = std::chrono::steady_clock;
  MultiTurnResult res;
  std::vector<std::vector<int32_t>> history(static_cast<size_t>(conversations));
  std::vector<bool> open(static_cast<size_t>(conversations), true);
  engine.start();
  const auto t0 = Clock::now();
  for (int t = 0; t < turns; ++t) {
    struct InFlight {
      size_t conv;                  // its conversation
      Clock::time_point submitted;
      bool answered = false;        // its first token arrived
    };
    std::unordered_map<nanoflow::RequestId, InFlight> in_flight;
    std::vector<double> ttft;
    int64_t wave_prompt = 0;
    const auto wave0 = Clock::now();
    for (int c = 0; c < conversations; ++c) {
      const auto& r = w.requests[static_cast<size_t>(c) * turns + t];
      auto& h = history[static_cast<size_t>(c)];
      if (!open[c] ||
          static_cast<int>(h.size() + r.prompt.size()) + r.params.max_tokens > context) {
        open[c] = false;
        continue;
      }
      h.insert(h.end(), r.prompt.begin(), r.prompt.end());
      const nanoflow::RequestId id = engine.add_request(h, r.params);
      in_flight[id] = {static_cast<size_t>(c), Clock::now()};
      wave_prompt += static_cast<int64_t>(h.size());
    }
    size_t left = in_flight.size();
    std::vector<nanoflow::RequestOutput> deltas;
    int64_t wave_out = 0;
    while (left > 0) {
      deltas.clear();
      engine.poll_outputs(deltas, std::chrono::milliseconds(100));
      const auto now = Clock::now();
      for (const auto& d : deltas) {
        auto it = in_flight.find(d.id);
        if (it == in_flight.end()) continue;
        InFlight& f = it->second;
        if (!d.token_ids.empty() && !f.answered) {
          f.answered = true;
          ttft.push_back(std::chrono::duration<double>(now - f.submitted).count());
        }
        auto& h = history[f.conv];
        h.insert(h.end(), d.token_ids.begin(), d.token_ids.end());
        wave_out += static_cast<int64_t>(d.token_ids.size());
        if (d.finished()) --left;
      }
    }
    const double wave_s = std::chrono::duration<double>(Clock::now() - wave0).count();
    res.per_turn.push_back({{"turn", t},
                            {"requests", in_flight.size()},
                            {"prompt_tokens", wave_prompt},
                            {"output_tokens", wave_out},
                            {"seconds", wave_s},
                            {"ttft_p50_s", percentile(ttft, 50)},
                            {"ttft_p90_s", percentile(ttft, 90)}});
    res.prompt_tokens += wave_prompt;
    res.output_tokens += wave_out;
    res.requests += static_cast<int64_t>(in_flight.size());
    res.ttft_s.insert(res.ttft_s.end(), ttft.begin(), ttft.end());
  }
  res.secs = std::chrono::duration<double>(Clock::now() - t0).count();
  engine.stop();
  return res;
}

}  // namespace

#ifdef NANOFLOW_HAVE_CUDA
namespace {
nlohmann::json optimum_json(const cuda::OptimumProfile& opt) {
  nlohmann::json o;
  o["batch_tokens"] = opt.batch_tokens;
  o["layer_gemm_ms"] = opt.layer_ms;
  o["gemm_tflops"] = opt.gemm_tflops;
  o["sustain_seconds"] = opt.sustain_seconds;
  o["sustained_layer_gemm_ms"] = opt.sustained_layer_ms;
  o["sustained_gemm_tflops"] = opt.sustained_gemm_tflops;
  o["sustained_tokens_per_s"] = opt.sustained_tokens_per_s;
  o["sustained_power_w"] = opt.sustained_power_w;
  o["sustained_j_per_token"] = opt.sustained_j_per_token;
  o["burst_tokens_per_s"] = opt.tokens_per_s;
  // The rate the op floors use: the yardstick's.
  o["yardstick"] = opt.sustained() ? "sustained" : "burst";
  o["yardstick_gemm_tflops"] = opt.yardstick_gemm_tflops();
  for (const auto& g : opt.gemms)
    o["gemms"].push_back(
        {{"name", g.name}, {"m", g.m}, {"n", g.n}, {"k", g.k}, {"ms", g.ms}, {"tflops", g.tflops}});
  return o;
}
}  // namespace
#endif

nlohmann::json run_offline_bench(nanoflow::EngineConfig ec, const OfflineBenchConfig& cfg) {
  nlohmann::json j;
  const ModelConfig mc = load_model(ec.model).take().config;
  const Workload w = make_workload(cfg, mc);
  j["gpu"] = nullptr;
  j["optimum_tokens_per_s"] = nullptr;
  j["pct_of_optimum"] = nullptr;
  j["optimum_burst_tokens_per_s"] = nullptr;
  j["pct_of_burst_optimum"] = nullptr;
#ifdef NANOFLOW_HAVE_CUDA
  if (ec.device == "cuda") {
    const auto devices = cuda::list_devices();
    if (!devices.empty()) j["gpu"] = devices.front().name;
    // Before the engine takes the GPU's memory. With tensor parallelism every GPU runs the whole
    // dense batch through its shard of each layer GEMM (heads and FFN over N), at once: the
    // optimum is the batch over the layers' time at the shard shapes (DESIGN.md's GEMM rate at
    // the dense batch size, of all N GPUs, over the model's FLOPs per token).
    const ModelConfig shard = tensor_parallel_shard(mc, std::max(1, ec.tensor_parallel_size));
    const cuda::OptimumProfile opt =
        cuda::profile_optimum(shard, ec.max_batch_tokens, 0, cfg.optimum_sustain_s);
    j["optimum_tokens_per_s"] = opt.yardstick_tokens_per_s();
    j["optimum_burst_tokens_per_s"] = opt.tokens_per_s;
    j["optimum"] = optimum_json(opt);
    // Profile iterations in the middle of the run (steady state) unless told otherwise.
    const int64_t est_steps =
        (w.prompt_tokens + w.output_tokens) / std::max(1, ec.max_batch_tokens);
    ec.profile_first_step =
        cfg.profile_step >= 0 ? cfg.profile_step : static_cast<int>(std::max<int64_t>(est_steps / 2, 2));
  }
#endif
  auto engine = nanoflow::Engine::create(ec);
  if (cfg.warmup_requests > 0) {
    std::vector<nanoflow::GenerateRequest> warm(
        w.requests.begin(), w.requests.begin() + std::min<size_t>(cfg.warmup_requests, w.requests.size()));
    for (auto& r : warm) r.params.max_tokens = std::min(r.params.max_tokens, 4);
    engine->generate(warm);
  }
  const nanoflow::EngineStats before = engine->stats();
  // The GPUs' energy over the run (NVML; NaN where it cannot be read).
  const int num_gpus = std::max(1, ec.tensor_parallel_size);
  auto energy_j = [&] {
    double e = std::numeric_limits<double>::quiet_NaN();
#ifdef NANOFLOW_HAVE_CUDA
    if (ec.device == "cuda") {
      e = 0;
      for (int d = 0; d < num_gpus; ++d) e += cuda::gpu_energy_j(d);
    }
#endif
    return e;
  };
  const double energy_before = energy_j();
  const auto t0 = std::chrono::steady_clock::now();
  double secs = 0;
  int64_t out_tokens = 0, prompt_tokens = w.prompt_tokens, num_requests = 0;
  if (cfg.turns > 1) {
    const MultiTurnResult mt = run_multi_turn(*engine, w, cfg.num_requests, cfg.turns,
                                              static_cast<int>(mc.max_position_embeddings));
    secs = mt.secs;
    out_tokens = mt.output_tokens;
    prompt_tokens = mt.prompt_tokens;
    num_requests = mt.requests;
    j["turns"] = cfg.turns;
    j["conversations"] = cfg.num_requests;
    j["per_turn"] = mt.per_turn;
    j["ttft_s"] = {
        {"mean", mt.ttft_s.empty() ? 0.0
                                   : std::accumulate(mt.ttft_s.begin(), mt.ttft_s.end(), 0.0) /
                                         static_cast<double>(mt.ttft_s.size())},
        {"p50", percentile(mt.ttft_s, 50)},
        {"p90", percentile(mt.ttft_s, 90)}};
  } else {
    const auto outs = engine->generate(w.requests);
    secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    for (const auto& o : outs) out_tokens += static_cast<int64_t>(o.token_ids.size());
    num_requests = static_cast<int64_t>(w.requests.size());
  }
  const double energy_after = energy_j();
  const nanoflow::EngineStats after = engine->stats();
  const int64_t steps = std::max<int64_t>(1, after.steps - before.steps);

  j["model"] = ec.model;
  j["device"] = ec.device;
  j["dataset"] = cfg.dataset.empty() ? nlohmann::json(nullptr) : nlohmann::json(cfg.dataset);
  j["num_requests"] = num_requests;
  j["input_len"] =
      cfg.dataset.empty() && cfg.turns <= 1
          ? nlohmann::json(cfg.input_len)
          : nlohmann::json(static_cast<double>(prompt_tokens) / std::max<int64_t>(1, num_requests));
  j["output_len"] =
      cfg.dataset.empty() && cfg.turns <= 1
          ? nlohmann::json(cfg.output_len)
          : nlohmann::json(static_cast<double>(out_tokens) / std::max<int64_t>(1, num_requests));
  j["max_batch_tokens"] = ec.max_batch_tokens;
  j["max_running_requests"] = ec.max_running_requests;
  j["cuda_graphs"] = ec.cuda_graphs;
  // Overlap: a schedule that puts nano-operations on more than one stream (--pipeline).
  j["overlap"] = false;
  j["pipeline"] = nullptr;
  if (ec.pipeline_file == "auto") j["pipeline"] = "auto (timed at start-up; the choice is logged)";
  if (!ec.pipeline_file.empty() && ec.pipeline_file != "auto") {
    PipelineConfig pc = load_pipeline_file(ec.pipeline_file);
    if (ec.pipeline_one_stream) pc = one_stream(std::move(pc));
    j["pipeline"] = to_json(pc);
    for (const PipelineSchedule& s : pc.schedules)
      for (const NanoOp& op : s.issue_order())
        if (op.stream != 0) j["overlap"] = true;
  }
  j["elapsed_s"] = secs;
  j["prompt_tokens"] = prompt_tokens;
  j["output_tokens"] = out_tokens;
  j["total_tokens_per_s"] = static_cast<double>(prompt_tokens + out_tokens) / secs;
  j["output_tokens_per_s"] = static_cast<double>(out_tokens) / secs;
  j["requests_per_s"] = static_cast<double>(num_requests) / secs;
  j["tensor_parallel_size"] = std::max(1, ec.tensor_parallel_size);
  j["total_tokens_per_s_per_gpu"] =
      j["total_tokens_per_s"].get<double>() / std::max(1, ec.tensor_parallel_size);
  if (!j["optimum_tokens_per_s"].is_null()) {
    j["pct_of_optimum"] = 100.0 * j["total_tokens_per_s"].get<double>() /
                          j["optimum_tokens_per_s"].get<double>();
    j["pct_of_burst_optimum"] = 100.0 * j["total_tokens_per_s"].get<double>() /
                                j["optimum_burst_tokens_per_s"].get<double>();
  }
  // Energy: on a GPU held at its power limit (the H200 at 700 W) throughput is power over
  // joules per token, so the run's joules per token against the GEMM-only optimum's say how much
  // of the gap to the optimum is energy spent beside the GEMMs (attention's HBM traffic, ...).
  j["energy_j"] = nullptr;
  j["mean_power_w_per_gpu"] = nullptr;
  j["joules_per_token"] = nullptr;
  j["pct_of_optimum_energy"] = nullptr;
  if (std::isfinite(energy_after - energy_before) && energy_after > energy_before) {
    const double e = energy_after - energy_before;
    j["energy_j"] = e;
    j["mean_power_w_per_gpu"] = e / secs / num_gpus;
    j["joules_per_token"] = e / static_cast<double>(prompt_tokens + out_tokens);
    const double opt_j =
        j.contains("optimum") ? j["optimum"].value("sustained_j_per_token", 0.0) * num_gpus : 0.0;
    if (opt_j > 0) j["pct_of_optimum_energy"] = 100.0 * opt_j / j["joules_per_token"].get<double>();
  }
  j["steps"] = steps;
  j["tokens_per_step"] = static_cast<double>(after.scheduled_tokens - before.scheduled_tokens) / steps;
  j["ms_per_step"] = 1e3 * secs / steps;
  j["host_schedule_ms_per_step"] = (after.schedule_ms - before.schedule_ms) / steps;
  j["executor_ms_per_step"] = (after.forward_ms - before.forward_ms) / steps;
  {
    const double busy = after.device_busy_ms - before.device_busy_ms;
    const double idle = after.device_idle_ms - before.device_idle_ms;
    j["device_busy_ms_per_step"] = busy / steps;
    j["device_idle_ms_per_step"] = idle / steps;
    // The share of the run the GPU sat idle between iterations (host work not hidden).
    j["device_idle_pct"] = busy + idle > 0 ? nlohmann::json(100.0 * idle / (busy + idle))
                                           : nlohmann::json(nullptr);
  }
  j["preemptions"] = after.preemptions - before.preemptions;
  j["cached_prompt_tokens"] = after.cached_prompt_tokens - before.cached_prompt_tokens;
  // Where the cached prompt tokens came from: the device's prefix cache or an offload tier.
  {
    const int64_t host = after.kv_host_hit_tokens - before.kv_host_hit_tokens;
    const int64_t disk = after.kv_disk_hit_tokens - before.kv_disk_hit_tokens;
    const int64_t dev = j["cached_prompt_tokens"].get<int64_t>() - host - disk;
    const double pt = static_cast<double>(std::max<int64_t>(1, prompt_tokens));
    const int64_t prefill_computed = prompt_tokens - (dev + host + disk);
    j["kv_offload"] = {
        {"host_gb", ec.kv_host_gb},
        {"disk_dir", ec.kv_disk_dir},
        {"disk_gb", ec.kv_disk_gb},
        {"prefix_hit_tokens", {{"device", dev}, {"host", host}, {"disk", disk}}},
        {"prefix_hit_rate", {{"device", dev / pt}, {"host", host / pt}, {"disk", disk / pt}}},
        {"prefill_tokens_saved", dev + host + disk},
        {"prefill_tokens_computed", prefill_computed},
        {"blocks_saved", after.kv_saved_blocks - before.kv_saved_blocks},
        {"host_blocks", after.kv_host_blocks},
        {"disk_blocks", after.kv_disk_blocks},
        {"disk_enabled", after.kv_disk_enabled}};
    // With prefix reuse the total counts cached prompt tokens that were never computed, so it
    // can pass the optimum: the computed tokens' rate is the one to set against it.
    const int64_t computed = prefill_computed + out_tokens;
    j["computed_tokens_per_s"] = static_cast<double>(computed) / secs;
    j["pct_of_optimum_computed"] =
        j["optimum_tokens_per_s"].is_null()
            ? nlohmann::json(nullptr)
            : nlohmann::json(100.0 * j["computed_tokens_per_s"].get<double>() /
                             j["optimum_tokens_per_s"].get<double>());
  }

  const std::string prof = engine->op_profile_json();
  if (!prof.empty()) {
    nlohmann::json p = nlohmann::json::parse(prof);
    // Floors: GEMM-like work at the profiled GEMM rate, memory traffic at HBM bandwidth.
    const double rate =
        j.contains("optimum") ? j["optimum"]["yardstick_gemm_tflops"].get<double>() * 1e12 : 0;
    double floor_sum = 0;
    for (auto& [op, st] : p["ops"].items()) {
      const double f = st["flops_per_step"].get<double>(), b = st["bytes_per_step"].get<double>();
      const double compute_ms = rate > 0 ? 1e3 * f / rate : 0;
      const double memory_ms = 1e3 * b / cfg.hbm_bytes_per_s;
      st["floor_ms"] = std::max(compute_ms, memory_ms);
      st["bound"] = compute_ms >= memory_ms ? "compute" : "memory";
      floor_sum += st["floor_ms"].get<double>();
    }
    p["floor_ms_sum"] = floor_sum;
    p["gemm_rate_tflops"] = rate / 1e12;
    p["hbm_tb_per_s"] = cfg.hbm_bytes_per_s / 1e12;
    j["op_profile"] = p;
  }
  return j;
}

std::string format_op_profile(const nlohmann::json& j) {
  if (!j.contains("op_profile")) return {};
  const auto& p = j["op_profile"];
  std::string s = fmt::format(
      "per-op time of {} profiled iterations ({:.0f} tokens, {:.0f} decode rows each; {} "
      "attention): {:.2f} ms per iteration\n",
      p["steps"].get<int>(), p["tokens_per_step"].get<double>(),
      p["decode_rows_per_step"].get<double>(), p["attention_kernel"].get<std::string>(),
      p["step_ms"].get<double>());
  s += fmt::format("  {:<18} {:>9} {:>9} {:>7}  {}\n", "op", "ms", "floor ms", "x floor", "bound");
  std::vector<std::pair<double, std::string>> order;
  for (const auto& [op, st] : p["ops"].items()) order.emplace_back(-st["ms_per_step"].get<double>(), op);
  std::sort(order.begin(), order.end());
  for (const auto& [neg, op] : order) {
    const auto& st = p["ops"][op];
    const double ms = st["ms_per_step"].get<double>(), fl = st["floor_ms"].get<double>();
    s += fmt::format("  {:<18} {:>9.3f} {:>9.3f} {:>7} {}\n", op, ms, fl,
                     fl > 0 ? fmt::format("{:.2f}", ms / fl) : std::string("-"),
                     st["bound"].get<std::string>());
  }
  return s;
}

}  // namespace nf
