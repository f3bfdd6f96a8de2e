// The CUDA backend end to end, through nanoflow::Engine with device "cuda":
//  - the golden fixtures (tests/fixtures/golden/*.json, Hugging Face fp32 greedy tokens and top-5
//    logprobs): per fixture, how many greedy tokens match; at the first mismatch of a case both
//    tokens must be in each other's top-5 (bf16 weights: the logprob gaps are printed, and only
//    a gap above kBf16Logprob fails);
//  - GPU (our attention kernel and FlashInfer's) against the CPU engine on the fixture families'
//    configs (head_dim widened to 128, dummy weights), and on dummy:llama3-8b / dummy:qwen2-7b
//    (NF_REAL_SIZE_TESTS=1): each step's top-1 logprob is within kBf16Logprob, up to the first
//    token mismatch, where the GPU's token must be in the CPU's top-5.
//  - the head_dim-128 golden families (<family>-hd128) the same way, once with each attention
//    kernel ("native" and "flashinfer").
//  - tensor parallelism over NCCL (2, 4 or 8 GPUs, as many as there are): the golden fixtures,
//    N ranks against one GPU (serial, graphs off, nano-batch schedules), KV offload across ranks.
// Skipped without a CUDA device, when the fixture models are absent, or (golden) when the model's
// head_dim is not one the attention kernel takes (the <family>-tiny fixtures have 16).
#include <gtest/gtest.h>
#include <nanoflow/engine.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "../golden_fixture.h"
#include "../unit/model_test_files.h"
#include "backends/cuda/cuda_backend.h"
#include "backends/cuda/device.h"
#include "backends/cuda/nccl_communicator.h"
#include "backends/cuda/peer_allreduce.h"
#include "common/half.h"
#include "model/model_loader.h"
#include "runtime/host_block_pool.h"
#include "runtime/pipeline.h"
#include "runtime/pipeline_search.h"
#include "tokenizer/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using nanoflow::Engine;
using nanoflow::EngineConfig;
using nanoflow::GenerateRequest;
using nanoflow::RequestOutput;

// bf16 weights and activations against an fp32 reference: logprobs differ by a few 1e-2.
constexpr double kBf16Logprob = 0.1;

// tests/kernels/<this file> -> the repository root.
const fs::path kSource = fs::path(__FILE__).parent_path().parent_path().parent_path();

using nf::testing::Golden;
using nf::testing::GoldenCase;
Golden load_golden(const fs::path& file) { return nf::testing::load_golden(kSource, file); }
std::vector<fs::path> golden_files() { return nf::testing::golden_files(kSource); }

bool have_cuda_device() {
  return !nf::cuda::list_devices().empty();
}

nlohmann::json read_json(const fs::path& file) {
  std::ifstream in(file);
  return nlohmann::json::parse(in);
}

// head_dim of a Hugging Face model directory (config.json), or 0 when it has none.
int64_t head_dim_of(const fs::path& model_dir) {
  const fs::path cfg = model_dir / "config.json";
  if (!fs::exists(cfg)) return 0;
  const auto j = read_json(cfg);
  if (j.contains("head_dim") && !j["head_dim"].is_null()) return j["head_dim"].get<int64_t>();
  return j.at("hidden_size").get<int64_t>() / j.at("num_attention_heads").get<int64_t>();
}

// The attention kernel supports these head sizes.
bool cuda_head_dim(int64_t d) {
  return d == 64 || d == 128;
}

using nf::testing::find_id;

EngineConfig engine_config(const fs::path& model, const std::string& device) {
  EngineConfig c = nf::testing::golden_engine_config(model);
  c.device = device;
  return c;
}

struct CaseResult {
  size_t matched = 0;  // greedy tokens equal before the first mismatch
  bool mismatch = false;
  double max_gap = 0;  // max |logprob - HF| over shared top-5 ids while tokens agree
};

