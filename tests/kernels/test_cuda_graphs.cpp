// CUDA graphs in the CUDA backend: the dense ops replayed from a graph give bitwise the results of
// their eager run at the same padded token count, and graphs on agree with graphs off (exact
// token counts, so other GEMM shapes and rounding) within bf16 tolerance.
//
// The same golden requests run three times on one engine with graphs on and prefix caching off,
// so every pass has the same batches: in the first pass each padded size runs eagerly at its
// first use and is captured at its second; the later passes only replay. Skipped without a CUDA
// device or without the llama3-hd128 fixture model.
#include <gtest/gtest.h>
#include <nanoflow/engine.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "../golden_fixture.h"
#include "backends/cuda/device.h"
#include "runtime/pipeline.h"
#include "runtime/pipeline_search.h"

namespace {

namespace fs = std::filesystem;
using nanoflow::Engine;
using nanoflow::RequestOutput;

const fs::path kSource = fs::path(__FILE__).parent_path().parent_path().parent_path();

void expect_bitwise_equal(const std::vector<RequestOutput>& a, const std::vector<RequestOutput>& b,
                          const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t r = 0; r < a.size(); ++r) {
    EXPECT_EQ(a[r].token_ids, b[r].token_ids) << what << " request " << r;
    ASSERT_EQ(a[r].top_logprobs.size(), b[r].top_logprobs.size()) << what << " request " << r;
    for (size_t i = 0; i < a[r].top_logprobs.size(); ++i)
      EXPECT_EQ(a[r].top_logprobs[i], b[r].top_logprobs[i])
          << what << " request " << r << " step " << i;
  }
}

