// nanoflow: the single command-line entry point: serve, generate, tokenize, bench (tune comes
// with its issue). User errors print one line and exit with code 2.
#include <nanoflow/engine.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <unordered_map>

#include "bench/offline.h"
#include "bench/tune.h"
#include "common/json_file.h"
#include "common/shell.h"
#include "common/status.h"
#include "engine/sampling_json.h"
#include "model/model_config.h"
#include "bench/bench_serve.h"
#include "server/server.h"
#include "tokenizer/tokenizer.h"

namespace {

using nanoflow::Engine;
using nanoflow::EngineConfig;
using nanoflow::RequestOutput;
using nanoflow::SamplingParams;

std::string json_dump(const nlohmann::json& j) {
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::vector<int32_t> parse_ids(const std::string& s) {
  std::vector<int32_t> ids;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    try {
      size_t used = 0;
      const long v = std::stol(item, &used);
      if (used != item.size() || v < 0 || v > INT32_MAX) throw std::invalid_argument(item);
      ids.push_back(static_cast<int32_t>(v));
    } catch (const std::exception&) {
      nf::fail("--prompt-ids: '{}' is not a token id", item);
    }
  }
  if (ids.empty()) nf::fail("--prompt-ids: no token ids given");
  return ids;
}

struct EngineOptions {
  EngineConfig engine;
  void add_to(CLI::App* app) {
    app->add_option("--model", engine.model,
                    "Model: a .gguf file, a Hugging Face directory, or dummy:<preset|config.json> "
                    "(presets: llama3-8b, llama3-70b, llama2-7b, qwen2-7b, smollm2-135m)")
        ->required();
    app->add_option("--device", engine.device, "cpu or cuda")
        ->check(CLI::IsMember({"cpu", "cuda"}))
        ->capture_default_str();
    app->add_option("--max-batch-tokens", engine.max_batch_tokens, "Token budget of one iteration")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app->add_option("--max-running-requests", engine.max_running_requests,
                    "Cap on requests in one iteration")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app->add_option("--block-size", engine.block_size, "Tokens per KV block")
        ->check(CLI::Range(1, 1024))
        ->capture_default_str();
    app->add_option("--kv-cache-gb", engine.kv_cache_gb, "KV cache size (CPU backend), GiB")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app->add_option("--num-kv-blocks", engine.num_kv_blocks,
                    "Exact KV pool size in blocks, instead of --kv-cache-gb or "
                    "--gpu-memory-utilization (0: sized from memory)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app->add_option("--gpu-memory-utilization", engine.gpu_memory_utilization,
                    "Share of the GPU's memory for weights, activations and the KV cache (CUDA)")
        ->check(CLI::Range(0.01, 1.0))
        ->capture_default_str();
    app->add_option("--attention", engine.attention,
                    "CUDA attention kernel: auto (FlashInfer where built in), flashinfer, native, "
                    "tc (experimental: our tensor-core decode kernels, the streaming one inside SM "
                    "partitions, FlashInfer for prefill)")
        ->check(CLI::IsMember({"auto", "flashinfer", "native", "tc"}))
        ->capture_default_str();
    app->add_option("--tc-decode-kernel", engine.tc_decode_kernel,
                    "--attention tc on the whole GPU: streams (the persistent TMA-fed kernel, "
                    "~11% fewer joules per GB) or per-request (for comparisons)")
        ->check(CLI::IsMember({"streams", "per-request"}))
        ->capture_default_str();
    app->add_option("--pipeline-trace", engine.pipeline_trace,
                    "CUDA nano-batch pipeline: print the N-th split iteration's nano-operation "
                    "timeline as TRACE lines on stderr (a diagnostic: it synchronizes; 0: off)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app->add_option("--cuda-graphs", engine.cuda_graphs,
                    "CUDA graphs for the dense ops (token count padded to a bucket; attention "
                    "runs eagerly): true or false")
        ->capture_default_str();
    app->add_option("--pipeline", engine.pipeline_file,
                    "Nano-batch schedules: a file (JSON: {\"schedules\": [...]}, see "
                    "src/runtime/pipeline.h; `nanoflow tune` writes one), or auto (timed at "
                    "start-up within --tune-budget-s; CUDA only, serial on the CPU); default: "
                    "one nano-batch (overlap off)")
        ->check(CLI::ExistingFile | CLI::IsMember({"auto"}));
    app->add_option("--tune-budget-s", engine.tune_budget_s,
                    "--pipeline auto: seconds for timing the candidate schedules")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
    app->add_flag("--pipeline-one-stream", engine.pipeline_one_stream,
                  "Run the --pipeline schedules' nano-operations on one stream: the split without "
                  "overlap (ablation)");
    app->add_option("--threads", engine.threads, "CPU threads (0: all)")->capture_default_str();
    app->add_option("--tensor-parallel-size", engine.tensor_parallel_size,
                    "Ranks to split the model over (CUDA: one GPU each, devices 0..N-1, "
                    "collectives over NCCL; CPU: threads of one process). Heads, KV heads "
                    "(and on CUDA the FFN size) must be divisible by it")
        ->check(CLI::Range(1, 256))
        ->capture_default_str();
    app->add_option("--tp-comm-ctas", engine.tp_comm_ctas,
                    "CUDA tensor parallel: CTAs (so SMs) each all-reduce may use, leaving the "
                    "rest to the GEMMs it overlaps in a nano-batch schedule (0: NCCL's choice, "
                    "or 16 with --tp-allreduce peer)")
        ->check(CLI::Range(0, 64))
        ->capture_default_str();
    app->add_option("--tp-allreduce", engine.tp_allreduce,
                    "CUDA tensor parallel: the all-reduces through NCCL (nccl), or one-shot over "
                    "NVLink peer memory (peer; experimental)")
        ->check(CLI::IsMember({"nccl", "peer"}))
        ->capture_default_str();
    app->add_flag("!--no-prefix-caching", engine.enable_prefix_caching,
                  "Do not reuse the KV cache of shared prompt prefixes");
    app->add_flag("!--no-async-schedule", engine.async_schedule,
                  "Plan each step after the previous one finished (no one-step-ahead scheduling)");
    app->add_option("--kv-admission", engine.kv_admission,
                    "Admit a waiting request only while the projected peak KV use of the running "
                    "requests (each grown to max_tokens, or 1.5x the recent mean output) fits "
                    "(peak), or while its prompt's blocks are free (greedy)")
        ->check(CLI::IsMember({"peak", "greedy"}))
        ->capture_default_str();
    app->add_option(
           "--kv-host-gb", engine.kv_host_gb,
           "KV offload: host memory for the full KV blocks of finished requests, loaded "
           "back when a later prompt has the same prefix (0: none; on CUDA the copies are synchronous for now)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    app->add_option("--kv-disk-dir", engine.kv_disk_dir,
                    "KV offload: a directory for the blocks the host tier evicts (files written "
                    "and read with io_uring, checksummed, reused after a restart)");
    app->add_option("--kv-disk-gb", engine.kv_disk_gb, "KV offload: capacity of --kv-disk-dir")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
  }
};

int cmd_tokenize(const std::string& model, bool add_special) {
  auto tok = nf::Tokenizer::load(model);
  std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  nf::EncodeOptions opts;
  opts.add_special = add_special;
  nlohmann::json ids = tok->encode(text, opts);
  std::cout << json_dump(ids) << "\n";
  return 0;
}

struct GenerateArgs {
  EngineOptions eo;
  std::optional<std::string> prompt;
  std::optional<std::string> prompt_ids;
  SamplingParams params;
  std::optional<float> temperature, top_p;
  std::optional<int> top_k;
  std::optional<uint64_t> seed;
  bool json = false;
  std::string input, output;  // batch mode
};

// One result object in the format of generate --json.
nlohmann::json result_json(const RequestOutput& o) {
  nlohmann::json j;
  j["token_ids"] = o.token_ids;
  j["text"] = o.text;
  nlohmann::json lp = nlohmann::json::array();
  for (const auto& step : o.top_logprobs) {
    nlohmann::json s = nlohmann::json::array();
    for (const auto& [id, l] : step) s.push_back({id, l});
    lp.push_back(s);
  }
  j["logprobs"] = lp;
  j["finish_reason"] = nanoflow::finish_reason_name(o.finish_reason);
  if (!o.error.empty()) j["error"] = o.error;
  return j;
}

// Batch mode: every line of the input is a request; all are submitted at once so they batch;
// one result line per request, in input order (with n > 1, "choices" holds the n results).
int cmd_generate_batch(GenerateArgs& a) {
  std::ifstream in(a.input);
  if (!in) nf::fail("{}: cannot open", a.input);
  auto engine = Engine::create(a.eo.engine);
  const nf::Tokenizer* tok = engine->tokenizer();
  std::vector<nanoflow::GenerateRequest> reqs;
  std::vector<std::string> wheres;  // "<file>:<line>" of each request
  std::string line;
  for (int lineno = 1; std::getline(in, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = fmt::format("{}:{}", a.input, lineno);
    const nlohmann::json j = nf::parse_json(line, where);
    nanoflow::GenerateRequest r;
    r.params = nf::sampling_params_from_json(j, where);
    if (j.contains("prompt_ids")) {
      if (!j["prompt_ids"].is_array()) nf::fail("{}: field 'prompt_ids': expected a list of token ids", where);
      for (const auto& x : j["prompt_ids"])
        r.prompt.push_back(static_cast<int32_t>(
            nf::json_integer(x, 0, INT32_MAX, where + ": field 'prompt_ids'")));
    } else if (j.contains("prompt") && j["prompt"].is_string()) {
      if (!tok) nf::fail("{}: field 'prompt' needs a model with a tokenizer; use prompt_ids", where);
      nf::EncodeOptions opts;
      opts.add_special = true;
      r.prompt = tok->encode(j["prompt"].get<std::string>(), opts);
    } else {
      nf::fail("{}: needs 'prompt' (a string) or 'prompt_ids'", where);
    }
    reqs.push_back(std::move(r));
    wheres.push_back(where);
  }
  // Validate and submit everything before running anything (and before the output file is
  // made: a bad line leaves no empty file behind).
  std::vector<nanoflow::RequestId> firsts;
  size_t total = 0;
  for (size_t i = 0; i < reqs.size(); ++i) {
    try {
      firsts.push_back(engine->add_request(reqs[i].prompt, reqs[i].params));
    } catch (const nf::Error& e) {
      nf::fail("{}: {}", wheres[i], e.what());
    }
    total += static_cast<size_t>(reqs[i].params.n);
  }
  std::ofstream out(a.output);
  if (!out) nf::fail("{}: cannot write", a.output);
  std::unordered_map<nanoflow::RequestId, RequestOutput> acc;
  size_t done = 0;
  int64_t generated = 0;
  const auto t0 = std::chrono::steady_clock::now();
  auto last_draw = t0 - std::chrono::seconds(1);
  std::vector<RequestOutput> deltas;
  while (done < total) {
    engine->step();
    deltas.clear();
    engine->poll_outputs(deltas, std::chrono::milliseconds(0));
    for (const auto& d : deltas) {
      auto& o = acc[d.id];
      o.id = d.id;
      o.index = d.index;
      o.append(d);
      generated += static_cast<int64_t>(d.token_ids.size());
      done += d.finished();
    }
    const auto now = std::chrono::steady_clock::now();
    if (now - last_draw > std::chrono::milliseconds(200) || done == total) {
      last_draw = now;
      const double secs = std::chrono::duration<double>(now - t0).count();
      const int width = 30, filled = static_cast<int>(width * done / std::max<size_t>(1, total));
      std::fprintf(stderr, "\r[%s%s] %zu/%zu  %.1f tokens/s", std::string(filled, '#').c_str(),
                   std::string(width - filled, '.').c_str(), done, total, generated / std::max(secs, 1e-9));
    }
  }
  std::fprintf(stderr, "\n");
  for (size_t i = 0; i < reqs.size(); ++i) {
    if (reqs[i].params.n == 1) {
      out << json_dump(result_json(acc[firsts[i]])) << "\n";
      continue;
    }
    nlohmann::json choices = nlohmann::json::array();
    for (int k = 0; k < reqs[i].params.n; ++k) choices.push_back(result_json(acc[firsts[i] + k]));
    out << json_dump({{"choices", choices}}) << "\n";
  }
  return 0;
}

int cmd_generate(GenerateArgs& a) {
  const std::string& model = a.eo.engine.model;
  // The tokenizer is needed for a text prompt and to show text; a dummy model has none.
  std::unique_ptr<nf::Tokenizer> tok;
  if (model.rfind("dummy:", 0) != 0) tok = nf::Tokenizer::load(model);
  std::vector<int32_t> prompt;
  if (a.prompt) {
    if (!tok) nf::fail("--prompt needs a model with a tokenizer; use --prompt-ids");
    nf::EncodeOptions opts;
    opts.add_special = true;
    prompt = tok->encode(*a.prompt, opts);
  } else {
    prompt = parse_ids(*a.prompt_ids);
  }
  auto engine = Engine::create(a.eo.engine);
  SamplingParams p = a.params;
  if (a.temperature) p.temperature = *a.temperature;
  if (a.top_p) p.top_p = *a.top_p;
  if (a.top_k) p.top_k = *a.top_k;
  p.seed = a.seed;

  const auto t0 = std::chrono::steady_clock::now();
  const nanoflow::RequestId id = engine->add_request(prompt, p);
  RequestOutput all;
  all.id = id;
  std::vector<RequestOutput> deltas;
  while (!all.finished()) {
    engine->step();
    deltas.clear();
    engine->poll_outputs(deltas, std::chrono::milliseconds(0));
    for (const RequestOutput& d : deltas) {
      all.append(d);
      if (!a.json) std::cout << d.text << std::flush;
    }
  }
  const RequestOutput& last = all;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (a.json) {
    std::cout << json_dump(result_json(last)) << "\n";
  } else {
    std::cout << std::endl;
    std::fprintf(stderr, "[%zu prompt tokens, %zu generated, %.2f s, %.1f tokens/s, finish: %s]\n",
                 prompt.size(), last.token_ids.size(), secs,
                 static_cast<double>(last.token_ids.size()) / secs,
                 nanoflow::finish_reason_name(last.finish_reason));
  }
  return 0;
}

struct BenchArgs {
  EngineOptions eo;
  nf::OfflineBenchConfig cfg;
  std::string result_json;
};

int cmd_bench_offline(BenchArgs& a, const std::string& command) {
  nlohmann::json j = nf::run_offline_bench(a.eo.engine, a.cfg);
  j["command"] = command;
  j["git_commit"] = nf::git_commit();
  j["host_cpu"] = nf::shell_line("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-");
  j["host_threads"] = nf::shell_line("nproc");
  j["date"] = nf::shell_line("date -u +%Y-%m-%dT%H:%M:%SZ");
  auto num = [&](const char* k) { return j[k].is_null() ? std::string("-") : j[k].dump(); };
  std::printf("%-22s %s\n", "model", a.eo.engine.model.c_str());
  std::printf("%-22s %s\n", "device / gpu", (a.eo.engine.device + " / " + (j["gpu"].is_null() ? std::string("-") : j["gpu"].get<std::string>())).c_str());
  std::printf("%-22s %s\n", "dataset", j["dataset"].is_null() ? "constant lengths" : j["dataset"].get<std::string>().c_str());
  std::printf("%-22s %s (mean input %s, output %s)\n", "requests", num("num_requests").c_str(), num("input_len").c_str(), num("output_len").c_str());
  std::printf("%-22s %.1f\n", "total tokens/s", j["total_tokens_per_s"].get<double>());
  std::printf("%-22s %.1f\n", "output tokens/s", j["output_tokens_per_s"].get<double>());
  std::printf("%-22s %.3f\n", "requests/s", j["requests_per_s"].get<double>());
  std::printf("%-22s %.2f ms, %.0f tokens\n", "per iteration", j["ms_per_step"].get<double>(), j["tokens_per_step"].get<double>());
  if (!j["device_idle_pct"].is_null())
    std::printf("%-22s %.2f ms busy, %.3f ms idle between iterations (%.2f%% idle)\n", "GPU per iteration",
                j["device_busy_ms_per_step"].get<double>(), j["device_idle_ms_per_step"].get<double>(),
                j["device_idle_pct"].get<double>());
  if (!j["optimum_tokens_per_s"].is_null()) {
    const auto& o = j["optimum"];
    std::printf("%-22s %.1f tokens/s (layer GEMMs at %.0f TFLOP/s, batch %d, %s)\n", "optimum",
                j["optimum_tokens_per_s"].get<double>(), o["yardstick_gemm_tflops"].get<double>(),
                a.eo.engine.max_batch_tokens,
                o["yardstick"] == "sustained"
                    ? fmt::format("sustained over {:.1f} s", o["sustain_seconds"].get<double>()).c_str()
                    : "burst");
    std::printf("%-22s %.1f%%\n", "% of optimum", j["pct_of_optimum"].get<double>());
    std::printf("%-22s %.1f tokens/s (%.0f TFLOP/s, cool GPU at boost clock): %.1f%%\n",
                "burst optimum", j["optimum_burst_tokens_per_s"].get<double>(),
                o["gemm_tflops"].get<double>(), j["pct_of_burst_optimum"].get<double>());
  }
  if (!j["joules_per_token"].is_null()) {
    std::printf("%-22s %.1f mJ/token, %.0f W per GPU", "energy",
                1e3 * j["joules_per_token"].get<double>(), j["mean_power_w_per_gpu"].get<double>());
    if (!j["pct_of_optimum_energy"].is_null())
      std::printf(" (the optimum's GEMMs: %.1f mJ/token at %.0f W; %.1f%%)",
                  1e3 * j["optimum"]["sustained_j_per_token"].get<double>(),
                  j["optimum"]["sustained_power_w"].get<double>(),
                  j["pct_of_optimum_energy"].get<double>());
    std::printf("\n");
  }
  if (j.contains("turns"))
    std::printf("%-22s %s conversations x %s turns, TTFT p50 %.3f s, p90 %.3f s\n", "multi-turn",
                num("conversations").c_str(), num("turns").c_str(),
                j["ttft_s"]["p50"].get<double>(), j["ttft_s"]["p90"].get<double>());
  {
    const auto& o = j["kv_offload"]["prefix_hit_tokens"];
    std::printf(
        "%-22s %lld of %lld prompt tokens (device cache %lld, host tier %lld, disk tier %lld)\n",
        "prefill saved",
        static_cast<long long>(j["kv_offload"]["prefill_tokens_saved"].get<int64_t>()),
        static_cast<long long>(j["prompt_tokens"].get<int64_t>()),
        static_cast<long long>(o["device"].get<int64_t>()),
        static_cast<long long>(o["host"].get<int64_t>()),
        static_cast<long long>(o["disk"].get<int64_t>()));
    if (j["cached_prompt_tokens"].get<int64_t>() > 0) {
      std::printf("%-22s %.1f tokens/s (prompt tokens not from a cache, and output)",
                  "computed", j["computed_tokens_per_s"].get<double>());
      if (!j["pct_of_optimum_computed"].is_null())
        std::printf(": %.1f%% of optimum", j["pct_of_optimum_computed"].get<double>());
      std::printf("\n");
    }
  }
  std::fputs(nf::format_op_profile(j).c_str(), stdout);
  if (!a.result_json.empty()) {
    std::ofstream f(a.result_json);
    if (!f) nf::fail("{}: cannot write", a.result_json);
    f << j.dump(2) << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"NanoFlow: a throughput-first LLM serving engine"};
  app.require_subcommand(1);

  GenerateArgs gen;
  CLI::App* g = app.add_subcommand("generate", "Generate a completion for one prompt");
  gen.eo.add_to(g);
  auto* po = g->add_option("--prompt", gen.prompt, "Prompt text (BOS added as the model says)");
  auto* pio = g->add_option("--prompt-ids", gen.prompt_ids, "Prompt token ids, e.g. 1,2,3");
  po->excludes(pio);
  pio->excludes(po);
  g->add_option("--max-tokens", gen.params.max_tokens, "Tokens to generate at most")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  g->add_option("--min-tokens", gen.params.min_tokens, "Tokens to generate before EOS may stop")
      ->check(CLI::NonNegativeNumber);
  g->add_option("--temperature", gen.temperature, "Sampling temperature; 0 is greedy (default 1)")
      ->check(CLI::NonNegativeNumber);
  g->add_option("--top-k", gen.top_k, "Keep the k most likely tokens (0: off)");
  g->add_option("--top-p", gen.top_p, "Nucleus sampling mass (1: off)")->check(CLI::Range(0.0, 1.0));
  g->add_option("--min-p", gen.params.min_p, "Drop tokens below min_p x the top probability")
      ->check(CLI::Range(0.0, 1.0));
  g->add_option("--seed", gen.seed, "Random seed: the same seed gives the same output");
  g->add_flag("--ignore-eos", gen.params.ignore_eos, "Do not stop at the end-of-sequence token");
  g->add_option("--stop", gen.params.stop, "Stop string (repeatable); it is not printed");
  g->add_option("--repetition-penalty", gen.params.repetition_penalty, "Penalty for repeated tokens (1: off)");
  g->add_option("--frequency-penalty", gen.params.frequency_penalty, "Frequency penalty (0: off)");
  g->add_option("--presence-penalty", gen.params.presence_penalty, "Presence penalty (0: off)");
  g->add_option("--logprobs", gen.params.logprobs, "Report the top-K log-probabilities per token")
      ->check(CLI::Range(0, 20));
  auto* in_opt = g->add_option("--input", gen.input,
                                "Batch mode: a JSONL file, one request per line ('prompt' or 'prompt_ids' and "
                                "OpenAI sampling fields: max_tokens, temperature, top_p, top_k, min_p, seed, stop, "
                                "ignore_eos, logprobs, n, ...)");
  auto* out_opt = g->add_option("--output", gen.output, "Batch mode: results, one JSON line per request in input order");
  in_opt->needs(out_opt);
  out_opt->needs(in_opt);
  in_opt->excludes(po);
  in_opt->excludes(pio);
  g->add_flag("--json", gen.json,
              "Print one JSON object: token_ids, text, logprobs (top-K per step), finish_reason");

  std::string tok_model;
  bool add_special = false;
  CLI::App* t = app.add_subcommand("tokenize", "Print the token ids of stdin as a JSON array");
  t->add_option("--model", tok_model, "A .gguf file or a Hugging Face directory")->required();
  t->add_flag("--add-special", add_special, "Add BOS/EOS as the model's tokenizer config says");

  BenchArgs bench;
  CLI::App* b = app.add_subcommand("bench", "Benchmarks");
  b->require_subcommand(1);
  CLI::App* bo = b->add_subcommand("offline", "Offline throughput: requests submitted at once");
  bench.eo.add_to(bo);
  bo->add_option("--num-requests", bench.cfg.num_requests, "Requests")->check(CLI::PositiveNumber)->capture_default_str();
  bo->add_option("--input-len", bench.cfg.input_len, "Prompt tokens per request (random ids; without --dataset)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  bo->add_option("--output-len", bench.cfg.output_len, "Generated tokens per request")
      ->check(CLI::PositiveNumber)->capture_default_str();
  bo->add_option("--seed", bench.cfg.seed, "Seed of the random prompts")->capture_default_str();
  bo->add_option("--dataset", bench.cfg.dataset,
                 "Trace of request lengths instead of constant ones: Azure LLM inference CSV, "
                 "ShareGPT length CSV or Mooncake JSONL (the first --num-requests requests)");
  bo->add_option("--turns", bench.cfg.turns,
                 "Multi-turn conversations: --num-requests conversations of this many turns, "
                 "each turn's prompt = the conversation so far + new text of the input length; "
                 "turns run in waves, streamed (reports TTFT and where cached prompt tokens came "
                 "from: the KV offload's workload)")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  bo->add_option("--optimum-seconds", bench.cfg.optimum_sustain_s,
                 "CUDA: seconds of back-to-back layer GEMMs for the sustained optimum, the "
                 "yardstick (0: the burst optimum of a cool GPU instead)")
      ->check(CLI::Range(0.0, 600.0))
      ->capture_default_str();
  bo->add_option("--profile-step", bench.cfg.profile_step,
                 "CUDA: time each op of iterations [N, N+5) (default: the middle of the run)");
  bo->add_option("--result-json", bench.result_json, "Write the result (with command, commit, host) here");
  CLI::App* bs = nf::server::add_bench_serve_command(b);

  EngineOptions serve_eo;
  nf::server::ServerConfig serve_cfg;
  nf::TuneConfig tune;
  std::string tune_output;
  CLI::App* tu = app.add_subcommand(
      "tune", "Choose nano-batch schedules on this GPU by timing them (writes a --pipeline file)");
  tu->add_option("--model", tune.model, "Model (GGUF, Hugging Face directory, dummy:<preset>)")
      ->required();
  tu->add_option("--max-batch-tokens", tune.options.max_batch_tokens, "Dense batch size")
      ->check(CLI::PositiveNumber)->capture_default_str();
  tu->add_option("--gpu-memory-utilization", tune.gpu_memory_utilization,
                 "Share of the GPU's memory for weights, activations and the KV cache")
      ->check(CLI::Range(0.01, 1.0))->capture_default_str();
  tu->add_option("--budget-s", tune.options.budget_s, "Seconds for the timings (later candidates are skipped)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  tu->add_option("--repeats", tune.options.repeats, "Timed forwards per candidate")
      ->check(CLI::PositiveNumber)->capture_default_str();
  tu->add_option("--min-gain", tune.options.min_gain,
                 "Fraction by which a split schedule must beat serial to be chosen")
      ->check(CLI::Range(0.0, 0.99))->capture_default_str();
  tu->add_option("--attention", tune.attention,
                 "Attention kernel to time the schedules with: flashinfer, or tc (experimental: "
                 "our tensor-core decode kernels, FlashInfer for prefill; the candidates with a "
                 "bounded decode grid, soft SM partitions, need it); serve and bench with the "
                 "same --attention")
      ->check(CLI::IsMember({"flashinfer", "tc"}))
      ->capture_default_str();
  tu->add_option("--tensor-parallel-size", tune.tensor_parallel_size,
                 "Time the schedules on N GPUs (devices 0..N-1, NCCL), all-reduces included; "
                 "serve and bench with the same --tensor-parallel-size")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  tu->add_option("--tp-comm-ctas", tune.tp_comm_ctas,
                 "With --tensor-parallel-size: CTAs per all-reduce (0: NCCL's choice, or 16 with "
                 "--tp-allreduce peer)")
      ->check(CLI::Range(0, 64))
      ->capture_default_str();
  tu->add_option("--tp-allreduce", tune.tp_allreduce,
                 "With --tensor-parallel-size: nccl, or peer (experimental)")
      ->check(CLI::IsMember({"nccl", "peer"}))
      ->capture_default_str();
  tu->add_option("--output", tune_output, "Schedule file to write (with every timing)")->required();
  CLI::App* sv = app.add_subcommand("serve", "OpenAI-compatible HTTP server");
  serve_eo.add_to(sv);
  sv->add_option("--host", serve_cfg.host, "Address to listen on")->capture_default_str();
  sv->add_option("--port", serve_cfg.port, "Port to listen on")->check(CLI::Range(0, 65535))->capture_default_str();
  sv->add_option("--api-key", serve_cfg.api_key, "Require 'Authorization: Bearer KEY' on /v1/*");
  sv->add_option("--served-model-name", serve_cfg.served_model_name, "Model id for clients (default: --model)");
  sv->add_option("--http-threads", serve_cfg.network_threads, "Network threads")
      ->check(CLI::Range(1, 64))->capture_default_str();
  sv->add_option("--max-body-bytes", serve_cfg.max_body_bytes, "Largest request body (413 beyond)")
      ->check(CLI::PositiveNumber)->capture_default_str();
  sv->add_option("--max-waiting-requests", serve_cfg.max_waiting_requests,
                 "Queued requests beyond which new ones get 503 + Retry-After")
      ->check(CLI::PositiveNumber)->capture_default_str();
  sv->add_option("--shutdown-timeout", serve_cfg.shutdown_timeout_s,
                 "Seconds in-flight requests may run after SIGTERM before they are aborted")
      ->check(CLI::NonNegativeNumber)->capture_default_str();
  sv->add_option("--idle-timeout", serve_cfg.idle_timeout_s,
                 "Seconds a connection may wait for (or take to send) its next request")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  sv->add_option("--max-connections", serve_cfg.max_connections,
                 "Open connections beyond which new ones get 503 and are closed")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();

  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 2;
  }
  try {
    if (*g) {
      if (!gen.input.empty()) return cmd_generate_batch(gen);
      if (!gen.prompt && !gen.prompt_ids) nf::fail("generate: give --prompt, --prompt-ids or --input");
      return cmd_generate(gen);
    }
    if (*sv) {
      if (sv->get_option("--api-key")->count() > 0 && serve_cfg.api_key.empty())
        nf::fail("--api-key: the key is empty (leave the option out to serve without a key)");
      return nf::server::run_server(serve_eo.engine, serve_cfg);
    }
    if (*tu) {
      const nlohmann::json j = nf::run_tune(tune);
      std::ofstream f(tune_output);
      if (!f) nf::fail("{}: cannot write", tune_output);
      f << j.dump(2) << "\n";
      for (const auto& [kind, best] : j["best"].items())
        std::printf("%-14s %-44s %.2f ms\n", kind.c_str(), best["schedule"].get<std::string>().c_str(),
                    best["ms"].get<double>());
      std::printf("%zu timings in %.1f s (%d candidates skipped over the budget); wrote %s\n",
                  j["measurements"].size(), j["elapsed_s"].get<double>(),
                  j["skipped_over_budget"].get<int>(), tune_output.c_str());
      return 0;
    }
    if (*t) return cmd_tokenize(tok_model, add_special);
    if (*bo) return cmd_bench_offline(bench, command);
    if (*bs) return nf::server::run_bench_serve_command(bs, command);
  } catch (const nf::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "nanoflow: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "nanoflow: internal error: %s\n", e.what());
    return 1;
  }
  return 0;
}