// Compares one output with one golden case; the comparison ends at the first mismatch.
CaseResult compare_case(const std::string& label, const GoldenCase& gc, const RequestOutput& out) {
  CaseResult r;
  EXPECT_EQ(out.token_ids.size(), gc.greedy.size()) << label;
  EXPECT_EQ(out.top_logprobs.size(), out.token_ids.size()) << label;
  const size_t n = std::min({out.token_ids.size(), out.top_logprobs.size(), gc.greedy.size()});
  for (size_t i = 0; i < n; ++i) {
    const auto& ours = out.top_logprobs[i];
    const auto& theirs = gc.top5[i];
    if (out.token_ids[i] == gc.greedy[i]) {
      for (const auto& [id, lp] : theirs)
        if (const auto* o = find_id(ours, id))
          r.max_gap = std::max(r.max_gap, std::abs(o->second - lp));
      ++r.matched;
      continue;
    }
    r.mismatch = true;
    const int32_t a = out.token_ids[i], b = gc.greedy[i];
    const auto* a_in_hf = find_id(theirs, a);
    const auto* b_in_ours = find_id(ours, b);
    const auto* a_in_ours = find_id(ours, a);
    const auto* b_in_hf = find_id(theirs, b);
    EXPECT_TRUE(a_in_hf != nullptr && b_in_ours != nullptr)
        << label << " step " << i << ": engine chose " << a << ", HF chose " << b
        << ", not in each other's top-5";
    if (a_in_hf && b_in_ours && a_in_ours && b_in_hf) {
      const double ours_gap = a_in_ours->second - b_in_ours->second;
      const double hf_gap = b_in_hf->second - a_in_hf->second;
      std::printf("REPORT %s: step %zu engine %d vs HF %d; gap ours %.4f, HF %.4f\n", label.c_str(),
                  i, a, b, ours_gap, hf_gap);
      EXPECT_LE(ours_gap, kBf16Logprob) << label << " step " << i;
      EXPECT_LE(hf_gap, kBf16Logprob) << label << " step " << i;
    }
    break;
  }
  return r;
}

// Runs every case of a fixture as one batch on the engine `cfg` describes and compares each with
// compare_case; `label` names the run in the messages and the PARITY line.
void expect_golden_parity(const Golden& g, const EngineConfig& cfg, const std::string& label) {
  auto engine = Engine::create(cfg);
  const auto outs = engine->generate(nf::testing::golden_requests(g));
  ASSERT_EQ(outs.size(), g.cases.size()) << label;
  size_t matched = 0, total = 0;
  int mismatches = 0;
  double max_gap = 0;
  for (size_t c = 0; c < g.cases.size(); ++c) {
    const std::string case_label = label + " case " + std::to_string(c) + " (prompt " +
                                   std::to_string(g.cases[c].prompt.size()) + ")";
    const CaseResult r = compare_case(case_label, g.cases[c], outs[c]);
    matched += r.matched;
    total += g.cases[c].greedy.size();
    mismatches += r.mismatch ? 1 : 0;
    max_gap = std::max(max_gap, r.max_gap);
  }
  std::printf(
      "PARITY %s: %zu/%zu greedy tokens match HF before the first mismatch of each case, "
      "%d cases with a mismatch, max |logprob - HF| %.3e\n",
      label.c_str(), matched, total, mismatches, max_gap);
  EXPECT_LE(max_gap, kBf16Logprob) << label;
}

class CudaBackendGolden : public ::testing::TestWithParam<fs::path> {};

TEST_P(CudaBackendGolden, GreedyMatchesTransformers) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  const Golden g = load_golden(GetParam());
  if (!fs::exists(g.model)) GTEST_SKIP() << g.model << " not present (run scripts/fetch_model.sh)";
  if (fs::is_directory(g.model) && !cuda_head_dim(head_dim_of(g.model)))
    GTEST_SKIP() << g.name << ": head_dim " << head_dim_of(g.model)
                 << " (the CUDA attention kernel takes 64 or 128)";
  expect_golden_parity(g, engine_config(g.model, "cuda"), g.name);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaBackendGolden, ::testing::ValuesIn(golden_files()),
                         [](const ::testing::TestParamInfo<fs::path>& info) {
                           std::string s = info.param.stem().string();
                           for (char& ch : s)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });

// The golden fixtures whose model (a Hugging Face directory) has head_dim 128: the <family>-hd128
// models, which both attention kernels take.
std::vector<fs::path> hd128_golden_files() {
  std::vector<fs::path> out;
  for (const fs::path& f : golden_files()) {
    const Golden g = load_golden(f);
    if (fs::is_directory(g.model) && head_dim_of(g.model) == 128) out.push_back(f);
  }
  return out;
}

// Every head_dim-128 golden family on the CUDA backend with each attention kernel, named
// explicitly (not "auto"): ours ("native"), FlashInfer's ("flashinfer"), and our tensor-core
// decode kernel with FlashInfer's prefill ("tc"); the last two are skipped when the build has
// no FlashInfer. Same rule as CudaBackendGolden.
class CudaBackendGoldenHd128
    : public ::testing::TestWithParam<std::tuple<fs::path, std::string>> {};