TEST(CudaGraphs, ReplayIsBitwiseEagerAndAgreesWithGraphsOff) {
  if (nf::cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device";
  const fs::path fixture = kSource / "tests/fixtures/golden/llama3-hd128.json";
  if (!fs::exists(fixture)) GTEST_SKIP() << fixture << " not present";
  const nf::testing::Golden g = nf::testing::load_golden(kSource, fixture);
  const auto reqs = nf::testing::golden_requests(g);

  nanoflow::EngineConfig c = nf::testing::golden_engine_config(g.model);
  c.device = "cuda";
  c.enable_prefix_caching = false;
  c.cuda_graphs = true;
  auto engine = Engine::create(c);
  const auto first = engine->generate(reqs);
  const auto second = engine->generate(reqs);
  const auto third = engine->generate(reqs);
  expect_bitwise_equal(first, second, "graphs: pass 1 (eager at each size's first use) vs pass 2");
  expect_bitwise_equal(second, third, "graphs: pass 2 vs pass 3 (replays)");

  c.cuda_graphs = false;
  const auto eager = Engine::create(c)->generate(reqs);
  const nf::testing::RunDiff d = nf::testing::compare_runs(first, eager);
  for (const std::string& f : d.failures) ADD_FAILURE() << f;
  std::printf(
      "REPORT CUDA graphs on vs off: %zu/%zu steps with the same token, max |top-1 "
      "logprob diff| %.3e\n",
      d.same, d.steps, d.max_diff);
  EXPECT_LE(d.max_diff, 0.05);
}

// The split schedule files of the tests below, removed with this object. `plain`: two groups
// with qkv and attention in four nano-batches and o and ffn in two, attention on a second stream
// with its decode grid bounded to 24 SMs (a soft partition: with tc, the streaming kernel; the
// prefill rows then run on the qkv stream), GEMMs with SM-count targets of 100 and all but 24
// (mixed iterations); decode and prefill rows apart (by kind; decode share >= 0.25), the decode
// attention on a grid sized per batch; two whole nano-batches on a stream each (>= 0.5);
// cross-layer periods over two groups (>= 0.9). `green`: the first in hard SM partitions (green
// contexts), attention on 32 SMs and the GEMMs on the rest; by kind with the decode attention on 48
// SMs; the cross-layer one with attention on 48 SMs and its GEMMs on the whole GPU.
struct SplitFiles {
  SplitFiles() {
    using nf::Stage;
    nf::PipelineSchedule four;
    four.name = "g2-4-4-2-2";
    four.groups = 2;
    four.shares = {{{1, 1, 1, 1}, {1, 1, 1, 1}, {1, 1}, {1, 1}}};
    four.ops = {
        {Stage::kQkv, 0, 0, 0},       {Stage::kQkv, 1, 0, 0},       {Stage::kAttention, 0, 1, 0},
        {Stage::kQkv, 2, 0, 0},       {Stage::kAttention, 1, 1, 0}, {Stage::kQkv, 3, 0, 0},
        {Stage::kAttention, 2, 1, 0}, {Stage::kO, 0, 0, 100},       {Stage::kAttention, 3, 1, 0},
        {Stage::kFfn, 0, 0, 100},     {Stage::kO, 1, 0, 0},         {Stage::kFfn, 1, 0, 0}};
    nf::PipelineSchedule halves;
    halves.name = "g2-two-streams";
    halves.groups = 2;
    halves.min_decode_share = 0.5;
    halves.shares = {{{1, 1}, {1, 1}, {1, 1}, {1, 1}}};
    for (int i = 0; i < 2; ++i)
      for (int s = 0; s < nf::kNumStages; ++s)
        halves.ops.push_back({static_cast<Stage>(s), i, i, 0});
    nf::PipelineSchedule cross = nf::cross_layer_schedule(2, true);
    cross.min_decode_share = 0.9;
    nf::PipelineConfig pc;
    nf::PipelineSchedule soft = four;
    for (nf::NanoOp& op : soft.ops)
      op.sm_target = op.stage == Stage::kAttention ? 24 : op.stage == Stage::kFfn ? -24 : 0;
    soft.ops[7].sm_target = 100;  // o of nano-batch 0
    // Decode and prefill rows apart (by kind), the decode attention on a grid sized per batch
    // beside the prefill GEMMs targeted at the rest (decode shares from 0.25; a batch of one
    // kind: serial).
    nf::PipelineSchedule kinds = nf::by_kind_schedule(24, true, false, true);
    kinds.min_decode_share = 0.25;
    pc.schedules = {soft, kinds, halves, cross};
    std::ofstream(plain) << nf::to_json(pc).dump(1);
    nf::PipelineConfig green;
    nf::PipelineSchedule green_kinds = nf::by_kind_schedule(48, true, true);
    green_kinds.min_decode_share = 0.25;
    green.schedules = {nf::with_attention_partition(four, 32, true), green_kinds,
                       nf::with_attention_partition(cross, 48, false)};
    std::ofstream(partitioned) << nf::to_json(green).dump(1);
  }
  ~SplitFiles() {
    fs::remove(plain);
    fs::remove(partitioned);
  }
  const std::string tag = std::to_string(getpid());
  const fs::path plain = fs::temp_directory_path() / ("nf_cuda_pipeline_" + tag + ".json");
  const fs::path partitioned =
      fs::temp_directory_path() / ("nf_cuda_pipeline_green_" + tag + ".json");
};

// Runs `reqs` on the CUDA engine `c` serially and with each split file; the split runs must agree
// with the serial one by the top-5 rule (other GEMM shapes may round differently). Both attention
// paths: FlashInfer, and "tc", whose decode rows take the per-request kernel on the whole GPU and
// the streaming kernel inside an SM partition.
void expect_splits_agree(nanoflow::EngineConfig c,
                         const std::vector<nanoflow::GenerateRequest>& reqs,
                         const std::string& name) {
  const SplitFiles files;
  c.device = "cuda";
  for (const char* attention : {"flashinfer", "tc"}) {
    c.attention = attention;
    c.pipeline_file.clear();
    const auto serial = Engine::create(c)->generate(reqs);
    for (const fs::path& f : {files.plain, files.partitioned}) {
      c.pipeline_file = f.string();
      const auto split = Engine::create(c)->generate(reqs);
      const nf::testing::RunDiff d = nf::testing::compare_runs(serial, split);
      const std::string what =
          name + " (" + attention + ")" + (f == files.plain ? "" : " in SM partitions");
      for (const std::string& fail : d.failures) ADD_FAILURE() << what << ": " << fail;
      std::printf(
          "REPORT %s nano-batch schedules vs serial: %zu/%zu steps with the same token, "
          "max |top-1 logprob diff| %.3e\n",
          what.c_str(), d.same, d.steps, d.max_diff);
      EXPECT_LE(d.max_diff, 0.05) << what;
    }
  }
}

// The split schedules on the head_dim-128 golden fixtures, with and without QKV bias.
TEST(CudaPipeline, SplitSchedulesAgreeWithSerial) {
  if (nf::cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device";
  int ran = 0;
  for (const char* name : {"llama3-hd128", "qwen2-hd128"}) {
    const fs::path fixture = kSource / "tests/fixtures/golden" / (std::string(name) + ".json");
    if (!fs::exists(fixture)) continue;
    const nf::testing::Golden g = nf::testing::load_golden(kSource, fixture);
    expect_splits_agree(nf::testing::golden_engine_config(g.model), nf::testing::golden_requests(g),
                        name);
    ++ran;
  }
  if (ran == 0) GTEST_SKIP() << "no head_dim-128 fixture present";
}

// Issue 6's mixed batch: 200 greedy requests (prompts of 1-400 tokens, 4-24 new tokens) through
// 512-token iterations, so that iterations mix decodes and prefill chunks at every decode share.
TEST(CudaPipeline, MixedBatchOf200AgreesWithSerial) {
  if (nf::cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device";
  const fs::path fixture = kSource / "tests/fixtures/golden/llama3-hd128.json";
  if (!fs::exists(fixture)) GTEST_SKIP() << "no llama3-hd128 fixture";
  const nf::testing::Golden g = nf::testing::load_golden(kSource, fixture);
  nanoflow::EngineConfig c = nf::testing::golden_engine_config(g.model);
  c.num_kv_blocks = 8192;
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> len(1, 400), out(4, 24), tok(3, 200);
  std::vector<nanoflow::GenerateRequest> reqs(200);
  for (auto& r : reqs) {
    const int n = len(rng);
    for (int i = 0; i < n; ++i) r.prompt.push_back(tok(rng));
    r.params.temperature = 0;
    r.params.max_tokens = out(rng);
    r.params.ignore_eos = true;
    r.params.logprobs = 5;
  }
  expect_splits_agree(c, reqs, "200 mixed requests");
}

}  // namespace