TEST_P(CudaBackendGoldenHd128, GreedyMatchesTransformers) {
  const auto& [fixture, attn] = GetParam();
#ifndef NANOFLOW_HAVE_FLASHINFER
  if (attn != "native") GTEST_SKIP() << "built without FlashInfer (scripts/fetch_third_party.sh)";
#endif
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  const Golden g = load_golden(fixture);
  ASSERT_EQ(head_dim_of(g.model), 128) << g.model;
  EngineConfig cfg = engine_config(g.model, "cuda");
  cfg.attention = attn;
  expect_golden_parity(g, cfg, g.name + " attention " + attn);
}

INSTANTIATE_TEST_SUITE_P(
    Fixtures, CudaBackendGoldenHd128,
    ::testing::Combine(::testing::ValuesIn(hd128_golden_files()),
                       ::testing::Values(std::string("native"), std::string("flashinfer"),
                                         std::string("tc"))),
    [](const ::testing::TestParamInfo<std::tuple<fs::path, std::string>>& info) {
      std::string s = std::get<0>(info.param).stem().string() + "_" + std::get<1>(info.param);
      for (char& ch : s)
        if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
      return s;
    });

// The test above must never pass by having nothing to run (no GPU needed).
TEST(CudaBackendGoldenHd128Fixtures, AllFamiliesPresent) {
  std::vector<std::string> names;
  for (const fs::path& f : hd128_golden_files()) names.push_back(f.stem().string());
  EXPECT_EQ(names, (std::vector<std::string>{"llama2-hd128", "llama3-hd128", "llama31-hd128",
                                             "qwen2-hd128", "qwen3-hd128"}));
}

// The GPU engine (with the given attention kernel) against the CPU engine on the same prompts:
// while both choose the same token, its logprob agrees within the bf16 budget; at the first
// different token, the GPU's token is in the CPU's top-5.
void expect_gpu_matches_cpu(const std::string& label, EngineConfig gpu_cfg, EngineConfig cpu_cfg,
                            const std::vector<GenerateRequest>& reqs) {
  const auto gpu = Engine::create(gpu_cfg)->generate(reqs);
  const auto cpu = Engine::create(cpu_cfg)->generate(reqs);
  ASSERT_EQ(gpu.size(), cpu.size());
  size_t steps = 0, same = 0;
  double max_diff = 0;
  for (size_t c = 0; c < reqs.size(); ++c) {
    const size_t n = std::min(gpu[c].token_ids.size(), cpu[c].token_ids.size());
    ASSERT_GT(n, 0u);
    for (size_t i = 0; i < n; ++i) {
      ++steps;
      const auto* gl = find_id(gpu[c].top_logprobs[i], gpu[c].token_ids[i]);
      const auto* cl = find_id(cpu[c].top_logprobs[i], cpu[c].token_ids[i]);
      ASSERT_TRUE(gl != nullptr && cl != nullptr) << label << " case " << c << " step " << i;
      const double d = std::abs(gl->second - cl->second);
      max_diff = std::max(max_diff, d);
      EXPECT_LE(d, kBf16Logprob) << label << " case " << c << " step " << i;
      if (gpu[c].token_ids[i] != cpu[c].token_ids[i]) {
        const auto* g_in_cpu = find_id(cpu[c].top_logprobs[i], gpu[c].token_ids[i]);
        std::printf("REPORT %s case %zu step %zu: GPU %d vs CPU %d (top-1 logprobs %.4f / %.4f)\n",
                    label.c_str(), c, i, gpu[c].token_ids[i], cpu[c].token_ids[i], gl->second,
                    cl->second);
        EXPECT_NE(g_in_cpu, nullptr)
            << label << " case " << c << " step " << i << ": GPU token not in CPU top-5";
        break;
      }
      ++same;
    }
  }
  std::printf("GPU vs CPU %s: %zu/%zu steps with the same token, max |top-1 logprob diff| %.3e\n",
              label.c_str(), same, steps, max_diff);
}

// The attention kernels the GPU engine runs with in this build.
std::vector<std::string> attention_kernels() {
#ifdef NANOFLOW_HAVE_FLASHINFER
  return {"native", "flashinfer", "tc"};
#else
  return {"native"};
#endif
}

// An embedding padded past the tokenizer (as Qwen2's): the GPU sampler never takes, nor ranks,
// the padded rows, whose logits would otherwise win; and it agrees with the CPU engine, which
// samples from the tokenizer's ids alone.
TEST(CudaBackend, PaddedVocabularyRowsAreNeverSampled) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  const fs::path src = kSource / "tests/fixtures/models/llama3-hd128";
  if (!fs::exists(src)) GTEST_SKIP() << "no llama3-hd128 fixture";
  const fs::path model = nf::testing::padded_vocab_model(src, "cuda_padded_vocab", 24);
  const std::vector<GenerateRequest> reqs = nf::testing::padded_vocab_requests(10);
  const int32_t V =
      static_cast<int32_t>(Engine::create(engine_config(model, "cpu"))->tokenizer()->vocab_size());
  for (const std::string& attn : attention_kernels()) {
    EngineConfig cfg = engine_config(model, "cuda");
    cfg.attention = attn;
    for (const auto& o : Engine::create(cfg)->generate(reqs)) {
      EXPECT_EQ(o.token_ids.size(), 10u) << o.error;
      for (int32_t t : o.token_ids) EXPECT_LT(t, V);
      for (const auto& step : o.top_logprobs)
        for (const auto& [id, lp] : step) EXPECT_LT(id, V);
    }
  }
  std::vector<GenerateRequest> greedy(reqs.begin(), reqs.end());
  for (auto& r : greedy) r.params.temperature = 0;
  expect_gpu_matches_cpu("padded vocabulary", engine_config(model, "cuda"),
                         engine_config(model, "cpu"), greedy);
}

// The fixture families' configs with head_dim widened to 128 (hidden = heads * 128), dummy
// weights: the tiny fixtures have head_dim 16, which neither attention kernel takes; the rest
// (GQA, RoPE scaling, QKV bias, tied embeddings) stays the fixture's.
class CudaBackendVsCpu : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaBackendVsCpu, TopLogprobsMatchCpuEngine) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  const fs::path fixture = kSource / "tests/fixtures/golden" / (GetParam() + ".json");
  const fs::path model_cfg = kSource / "tests/fixtures/models" / GetParam() / "config.json";
  if (!fs::exists(fixture) || !fs::exists(model_cfg)) GTEST_SKIP() << GetParam() << " not present";
  const Golden g = load_golden(fixture);
  auto cfg = read_json(model_cfg);
  const int64_t heads = cfg.at("num_attention_heads").get<int64_t>();
  cfg["head_dim"] = 128;
  cfg["hidden_size"] = heads * 128;
  const fs::path dir = fs::temp_directory_path() / ("nf_cuda_vs_cpu_" + GetParam());
  fs::create_directories(dir);
  std::ofstream(dir / "config.json") << cfg.dump(2);
  const fs::path model = "dummy:" + (dir / "config.json").string();
  for (const std::string& attn : attention_kernels()) {
    EngineConfig gpu_cfg = engine_config(model, "cuda");
    gpu_cfg.attention = attn;
    expect_gpu_matches_cpu(GetParam() + " head_dim 128, attention " + attn, gpu_cfg,
                           engine_config(model, "cpu"), nf::testing::golden_requests(g));
  }
}

INSTANTIATE_TEST_SUITE_P(Families, CudaBackendVsCpu,
                         ::testing::Values("llama2-tiny", "llama31-tiny", "qwen2-tiny", "qwen3-tiny"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });

// Real sizes: dummy:llama3-8b and dummy:qwen2-7b on the GPU against the CPU engine on the same
// machine (fp32, all its cores). Minutes of CPU time and ~32 GiB of host memory per model, so it
// runs only with NF_REAL_SIZE_TESTS=1 (scripts/gpu_check.sh sets it).
class CudaBackendRealSize : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaBackendRealSize, TopLogprobsMatchCpuEngine) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  const char* env = std::getenv("NF_REAL_SIZE_TESTS");
  if (env == nullptr || std::string(env) != "1") GTEST_SKIP() << "set NF_REAL_SIZE_TESTS=1";
  std::vector<GenerateRequest> reqs;
  std::mt19937 rng(7);
  for (int len : {1, 7, 97, 300}) {
    GenerateRequest r;
    std::uniform_int_distribution<int32_t> tok(0, 30000);
    for (int i = 0; i < len; ++i) r.prompt.push_back(tok(rng));
    r.params.temperature = 0;
    r.params.max_tokens = 6;
    r.params.ignore_eos = true;
    r.params.logprobs = 5;
    reqs.push_back(r);
  }
  const std::string model = "dummy:" + GetParam();
  EngineConfig gpu_cfg = engine_config(model, "cuda");
  gpu_cfg.num_kv_blocks = 0;
  gpu_cfg.gpu_memory_utilization = 0.5;
  EngineConfig cpu_cfg = engine_config(model, "cpu");
  cpu_cfg.num_kv_blocks = 64;
  expect_gpu_matches_cpu(GetParam(), gpu_cfg, cpu_cfg, reqs);
}

INSTANTIATE_TEST_SUITE_P(Models, CudaBackendRealSize, ::testing::Values("llama3-8b", "qwen2-7b"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string s = info.param;
                           for (char& ch : s)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return s;
                         });

// KV offload on the CUDA engine against offload off: 6 multi-turn conversations (3 turns of 40
// new prompt and 40 output tokens) through a 32-block pool too small to keep them, off at
// `tp_off` ranks and on at `tp_on` ranks with a host tier of 8 blocks of the 2-layer model
// (`kv_heads` KV heads of 128) over a disk tier, so earlier turns' blocks come back from the
// tiers. The outputs must agree by the top-5 rule, and the tiers must serve prompt tokens.
// Returns the stats of the run without offload and of the one with it.
std::pair<nanoflow::EngineStats, nanoflow::EngineStats> expect_offload_agrees(
    const fs::path& model, int kv_heads, int tp_off, int tp_on, const std::string& label) {
  const fs::path dir = fs::temp_directory_path() /
                       ("nf_cuda_kv_tp" + std::to_string(tp_on) + "_" + std::to_string(getpid()));
  fs::remove_all(dir);
  auto run = [&](int tp, bool offload, nanoflow::EngineStats* st) {
    EngineConfig c = engine_config(model, "cuda");
    c.tensor_parallel_size = tp;
    c.num_kv_blocks = 32;
    c.max_batch_tokens = 128;
    if (offload) {
      c.kv_host_gb = 8.0 * 2 * 2 * kv_heads * 16 * 128 * 2 / 1e9;
      c.kv_disk_dir = dir.string();
      c.kv_disk_gb = 0.1;
    }
    auto e = Engine::create(c);
    std::vector<std::vector<int32_t>> history(6);
    const auto all = nf::testing::conversation_turns(*e, history, 0, 3, 40, 40, 403);
    *st = e->stats();
    return all;
  };
  nanoflow::EngineStats st_off, st_on;
  const auto off = run(tp_off, false, &st_off);
  const auto on = run(tp_on, true, &st_on);
  fs::remove_all(dir);
  const nf::testing::RunDiff d = nf::testing::compare_runs(off, on);
  for (const std::string& f : d.failures) ADD_FAILURE() << label << ": " << f;
  std::printf("REPORT %s: %zu/%zu steps with the same token, max |top-1 logprob diff| %.3e; "
              "prompt tokens from the host tier %lld, disk tier %lld\n",
              label.c_str(), d.same, d.steps, d.max_diff,
              static_cast<long long>(st_on.kv_host_hit_tokens),
              static_cast<long long>(st_on.kv_disk_hit_tokens));
  EXPECT_EQ(d.steps, 6u * 3 * 8) << label;
  EXPECT_GT(st_on.kv_host_hit_tokens + st_on.kv_disk_hit_tokens, 0) << label;
  return {st_off, st_on};
}

// KV offload on the GPU engine (copied out of and into the paged cache) agrees with offload off.
TEST(CudaBackend, KvOffloadAgreesWithOffloadOff) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  const fs::path model = kSource / "tests/fixtures/models/llama3-hd128";
  if (!fs::exists(model)) GTEST_SKIP() << "no llama3-hd128 fixture";
  const auto [st_off, st_on] = expect_offload_agrees(model, 1, 1, 1, "CUDA KV offload vs off");
  EXPECT_GT(st_on.cached_prompt_tokens, st_off.cached_prompt_tokens);
}

// The offload copies on the copy stream, in batches past the kernel's 64 blocks: blocks saved
// to pinned buffers and loaded into other blocks hold the same bytes as the synchronous reads.
TEST(CudaBackend, KvBlockCopiesRoundTrip) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  const fs::path model_dir = kSource / "tests/fixtures/models/llama3-hd128";
  if (!fs::exists(model_dir)) GTEST_SKIP() << "no llama3-hd128 fixture";
  nf::LoadedModel m = nf::load_model(model_dir.string()).take();
  nf::CudaBackendConfig bc;
  bc.num_kv_blocks = 160;
  bc.max_batch_tokens = 64;
  nf::CudaBackend be(m.config, *m.weights, nf::rope_inv_freq(m.config.rope, m.config.head_dim), bc);
  const size_t bb = be.kv_block_bytes();
  constexpr int kN = 80;
  std::mt19937 rng(7);
  std::vector<std::vector<std::byte>> want(kN, std::vector<std::byte>(bb));
  for (int i = 0; i < kN; ++i) {
    for (std::byte& x : want[i]) x = static_cast<std::byte>(rng());
    be.write_kv_block(i, want[i]);
  }
  nf::HostBlockPool pool(bb, be.host_allocator());
  std::vector<nf::HostBlockPool::Buffer> bufs;
  std::vector<std::byte*> dst;
  std::vector<const std::byte*> src;
  std::vector<int32_t> from, to;
  for (int i = 0; i < kN; ++i) {
    bufs.push_back(pool.get());
    dst.push_back(bufs.back().get());
    src.push_back(bufs.back().get());
    from.push_back(i);
    to.push_back(159 - i);
  }
  be.wait_kv_copy(be.start_kv_save(from, dst));
  for (int i = 0; i < kN; ++i)
    ASSERT_TRUE(std::equal(want[i].begin(), want[i].end(), bufs[i].get())) << "saved block " << i;
  be.wait_kv_copy(be.start_kv_load(to, src));
  std::vector<std::byte> got(bb);
  for (int i = 0; i < kN; ++i) {
    be.read_kv_block(159 - i, got);
    ASSERT_EQ(got, want[i]) << "loaded block " << 159 - i;
  }
}

// A model that cannot fit is a clear error, not a crash.
TEST(CudaBackend, ModelThatDoesNotFitIsAClearError) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  EngineConfig c = engine_config("dummy:llama3-8b", "cuda");
  c.max_batch_tokens = 1 << 24;  // activations alone far beyond any GPU
  EXPECT_THROW(Engine::create(c), std::exception);
}

// Tensor parallelism over NCCL: needs two GPUs and an NCCL build.
int cuda_devices() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

// The rank counts this host can run for a model: 2, 4, 8 up to the GPUs, dividing the heads, KV
// heads and FFN.
std::vector<int> tp_sizes(const nf::ModelConfig& c) {
  std::vector<int> out;
  for (int n : {2, 4, 8})
    if (n <= cuda_devices() && c.num_heads % n == 0 && c.num_kv_heads % n == 0 &&
        c.intermediate_size % n == 0)
      out.push_back(n);
  return out;
}

#define SKIP_WITHOUT_TP()                                                        \
  do {                                                                           \
    if (!nf::cuda::have_nccl()) GTEST_SKIP() << "built without NCCL";            \
    if (cuda_devices() < 2) GTEST_SKIP() << cuda_devices() << " CUDA device(s)"; \
  } while (0)

// The golden fixtures with heads to split (llama2-hd128: 2 heads and KV heads; qwen2-hd128: 4
// and 2, with QKV bias) on N GPUs, graphs on and off, against Hugging Face.
TEST(CudaTensorParallel, GoldenFixturesMatchTransformers) {
  SKIP_WITHOUT_TP();
  int ran = 0;
  for (const char* name : {"llama2-hd128", "qwen2-hd128"}) {
    const fs::path fixture = kSource / "tests/fixtures/golden" / (std::string(name) + ".json");
    if (!fs::exists(fixture)) continue;
    const Golden g = load_golden(fixture);
    if (!fs::exists(g.model)) continue;
    const nf::ModelConfig mc = nf::load_model(g.model.string()).take().config;
    for (int n : tp_sizes(mc)) {
      for (bool graphs : {true, false}) {
        EngineConfig c = engine_config(g.model, "cuda");
        c.tensor_parallel_size = n;
        c.cuda_graphs = graphs;
        expect_golden_parity(
            g, c, std::string(name) + " TP=" + std::to_string(n) + (graphs ? "" : " no graphs"));
        ++ran;
      }
    }
  }
  if (ran == 0) GTEST_SKIP() << "no fixture with heads divisible by 2";
}

// N ranks against one GPU on the fixture families' configs (head_dim 128, dummy weights): the
// serial schedule with graphs, without, and nano-batch schedules whose all-reduces run on the
// communication stream beside the other nano-batches' GEMMs. Sums over ranks round differently
// from one GPU's GEMMs, so the top-5 rule applies. The fixtures' 2 KV heads allow TP=2 only, so
// for 4 and 8 ranks each family also runs widened to 16 query and 8 KV heads.
TEST(CudaTensorParallel, AgreesWithOneGpu) {
  SKIP_WITHOUT_TP();
  nf::PipelineSchedule halves;
  halves.name = "g2-two-streams";
  halves.groups = 2;
  halves.shares = {{{1, 1}, {1, 1}, {1, 1}, {1, 1}}};
  for (int i = 0; i < 2; ++i)
    for (int s = 0; s < nf::kNumStages; ++s)
      halves.ops.push_back({static_cast<nf::Stage>(s), i, i, 0});
  nf::PipelineConfig pc;
  pc.schedules = {halves, nf::cross_layer_schedule(2, true)};
  const fs::path sched = fs::temp_directory_path() / ("nf_tp_sched_" + std::to_string(getpid()));
  std::ofstream(sched) << nf::to_json(pc).dump(1);
  int ran = 0;
  for (const std::string family : {"llama31-tiny", "qwen2-tiny"}) {
    const fs::path fixture = kSource / "tests/fixtures/golden" / (family + ".json");
    const fs::path model_cfg = kSource / "tests/fixtures/models" / family / "config.json";
    if (!fs::exists(fixture) || !fs::exists(model_cfg)) continue;
    const auto reqs = nf::testing::golden_requests(load_golden(fixture));
    for (const bool wide : {false, true}) {
      auto cfg = read_json(model_cfg);
      if (wide) {
        cfg["num_attention_heads"] = 16;
        cfg["num_key_value_heads"] = 8;
      }
      cfg["head_dim"] = 128;
      cfg["hidden_size"] = cfg.at("num_attention_heads").get<int64_t>() * 128;
      const std::string tag = family + (wide ? "-wide" : "");
      const fs::path dir = fs::temp_directory_path() / ("nf_cuda_tp_" + tag);
      fs::create_directories(dir);
      std::ofstream(dir / "config.json") << cfg.dump(2);
      const std::string model = "dummy:" + (dir / "config.json").string();
      std::vector<int> sizes = tp_sizes(nf::load_model(model).take().config);
      if (wide) std::erase_if(sizes, [](int n) { return n < 4; });
      if (sizes.empty()) continue;
      EngineConfig one = engine_config(model, "cuda");
      one.attention = "flashinfer";
      const auto base = Engine::create(one)->generate(reqs);
      for (int n : sizes) {
        // 0 serial, 1 without graphs, 2 nano-batch; 3 and 4: 0 and 2 with the peer all-reduce.
        for (int variant = 0; variant < 5; ++variant) {
          EngineConfig c = one;
          c.tensor_parallel_size = n;
          c.cuda_graphs = variant != 1;
          if (variant == 2 || variant == 4) c.pipeline_file = sched.string();
          if (variant >= 3) c.tp_allreduce = "peer";
          const std::string what = tag + " TP=" + std::to_string(n) +
                                   (variant == 1   ? " no graphs"
                                    : variant == 2 ? " nano-batch"
                                    : variant == 3 ? " peer all-reduce"
                                    : variant == 4 ? " nano-batch, peer all-reduce"
                                                   : "");
          const nf::testing::RunDiff d =
              nf::testing::compare_runs(base, Engine::create(c)->generate(reqs));
          for (const std::string& f : d.failures) ADD_FAILURE() << what << ": " << f;
          std::printf(
              "REPORT %s vs one GPU: %zu/%zu steps with the same token, max |top-1 logprob "
              "diff| %.3e\n",
              what.c_str(), d.same, d.steps, d.max_diff);
          EXPECT_LE(d.max_diff, kBf16Logprob) << what;
          ++ran;
        }
      }
    }
  }
  fs::remove(sched);
  if (ran == 0) GTEST_SKIP() << "no fixture family present";
}

// The peer all-reduce on every GPU of the host (2..8 ranks): each rank's result is the bf16 of
// the fp32 sum over ranks in rank order, bit for bit, over sizes that leave CTAs empty or give
// them uneven slices, and over more calls than the two staging buffers (epochs alternate).
TEST(CudaTensorParallel, PeerAllReduceSumsInRankOrder) {
  if (cuda_devices() < 2) GTEST_SKIP() << cuda_devices() << " CUDA device(s)";
  const int n = std::min(cuda_devices(), nf::cuda::PeerAllReduce::kMaxRanks);
  std::vector<int> devices(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) devices[static_cast<size_t>(r)] = r;
  std::string why;
  const size_t cap = size_t{1} << 20;
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
  auto ar = nf::cuda::PeerAllReduce::create(devices, cap, 16, &why);
  if (ar.empty()) GTEST_SKIP() << why;
  int current = -1;
  ASSERT_EQ(cudaGetDevice(&current), cudaSuccess);
  EXPECT_EQ(current, 0) << "create() must leave the caller's device current";
  std::mt19937 rng(5);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<cudaStream_t> streams(static_cast<size_t>(n));
  std::vector<void*> bufs(static_cast<size_t>(n));
  for (int r = 0; r < n; ++r) {
    ASSERT_EQ(cudaSetDevice(r), cudaSuccess);
    ASSERT_EQ(cudaStreamCreate(&streams[static_cast<size_t>(r)]), cudaSuccess);
    ASSERT_EQ(cudaMalloc(&bufs[static_cast<size_t>(r)], cap * 2), cudaSuccess);
  }
  int calls = 0;
  for (size_t elems : {size_t{8}, size_t{8 * 37}, size_t{64 * 1000}, cap, size_t{8 * 4099}}) {
    for (int repeat = 0; repeat < 3; ++repeat, ++calls) {
      std::vector<std::vector<uint16_t>> in(static_cast<size_t>(n), std::vector<uint16_t>(elems));
      for (auto& v : in)
        for (auto& x : v) x = nf::float_to_bf16(dist(rng));
      for (int r = 0; r < n; ++r) {
        ASSERT_EQ(cudaSetDevice(r), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(bufs[static_cast<size_t>(r)], in[static_cast<size_t>(r)].data(),
                             elems * 2, cudaMemcpyHostToDevice),
                  cudaSuccess);
      }
      // Launched one after the other from this thread: each rank's kernel waits on the GPU for
      // the others'.
      for (int r = 0; r < n; ++r) {
        ASSERT_EQ(cudaSetDevice(r), cudaSuccess);
        ar[static_cast<size_t>(r)]->all_reduce(bufs[static_cast<size_t>(r)], elems,
                                               streams[static_cast<size_t>(r)]);
      }
      for (int r = 0; r < n; ++r) {
        ASSERT_EQ(cudaSetDevice(r), cudaSuccess);
        ASSERT_EQ(cudaStreamSynchronize(streams[static_cast<size_t>(r)]), cudaSuccess);
      }
      std::vector<uint16_t> want(elems);
      for (size_t i = 0; i < elems; ++i) {
        float acc = 0;
        for (int r = 0; r < n; ++r) acc += nf::bf16_to_float(in[static_cast<size_t>(r)][i]);
        want[i] = nf::float_to_bf16(acc);
      }
      for (int r = 0; r < n; ++r) {
        std::vector<uint16_t> got(elems);
        ASSERT_EQ(cudaSetDevice(r), cudaSuccess);
        ASSERT_EQ(
            cudaMemcpy(got.data(), bufs[static_cast<size_t>(r)], elems * 2, cudaMemcpyDeviceToHost),
            cudaSuccess);
        size_t bad = 0;
        for (size_t i = 0; i < elems; ++i) bad += got[i] != want[i];
        EXPECT_EQ(bad, 0u) << "rank " << r << " of " << n << ", " << elems << " elements, call "
                           << calls;
      }
    }
  }
  for (int r = 0; r < n; ++r) {
    cudaSetDevice(r);
    cudaStreamDestroy(streams[static_cast<size_t>(r)]);
    cudaFree(bufs[static_cast<size_t>(r)]);
  }
  cudaSetDevice(0);
  std::printf("REPORT peer all-reduce on %d GPUs: %d calls, every rank's sums exact\n", n, calls);
}

// KV offload with the model split over ranks: each rank copies its KV heads' share of every
// host block, so a conversation's earlier turns come back from the host and disk tiers as they
// do on one GPU; outputs agree with one GPU without offload by the top-5 rule.
TEST(CudaTensorParallel, KvOffloadAcrossRanks) {
  SKIP_WITHOUT_TP();
  const fs::path model = kSource / "tests/fixtures/models/llama2-hd128";
  if (!fs::exists(model)) GTEST_SKIP() << "no llama2-hd128 fixture";
  expect_offload_agrees(model, 2, 1, 2, "CUDA TP=2 with KV offload vs one GPU without");
}

// Listing the devices leaves the caller's current device current: it once left the last one
// current, and on a two-GPU machine a test's later buffers and kernel then went to the other
// GPU than its earlier buffers (an illegal address).
TEST(CudaDevices, ListingKeepsTheCurrentDevice) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  for (int d = 0; d < cuda_devices(); ++d) {
    ASSERT_EQ(cudaSetDevice(d), cudaSuccess);
    EXPECT_EQ(nf::cuda::list_devices().size(), static_cast<size_t>(cuda_devices()));
    int current = -1;
    ASSERT_EQ(cudaGetDevice(&current), cudaSuccess);
    EXPECT_EQ(current, d);
  }
  ASSERT_EQ(cudaSetDevice(0), cudaSuccess);
}

// More ranks than GPUs is a clear error (runs on any GPU count).
TEST(CudaTensorParallel, MoreRanksThanGpusIsAClearError) {
  if (!have_cuda_device()) GTEST_SKIP() << "no CUDA device";
  if (!nf::cuda::have_nccl()) GTEST_SKIP() << "built without NCCL";
  const fs::path model = kSource / "tests/fixtures/models/llama31-hd128";
  if (!fs::exists(model)) GTEST_SKIP() << "no llama31-hd128 fixture";
  EngineConfig c = engine_config(model, "cuda");
  c.tensor_parallel_size = 4 * cuda_devices();
  try {
    Engine::create(c);
    ADD_FAILURE() << "TP=" << c.tensor_parallel_size << " on " << cuda_devices() << " GPUs";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("one GPU per rank"), std::string::npos) << e.what();
  }
}

}  // namespace
