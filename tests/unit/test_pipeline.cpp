// The nano-batch pipeline schedule (runtime/pipeline.h): cutting a batch into nano-batches per
// stage, request groups, cross-layer periods, the dependency order of the nano-operations, the
// schedule file, tuning by timing, the simulated search, and the CPU backend running split
// schedules: bitwise the serial logits where every GEMM keeps enough rows (a GEMM row does not
// depend on the rows beside it there), and the serial results up to rounding on every golden
// fixture, with tensor parallelism too.
#include <gtest/gtest.h>
#include <nanoflow/engine.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "../golden_fixture.h"
#include "backends/cpu/cpu_backend.h"
#include "common/status.h"
#include "engine/pipeline_tune.h"
#include "model/model_loader.h"
#include "runtime/pipeline.h"
#include "runtime/pipeline_search.h"

namespace {

namespace fs = std::filesystem;
using nf::NanoOp;
using nf::PipelineConfig;
using nf::PipelinePlan;
using nf::PipelineSchedule;
using nf::Stage;

const fs::path kSource = NANOFLOW_SOURCE_DIR;

// A batch of `decodes` single-token requests (contexts ctx_decode) then prefill chunks of the
// given lengths (prefix 0), blocks of 16 numbered in order.
nf::ScheduledBatch make_batch(int decodes, int ctx_decode, const std::vector<int>& chunks) {
  nf::ScheduledBatch b;
  b.seq_indptr.push_back(0);
  b.block_indptr.push_back(0);
  int next_block = 0;
  auto add = [&](int q, int ctx) {
    const int first_block = next_block;
    for (int i = 0; i < q; ++i) {
      const int p = ctx - q + i;
      b.token_ids.push_back(1 + (p * 7 + static_cast<int>(b.request_ids.size())) % 50);
      b.positions.push_back(p);
      b.slot_mapping.push_back(static_cast<int64_t>(first_block + p / 16) * 16 + p % 16);
    }
    b.seq_indptr.push_back(b.seq_indptr.back() + q);
    b.context_lens.push_back(ctx);
    for (int k = 0; k < (ctx + 15) / 16; ++k) b.block_ids.push_back(next_block++);
    b.block_indptr.push_back(static_cast<int32_t>(b.block_ids.size()));
    b.request_ids.push_back(static_cast<nanoflow::RequestId>(b.request_ids.size()));
  };
  for (int i = 0; i < decodes; ++i) add(1, ctx_decode);
  for (int c : chunks) add(c, c);
  b.check_shape();
  return b;
}

PipelineSchedule nanoflow_like() {
  // NanoFlow's Llama-3-8B shape: 4 nano-batches around QKV and attention, 2 around O and FFN,
  // interleaved so that attention of one nano-batch can run beside the GEMMs of another.
  PipelineSchedule s;
  s.name = "4-4-2-2";
  s.groups = 2;
  s.shares = {{{1, 1, 1, 1}, {1, 1, 1, 1}, {1, 1}, {1, 1}}};
  s.ops = {{Stage::kQkv, 0, 0, 0},       {Stage::kQkv, 1, 0, 0},       {Stage::kAttention, 0, 1, 0},
           {Stage::kQkv, 2, 0, 0},       {Stage::kAttention, 1, 1, 0}, {Stage::kQkv, 3, 0, 0},
           {Stage::kAttention, 2, 1, 0}, {Stage::kO, 0, 0, 100},       {Stage::kAttention, 3, 1, 0},
           {Stage::kFfn, 0, 0, 100},     {Stage::kO, 1, 0, 100},       {Stage::kFfn, 1, 0, 0}};
  s.validate();
  return s;
}

// Cross-layer pipelining over two groups, attention on stream 1.
PipelineSchedule cross_layer() {
  return nf::cross_layer_schedule(2, true);
}

TEST(Pipeline, SerialPlanIsOneNanoOperationPerStage) {
  const nf::ScheduledBatch b = make_batch(3, 40, {100});
  const PipelinePlan p = nf::plan_pipeline(b, PipelineSchedule{});
  EXPECT_TRUE(PipelineSchedule{}.is_serial());
  ASSERT_EQ(p.ops.size(), 4u);
  for (int s = 0; s < nf::kNumStages; ++s) {
    EXPECT_EQ(static_cast<int>(p.ops[s].op.stage), s);
    EXPECT_EQ(p.range(p.ops[s].op).begin, 0);
    EXPECT_EQ(p.range(p.ops[s].op).end, 103);
    if (s > 0) EXPECT_EQ(p.ops[s].deps, std::vector<int>{s - 1});
  }
  EXPECT_EQ(p.nano[1][0].req_begin, 0);
  EXPECT_EQ(p.nano[1][0].req_end, 4);
}

// The schedule files kept with the benchmark results (bench/schedules/) load and plan a batch,
// so that their runs can be repeated.
TEST(Pipeline, BenchScheduleFilesLoadAndPlan) {
  int files = 0;
  for (const auto& e : fs::directory_iterator(kSource / "bench/schedules")) {
    if (e.path().extension() != ".json") continue;
    SCOPED_TRACE(e.path().string());
    const nf::PipelineConfig pc = nf::load_pipeline_file(e.path().string());
    ASSERT_FALSE(pc.schedules.empty());
    const nf::ScheduledBatch b = make_batch(64, 40, {300, 700});
    for (const PipelineSchedule& sched : pc.schedules) {
      EXPECT_FALSE(sched.is_serial()) << sched.name;
      const PipelinePlan p = nf::plan_pipeline(b, sched);
      EXPECT_GE(p.ops.size(), static_cast<size_t>(nf::kNumStages)) << sched.name;
    }
    ++files;
  }
  EXPECT_GE(files, 2);
}

TEST(Pipeline, DenseStagesCutRowsAtAlignedShares) {
  const nf::ScheduledBatch b = make_batch(0, 0, {1024, 1024});
  const PipelinePlan p = nf::plan_pipeline(b, nanoflow_like());
  const std::vector<int> qkv_ends = {512, 1024, 1536, 2048}, o_ends = {1024, 2048};
  for (int j = 0; j < 4; ++j) EXPECT_EQ(p.nano[0][j].end, qkv_ends[j]);
  for (int j = 0; j < 2; ++j) EXPECT_EQ(p.nano[2][j].end, o_ends[j]);
  // Unequal shares, rounded to 16 rows; the last takes the rest.
  PipelineSchedule s;
  s.shares[0] = {1, 3};
  const PipelinePlan q = nf::plan_pipeline(make_batch(0, 0, {100}), s);
  EXPECT_EQ(q.nano[0][0].end, 32);  // 25 rows -> 32
  EXPECT_EQ(q.nano[0][1].end, 100);
}

TEST(Pipeline, AttentionCutsBetweenRequestsByKvRead) {
  // 8 decodes of context 1000 (cost 8000) and one 256-token prefill chunk of context 256 (cost
  // 256 * 2 tiles = 512): two equal shares cut after the 4th decode.
  const nf::ScheduledBatch b = make_batch(8, 1000, {256});
  PipelineSchedule s;
  s.shares[1] = {1, 1};
  const PipelinePlan p = nf::plan_pipeline(b, s);
  EXPECT_EQ(p.nano[1][0].req_end, 4);
  EXPECT_EQ(p.nano[1][0].end, 4);
  EXPECT_EQ(p.nano[1][1].req_begin, 4);
  EXPECT_EQ(p.nano[1][1].end, 8 + 256);
  // Four shares of a batch with one request: the first takes it, the rest are empty and get no
  // nano-operation.
  s.shares[1] = {1, 1, 1, 1};
  const PipelinePlan one = nf::plan_pipeline(make_batch(0, 0, {64}), s);
  int attention_ops = 0;
  for (const auto& op : one.ops) attention_ops += op.op.stage == Stage::kAttention;
  EXPECT_EQ(attention_ops, 1);
}

TEST(Pipeline, IssueOrderYieldsToTheBatchsDependencies) {
  // The decodes weigh almost nothing next to the 2044-token prefill chunk: attention nano-batch
  // 0 gets the 4 decodes (rows 0..3, inside qkv nano-batch 0); the chunk's request (rows
  // 4..2047, all four qkv nano-batches) goes to the share whose boundary is nearest (nano-batch
  // 2), which the schedule issues after qkv 3 anyway; the other two are empty and get no
  // operation. Attention 0 keeps its early place, before qkv 2.
  const nf::ScheduledBatch b = make_batch(4, 20, {2044});
  const PipelineSchedule s = nanoflow_like();
  const PipelinePlan p = nf::plan_pipeline(b, s);
  EXPECT_EQ(p.nano[1][0].end, 4);
  EXPECT_TRUE(p.nano[1][1].empty());
  EXPECT_EQ(p.nano[1][2].begin, 4);
  EXPECT_EQ(p.nano[1][2].end, 2048);
  EXPECT_TRUE(p.nano[1][3].empty());
  std::vector<std::pair<int, int>> order;
  for (const auto& op : p.ops) order.emplace_back(static_cast<int>(op.op.stage), op.op.nano);
  EXPECT_EQ(order.size(), 10u);
  auto pos = [&](int stage, int nano) {
    return std::find(order.begin(), order.end(), std::pair{stage, nano}) - order.begin();
  };
  EXPECT_LT(pos(0, 0), pos(1, 0));
  EXPECT_LT(pos(1, 0), pos(0, 2));
  for (int j = 0; j < 4; ++j) EXPECT_LT(pos(0, j), pos(1, 2));
  // A schedule that issues the chunk's attention early must yield: the same cut with attention
  // issued right after qkv 0.
  PipelineSchedule eager = s;
  eager.ops = {
      {Stage::kQkv, 0, 0, 0},       {Stage::kAttention, 0, 0, 0}, {Stage::kAttention, 1, 0, 0},
      {Stage::kAttention, 2, 0, 0}, {Stage::kAttention, 3, 0, 0}, {Stage::kQkv, 1, 0, 0},
      {Stage::kQkv, 2, 0, 0},       {Stage::kQkv, 3, 0, 0},       {Stage::kO, 0, 0, 0},
      {Stage::kO, 1, 0, 0},         {Stage::kFfn, 0, 0, 0},       {Stage::kFfn, 1, 0, 0}};
  eager.validate();
  const PipelinePlan e = nf::plan_pipeline(b, eager);
  std::vector<std::pair<int, int>> eorder;
  for (const auto& op : e.ops) eorder.emplace_back(static_cast<int>(op.op.stage), op.op.nano);
  const std::vector<std::pair<int, int>> expected = {{0, 0}, {1, 0}, {0, 1}, {0, 2}, {0, 3},
                                                     {1, 2}, {2, 0}, {2, 1}, {3, 0}, {3, 1}};
  EXPECT_EQ(eorder, expected);
  // Every dependency of every nano-operation comes before it, and covers exactly the
  // nano-operations of the stage before that share its rows.
  for (size_t i = 0; i < p.ops.size(); ++i) {
    const auto& op = p.ops[i];
    for (int d : op.deps) EXPECT_LT(static_cast<size_t>(d), i);
    if (op.op.stage == Stage::kQkv) continue;
    size_t expected = 0;
    for (const auto& other : p.ops) {
      if (static_cast<int>(other.op.stage) != static_cast<int>(op.op.stage) - 1) continue;
      const auto& a = p.range(op.op);
      const auto& e = p.range(other.op);
      expected += a.begin < e.end && e.begin < a.end;
    }
    EXPECT_EQ(op.deps.size(), expected) << nf::stage_name(op.op.stage) << " " << op.op.nano;
  }
}

TEST(Pipeline, CrossLayerPlanIssuesEveryInstanceAfterWhatItNeeds) {
  const nf::ScheduledBatch b0 = make_batch(40, 300, {200, 120});
  std::vector<int> ends;
  const nf::ScheduledBatch b = nf::permute_requests(b0, nf::group_requests(b0, 2, &ends));
  ASSERT_EQ(ends.size(), 2u);
  const PipelineSchedule s = cross_layer();
  EXPECT_FALSE(s.is_serial());
  const PipelinePlan p = nf::plan_pipeline(b, s, 16, &ends);
  EXPECT_TRUE(p.any_ahead);
  // Every stage cut at the group boundary.
  for (int st = 0; st < nf::kNumStages; ++st) {
    ASSERT_EQ(p.nano[st].size(), 2u);
    EXPECT_EQ(p.nano[st][0].req_end, ends[0]);
    EXPECT_EQ(p.nano[st][0].end, b.seq_indptr[ends[0]]);
  }
  // Issue period by period over 5 layers: every (op, layer) once, after each instance it needs.
  constexpr int kLayers = 5;
  std::map<std::pair<size_t, int>, int> issued;
  int order = 0;
  nf::for_each_nano_op(p, kLayers, [&](size_t i, int layer) {
    EXPECT_TRUE(issued.emplace(std::pair{i, layer}, order++).second);
    for (int d : p.ops[i].deps) EXPECT_TRUE(issued.count({static_cast<size_t>(d), layer}));
    if (layer > 0)
      for (int d : p.ops[i].prev_deps)
        EXPECT_TRUE(issued.count({static_cast<size_t>(d), layer - 1}));
  });
  EXPECT_EQ(issued.size(), p.ops.size() * kLayers);
  // Group 0's next-layer attention is issued before group 1's ffn of the layer before it.
  auto find = [&](Stage st, int nano) {
    for (size_t i = 0; i < p.ops.size(); ++i)
      if (p.ops[i].op.stage == st && p.ops[i].op.nano == nano) return i;
    return p.ops.size();
  };
  const int attention_0_layer_2 = issued[{find(Stage::kAttention, 0), 2}];
  const int ffn_1_layer_1 = issued[{find(Stage::kFfn, 1), 1}];
  EXPECT_LT(attention_0_layer_2, ffn_1_layer_1);
  // Group 0's qkv needs only group 0's ffn of the layer before.
  EXPECT_EQ(p.ops[find(Stage::kQkv, 0)].prev_deps,
            (std::vector<int>{static_cast<int>(find(Stage::kFfn, 0))}));
}

TEST(Pipeline, AheadAttentionWithoutItsQkvAheadRunsInItsOwnPeriod) {
  // qkv not ahead, attention ahead: attention would need a qkv of a later period, so the plan
  // issues it without ahead.
  PipelineSchedule s = cross_layer();
  for (NanoOp& op : s.ops)
    if (op.stage == Stage::kQkv) op.ahead = 0;
  s.validate();
  const nf::ScheduledBatch b0 = make_batch(8, 100, {64});
  std::vector<int> ends;
  const nf::ScheduledBatch b = nf::permute_requests(b0, nf::group_requests(b0, 2, &ends));
  const PipelinePlan p = nf::plan_pipeline(b, s, 16, &ends);
  EXPECT_FALSE(p.any_ahead);
  for (const auto& op : p.ops) EXPECT_EQ(op.op.ahead, 0);
}

TEST(Pipeline, RejectsAheadDenseStagesAndUnevenGroupCuts) {
  auto rejects = [](PipelineSchedule s, const std::string& what) {
    try {
      s.validate();
      ADD_FAILURE() << "accepted " << s.name;
    } catch (const nf::Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  PipelineSchedule a = cross_layer();
  a.ops[0].ahead = 1;  // o
  rejects(a, "only qkv and attention");
  PipelineSchedule b = cross_layer();
  b.shares[2] = {1, 1, 1};
  b.ops.push_back({Stage::kO, 2, 0, 0, 0});
  rejects(b, "group_cuts");
}

TEST(Pipeline, ScheduleFileRoundTripsAndRejectsBadSchedules) {
  PipelineConfig c;
  c.schedules.push_back(nanoflow_like());
  c.schedules.back().min_decode_share = 0.25;
  PipelineSchedule prefill;
  prefill.name = "prefill-heavy";
  prefill.shares[3] = {2, 1};
  c.schedules.push_back(prefill);
  c.schedules[0].stream_sms = {0, 32, -1};
  const PipelineConfig back = nf::pipeline_from_json(nf::to_json(c));
  EXPECT_EQ(back.schedules[0].stream_sms, (std::vector<int>{0, 32, -1}));
  EXPECT_TRUE(back.schedules[1].stream_sms.empty());
  ASSERT_EQ(back.schedules.size(), 2u);
  EXPECT_EQ(nf::to_json(back), nf::to_json(c));
  EXPECT_EQ(back.select(0.5).name, "4-4-2-2");
  EXPECT_EQ(back.select(0.1).name, "prefill-heavy");
  EXPECT_EQ(PipelineConfig{}.select(0.3).name, "serial");
  EXPECT_FALSE(back.schedules[0].is_serial());
  // One stream: the same cuts and order, stream 0, no SM targets.
  const PipelineConfig flat = nf::one_stream(back);
  ASSERT_EQ(flat.schedules.size(), 2u);
  EXPECT_EQ(flat.schedules[0].shares, back.schedules[0].shares);
  ASSERT_EQ(flat.schedules[0].ops.size(), back.schedules[0].ops.size());
  for (size_t i = 0; i < flat.schedules[0].ops.size(); ++i) {
    EXPECT_EQ(flat.schedules[0].ops[i].stage, back.schedules[0].ops[i].stage);
    EXPECT_EQ(flat.schedules[0].ops[i].nano, back.schedules[0].ops[i].nano);
    EXPECT_EQ(flat.schedules[0].ops[i].stream, 0);
    EXPECT_EQ(flat.schedules[0].ops[i].sm_target, 0);
  }
  EXPECT_EQ(flat.schedules[1].ops.size(), 5u);  // the default order, made explicit
  EXPECT_TRUE(flat.schedules[0].stream_sms.empty());  // no partitions without streams

  auto rejects = [](const std::string& text, const std::string& what) {
    try {
      nf::schedule_from_json(nlohmann::json::parse(text));
      ADD_FAILURE() << "accepted: " << text;
    } catch (const nf::Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  rejects(R"({"shares": {"qkv": [1, 0]}})", "share 0");
  rejects(R"({"shares": {"mlp": [1]}})", "unknown stage");
  rejects(R"({"shares": {"o": [1, 1]}, "ops": [{"stage": "qkv", "nano": 0},
             {"stage": "attention", "nano": 0}, {"stage": "o", "nano": 0},
             {"stage": "o", "nano": 0}, {"stage": "ffn", "nano": 0}]})",
          "issued 2 times");
  rejects(R"({"ops": [{"stage": "qkv", "nano": 0}, {"stage": "attention", "nano": 0},
             {"stage": "o", "nano": 0}]})",
          "issued 0 times");
  rejects(R"({"ops": [{"stage": "qkv", "nano": 3}]})", "names no nano-batch");
  rejects(R"({"min_decode_share": 2})", "min_decode_share");
  rejects(R"({"stream_sms": [32, 0]})", "stream_sms[0] = 32");
  rejects(R"({"stream_sms": [0, -1, 16]})", "stream_sms[2] = 16");
  rejects(R"({"stream_sms": [0, -2]})", "stream_sms[1] = -2");

  const fs::path f =
      fs::temp_directory_path() / ("nf_pipeline_" + std::to_string(getpid()) + ".json");
  std::ofstream(f) << "{\"schedules\": [{\"shares\": {\"qkv\": [-1]}}]}";
  try {
    nf::load_pipeline_file(f.string());
    ADD_FAILURE() << "accepted a negative share";
  } catch (const nf::Error& e) {
    EXPECT_NE(std::string(e.what()).find(f.string()), std::string::npos) << e.what();
  }
  fs::remove(f);
}

TEST(Pipeline, GroupsBalanceDecodesAndPrefillAndKeepTheSampledRows) {
  // Decodes of contexts 100..600 and chunks of 300, 200 and 100 tokens.
  nf::ScheduledBatch b = make_batch(6, 100, {300, 200, 100});
  for (int r = 0; r < 6; ++r) b.context_lens[r] = 100 * (r + 1);
  b.sample_rows = {0, 2, 5, 305, 505, 605};
  const std::vector<int> order = nf::group_requests(b, 2);
  ASSERT_EQ(order.size(), 9u);
  std::vector<int> sorted = order;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 9; ++i) EXPECT_EQ(sorted[i], i);
  // Largest first into the lighter group: decodes {600, 300, 200} | {500, 400, 100} (1100 and
  // 1000), chunks {300} | {200, 100}; each group's decodes first.
  const std::vector<int> expected = {1, 2, 5, 6, 0, 3, 4, 7, 8};
  EXPECT_EQ(order, expected);
  const nf::ScheduledBatch p = nf::permute_requests(b, order);
  p.check_shape();
  ASSERT_EQ(p.sample_rows.size(), b.sample_rows.size());
  for (size_t i = 0; i < b.sample_rows.size(); ++i) {
    EXPECT_EQ(p.token_ids[p.sample_rows[i]], b.token_ids[b.sample_rows[i]]);
    EXPECT_EQ(p.positions[p.sample_rows[i]], b.positions[b.sample_rows[i]]);
    EXPECT_EQ(p.slot_mapping[p.sample_rows[i]], b.slot_mapping[b.sample_rows[i]]);
  }
  for (size_t i = 0; i < order.size(); ++i) {
    EXPECT_EQ(p.request_ids[i], b.request_ids[order[i]]);
    EXPECT_EQ(p.context_lens[i], b.context_lens[order[i]]);
  }
  EXPECT_EQ(nf::group_requests(b, 1), (std::vector<int>{0, 1, 2, 3, 4, 5, 6, 7, 8}));
}

// By kind: the prefill requests form group 0 and the decode requests group 1, the stages cut at
// the groups; a batch of one kind runs serially.
TEST(Pipeline, ByKindGroupsPutPrefillFirstAndNeedBothKinds) {
  const nf::ScheduledBatch b = make_batch(6, 100, {300, 200, 100});
  std::vector<int> ends;
  EXPECT_EQ(nf::group_requests(b, 2, &ends, true), (std::vector<int>{6, 7, 8, 0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(ends, (std::vector<int>{3, 9}));
  nf::PipelineConfig pc;
  pc.schedules = {nf::by_kind_schedule(32, true, false)};
  nf::ScheduledBatch grouped;
  const nf::BatchPlan mixed = nf::plan_batch(b, pc, grouped);
  ASSERT_TRUE(mixed.schedule->by_kind);
  for (int s = 0; s < nf::kNumStages; ++s) {
    ASSERT_EQ(mixed.plan.nano[s].size(), 2u);
    EXPECT_EQ(mixed.plan.nano[s][0].begin, 0);
    EXPECT_EQ(mixed.plan.nano[s][0].end, 600);  // the chunks' rows
    EXPECT_EQ(mixed.plan.nano[s][1].end, 606);  // then the decodes'
  }
  EXPECT_EQ(mixed.batch->query_len(0), 300);
  // The prefill group's GEMMs target the SMs the decode attention leaves.
  for (const nf::PipelinePlan::Op& op : mixed.plan.ops) {
    if (op.op.stage == Stage::kAttention) {
      EXPECT_EQ(op.op.sm_target, 32);
    } else {
      EXPECT_EQ(op.op.sm_target, op.op.nano == 0 ? -32 : 0);
    }
  }
  EXPECT_TRUE(nf::plan_batch(make_batch(6, 100, {}), pc, grouped).schedule->is_serial());
  EXPECT_TRUE(nf::plan_batch(make_batch(0, 0, {300}), pc, grouped).schedule->is_serial());
  const PipelineSchedule& s = pc.schedules[0];
  EXPECT_EQ(nf::to_json(nf::schedule_from_json(nf::to_json(s))), nf::to_json(s));
  PipelineSchedule bad = nf::cross_layer_schedule(3, true);
  bad.by_kind = true;
  EXPECT_THROW(bad.validate(), nf::Error);
  const PipelineSchedule green = nf::by_kind_schedule(48, true, true);
  EXPECT_EQ(green.stream_sms, (std::vector<int>{0, 48}));
  EXPECT_EQ(green.name, "g2-by-kind-cross-layer-attention-sms48-prefill-gemm-rest");
  // The balanced grid: sized per batch by the backend; the plan carries the flag.
  const PipelineSchedule bal = nf::by_kind_schedule(32, true, false, true);
  EXPECT_TRUE(bal.balance_grid);
  EXPECT_EQ(bal.name, "g2-by-kind-cross-layer-attention-grid-balanced-prefill-gemm-rest");
  pc.schedules = {bal};
  EXPECT_TRUE(nf::plan_batch(b, pc, grouped).plan.balance_grid);
  EXPECT_EQ(nf::to_json(nf::schedule_from_json(nf::to_json(bal))), nf::to_json(bal));
  EXPECT_FALSE(nf::one_stream(pc).schedules[0].balance_grid);
  PipelineSchedule unbalanced = nf::cross_layer_schedule(2, true);
  unbalanced.balance_grid = true;
  EXPECT_THROW(unbalanced.validate(), nf::Error);
}

// The model of the first golden fixture, if it is present.
std::optional<nf::LoadedModel> first_fixture_model() {
  const auto files = nf::testing::golden_files(kSource);
  if (files.empty()) return std::nullopt;
  const nf::testing::Golden g = nf::testing::load_golden(kSource, files.front());
  if (!fs::exists(g.model)) return std::nullopt;
  return nf::load_model(g.model.string()).take();
}

// The CPU backend itself, on one batch of decodes and prefill chunks: a split schedule runs as
// its nano-operations (counted) and gives bitwise the serial logits.
TEST(Pipeline, CpuBackendRunsTheNanoOperations) {
  const std::optional<nf::LoadedModel> model = first_fixture_model();
  if (!model) GTEST_SKIP() << "no golden fixture model present";
  const nf::LoadedModel& m = *model;
  const nf::ScheduledBatch b = make_batch(6, 40, {100, 37});
  nf::ScheduledBatch batch = b;
  batch.sample_rows = {0, 3, 5, 105, 142};
  const int64_t V = m.config.vocab_size, L = m.config.num_layers;
  nf::CpuBackendConfig cfg;
  cfg.num_kv_blocks = 64;
  cfg.threads = 2;
  nf::CpuBackend serial(m.config, *m.weights, cfg);
  cfg.pipeline.schedules = {nanoflow_like()};
  nf::CpuBackend split(m.config, *m.weights, cfg);
  std::vector<float> a(5 * V), c(5 * V);
  serial.forward(batch, a);
  split.forward(batch, c);
  EXPECT_EQ(a, c);
  EXPECT_EQ(serial.nano_operations(), 4 * L);
  const nf::PipelinePlan plan =
      nf::plan_pipeline(nf::permute_requests(batch, nf::group_requests(batch, 2)), nanoflow_like());
  EXPECT_EQ(split.nano_operations(), static_cast<int64_t>(plan.ops.size()) * L);
  EXPECT_GT(plan.ops.size(), 4u);
  // The batch's logits and nano-operation count on a CPU backend with schedule `s`.
  auto run_with = [&](const PipelineSchedule& s) {
    nf::CpuBackendConfig with = cfg;
    with.pipeline.schedules = {s};
    nf::CpuBackend backend(m.config, *m.weights, with);
    std::vector<float> out(5 * V);
    backend.forward(batch, out);
    return std::pair{out, backend.nano_operations()};
  };
  // Cross-layer pipelining too. SM partitions (a CUDA matter), hard or soft (bounded decode
  // grids, GEMM targets), change nothing on the CPU. Its groups' GEMMs have few rows, which
  // some OpenBLAS kernels round differently (bitwise with the SkylakeX kernels, within 1e-5
  // with the Haswell ones that OpenBLAS 0.3.21 picks on a Sapphire Rapids CPU).
  for (const PipelineSchedule& s :
       {cross_layer(), nf::with_attention_partition(cross_layer(), 32, true),
        nf::with_attention_grid(cross_layer(), 24, true)}) {
    const auto [out, ops] = run_with(s);
    float worst = 0;
    for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - out[i]));
    EXPECT_LT(worst, 1e-3f) << s.name;
    std::printf("%s: max |logit diff| against serial %.3g\n", s.name.c_str(), worst);
    EXPECT_EQ(ops, 8 * L) << s.name;
  }
  // Decode and prefill rows apart (by kind): the GEMMs of the 6 decode rows alone round a
  // little differently in OpenBLAS (its small-M kernels), so equal up to that.
  const auto [k, kind_ops] = run_with(nf::by_kind_schedule(24, true, false));
  float worst = 0;
  for (size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::abs(a[i] - k[i]));
  EXPECT_LT(worst, 1e-3f);
  EXPECT_EQ(kind_ops, 8 * L);
}

// Attention in an SM partition: attention on stream 1 in a partition, the rest on the whole GPU
// or, with the GEMM partition, on stream 2 in the SMs left; a schedule that does not keep
// attention apart is refused.
TEST(PipelineSearch, AttentionPartitionMovesTheGemmsToTheSmsLeft) {
  const PipelineSchedule base = cross_layer();
  const PipelineSchedule a = nf::with_attention_partition(base, 48, false);
  EXPECT_EQ(a.stream_sms, (std::vector<int>{0, 48}));
  EXPECT_EQ(a.name, base.name + "-attention-sms48");
  const PipelineSchedule b = nf::with_attention_partition(base, 32, true);
  EXPECT_EQ(b.stream_sms, (std::vector<int>{0, 32, -1}));
  ASSERT_EQ(b.ops.size(), base.ops.size());
  for (size_t i = 0; i < b.ops.size(); ++i) {
    EXPECT_EQ(a.ops[i].stream, base.ops[i].stream);
    EXPECT_EQ(b.ops[i].stream, b.ops[i].stage == Stage::kAttention ? 1 : 2);
  }
  EXPECT_THROW(nf::with_attention_partition(nf::cross_layer_schedule(2, false), 32, true),
               nf::Error);
  int partitioned = 0;
  for (const PipelineSchedule& s : nf::candidate_schedules())
    partitioned += !s.stream_sms.empty() && !s.by_kind;
  EXPECT_EQ(partitioned, 30);
}

// A soft partition: attention keeps stream 1 with its decode grid bounded (sm_target), the GEMMs
// stay on stream 0, targeted at the SMs it leaves (-n) with gemm_rest; no green contexts. A
// negative target is a GEMM's only, and it survives the schedule file.
TEST(PipelineSearch, AttentionGridBoundsTheDecodeGridAndTargetsTheGemmsAtTheRest) {
  const PipelineSchedule base = cross_layer();
  const PipelineSchedule a = nf::with_attention_grid(base, 24, false);
  const PipelineSchedule b = nf::with_attention_grid(base, 16, true);
  EXPECT_EQ(a.name, base.name + "-attention-grid24");
  EXPECT_EQ(b.name, base.name + "-attention-grid16-gemm-rest");
  ASSERT_EQ(b.ops.size(), base.ops.size());
  for (size_t i = 0; i < b.ops.size(); ++i) {
    const bool attention = b.ops[i].stage == Stage::kAttention;
    EXPECT_EQ(a.ops[i].stream, base.ops[i].stream);
    EXPECT_EQ(b.ops[i].stream, base.ops[i].stream);
    EXPECT_EQ(a.ops[i].sm_target, attention ? 24 : 0);
    EXPECT_EQ(b.ops[i].sm_target, attention ? 16 : -16);
  }
  EXPECT_TRUE(a.stream_sms.empty());
  EXPECT_TRUE(b.stream_sms.empty());
  EXPECT_FALSE(a.is_serial());
  EXPECT_THROW(nf::with_attention_grid(nf::cross_layer_schedule(2, false), 24, true), nf::Error);
  EXPECT_EQ(nf::to_json(nf::schedule_from_json(nf::to_json(b))), nf::to_json(b));
  PipelineSchedule bad = b;
  for (NanoOp& op : bad.ops)
    if (op.stage == Stage::kAttention) op.sm_target = -16;
  EXPECT_THROW(bad.validate(), nf::Error);
  int soft = 0;
  for (const PipelineSchedule& s : nf::candidate_schedules())
    soft += s.name.find("-attention-grid") != std::string::npos && !s.by_kind;
  EXPECT_EQ(soft, 30);
}

// Tuning by timing (engine/pipeline_tune.h) on the CPU backend, which runs every schedule: the
// serial baseline of both iteration kinds is always timed, other candidates while the budget
// lasts, and the choices become a two-entry schedule file set on the backend.
TEST(Pipeline, TuneTimesCandidatesAndSetsTheChoice) {
  const std::optional<nf::LoadedModel> model = first_fixture_model();
  if (!model) GTEST_SKIP() << "no golden fixture model present";
  const nf::LoadedModel& m = *model;
  nf::CpuBackendConfig cfg;
  cfg.num_kv_blocks = 2048;
  cfg.threads = 2;
  nf::CpuBackend backend(m.config, *m.weights, cfg);
  const nf::TuneResult r = nf::tune_pipeline(backend, {48, 1.0, 1});
  const auto& ms = r.report["measurements"];
  ASSERT_GE(ms.size(), 2u);
  std::set<std::string> kinds, names;
  for (const auto& c : nf::candidate_schedules()) names.insert(c.name);
  for (const auto& e : ms) {
    kinds.insert(e["iteration"].get<std::string>());
    EXPECT_TRUE(names.count(e["schedule"].get<std::string>())) << e.dump();
    EXPECT_GT(e["ms"].get<double>(), 0);
  }
  EXPECT_EQ(kinds, (std::set<std::string>{"decode-heavy", "prefill"}));
  EXPECT_EQ(ms[0]["schedule"], "serial");
  EXPECT_EQ(ms[0]["decode_rows"], 16);  // a third of 48
  ASSERT_EQ(r.pipeline.schedules.size(), 2u);
  EXPECT_DOUBLE_EQ(r.pipeline.schedules[0].min_decode_share, 16.0 / 48 / 2);
  EXPECT_EQ(r.pipeline.schedules[1].min_decode_share, 0.0);
  EXPECT_EQ(r.report["best"]["decode-heavy"]["schedule"], r.pipeline.schedules[0].name);
  EXPECT_EQ(r.report["candidates"].get<size_t>(), nf::candidate_schedules().size());
  // Every candidate is timed, skipped over the budget, or skipped as serial on that iteration:
  // the by-kind ones on the prefill-only one, and on both the serial cut written out as one
  // nano-batch per stage.
  EXPECT_EQ(ms.size() + r.report["skipped_over_budget"].get<size_t>() +
                r.report["skipped_as_serial"].get<size_t>(),
            2 * nf::candidate_schedules().size());
  int as_serial = 0;
  const auto all = nf::candidate_schedules();
  for (size_t i = 1; i < all.size(); ++i) as_serial += all[i].by_kind + 2 * all[i].is_serial();
  EXPECT_EQ(r.report["skipped_as_serial"].get<int>(), as_serial);
  for (const auto& e : ms)
    if (e["iteration"] == "prefill")
      EXPECT_EQ(e["schedule"].get<std::string>().find("by-kind"), std::string::npos) << e.dump();
  // A split must beat serial by min_gain: none is 99% faster.
  const nf::TuneResult keep = nf::tune_pipeline(backend, {48, 0.3, 1, 0.99});
  EXPECT_EQ(keep.report["best"]["decode-heavy"]["schedule"], "serial");
  EXPECT_EQ(keep.report["best"]["prefill"]["schedule"], "serial");
}

// Writes `config` where an engine can load it; removed at the end of the test.
struct PipelineFile {
  explicit PipelineFile(const PipelineConfig& c)
      : path(fs::temp_directory_path() / ("nf_pipeline_" + std::to_string(getpid()) + "_" +
                                          std::to_string(counter++) + ".json")) {
    std::ofstream(path) << nf::to_json(c).dump(1);
  }
  ~PipelineFile() { fs::remove(path); }
  fs::path path;
  static inline int counter = 0;
};

// The CPU backend runs split schedules (NanoFlow-like, uneven with a dependency-reordered issue
// order, and cross-layer) on every golden fixture, alone and with TP=2 where the heads divide.
// Every op is row-wise or per request, so the results equal the serial run's up to GEMM
// rounding: OpenBLAS takes another kernel for a GEMM of 1-3 rows (measured: bitwise from 17
// rows), which the cross-layer schedule's two groups of a few decodes hit. Rule: the golden
// parity rule against the serial run (same tokens or a mutual top-5 near tie; top-1 logprobs
// within 1e-3).
TEST(Pipeline, CpuEngineSplitSchedulesEqualSerialOnGoldenFixtures) {
  PipelineSchedule uneven;
  uneven.name = "uneven";
  uneven.shares = {{{3, 1}, {1, 2, 1}, {1, 1, 1}, {5, 1}}};
  uneven.ops = {{Stage::kAttention, 0, 0, 0}, {Stage::kQkv, 0, 0, 0},       {Stage::kQkv, 1, 0, 0},
                {Stage::kAttention, 1, 0, 0}, {Stage::kAttention, 2, 0, 0}, {Stage::kO, 2, 0, 0},
                {Stage::kO, 0, 0, 0},         {Stage::kO, 1, 0, 0},         {Stage::kFfn, 1, 0, 0},
                {Stage::kFfn, 0, 0, 0}};
  PipelineConfig c;
  c.schedules = {nanoflow_like(), uneven, cross_layer()};
  c.schedules[1].min_decode_share = 0.5;  // mixed iterations take the uneven one
  c.schedules[2].min_decode_share = 0.9;  // decode-only ones the cross-layer one
  const PipelineFile file(c);
  int ran = 0, bitwise = 0;
  double max_diff = 0;
  for (const fs::path& fixture : nf::testing::golden_files(kSource)) {
    const nf::testing::Golden g = nf::testing::load_golden(kSource, fixture);
    if (!fs::exists(g.model)) continue;
    const auto reqs = nf::testing::golden_requests(g);
    for (int tp : {1, 2}) {
      nanoflow::EngineConfig cfg = nf::testing::golden_engine_config(g.model);
      cfg.tensor_parallel_size = tp;
      std::vector<nanoflow::RequestOutput> serial;
      try {
        serial = nanoflow::Engine::create(cfg)->generate(reqs);
      } catch (const nf::Error&) {
        ASSERT_EQ(tp, 2) << g.name;  // the heads do not divide by 2
        continue;
      }
      cfg.pipeline_file = file.path.string();
      const auto split = nanoflow::Engine::create(cfg)->generate(reqs);
      const nf::testing::RunDiff d = nf::testing::compare_runs(serial, split);
      for (const std::string& f : d.failures) ADD_FAILURE() << g.name << " TP=" << tp << ": " << f;
      EXPECT_LE(d.max_diff, 1e-3) << g.name << " TP=" << tp;
      max_diff = std::max(max_diff, d.max_diff);
      bitwise += d.max_diff == 0 && d.same == d.steps;
      ++ran;
    }
  }
  if (ran == 0) GTEST_SKIP() << "no golden fixture model present";
  std::printf(
      "REPORT nano-batch schedules on the CPU engine: %d fixture runs agree with serial "
      "(%d of them bitwise), max |top-1 logprob diff| %.2e\n",
      ran, bitwise, max_diff);
}

// A cost model shaped like the H200 profile of dummy:llama3-8b (per layer, 2048-token batch:
// qkv 0.15 ms, o 0.11, ffn 1.1, decode attention 0.7 ms for ~700k KV tokens), with a fixed
// cost per nano-operation that makes small nano-batches lose efficiency.
nf::CostModel h200_like(double beside_other, double beside_same) {
  nf::CostModel c;
  c.stage[0] = {0.010, 0.15 / 2048, false};
  c.stage[1] = {0.010, 0.7 / 700000, true};
  c.stage[2] = {0.008, 0.11 / 2048, false};
  c.stage[3] = {0.030, 1.1 / 2048, false};
  c.rate_beside_other_kind = beside_other;
  c.rate_beside_same_kind = beside_same;
  return c;
}

// 560 decodes of 1,250 context and a 1,488-token prefill chunk: a 1024/512 iteration.
nf::ScheduledBatch mixed_batch() {
  return make_batch(560, 1250, {1488});
}

TEST(PipelineSearch, SerialSimulationIsTheSumOfTheStages) {
  const nf::ScheduledBatch b = mixed_batch();
  const nf::CostModel c = h200_like(0.5, 0.5);
  const PipelinePlan p = nf::plan_pipeline(b, PipelineSchedule{});
  double sum = 0;
  for (const auto& op : p.ops) sum += c.solo_ms(b, p, op.op);
  EXPECT_NEAR(nf::simulate_ms(b, p, c, 1), sum, 1e-9);
  EXPECT_NEAR(nf::simulate_ms(b, p, c, 5), 5 * sum, 1e-9);
  // The decode attention dominates its stage's cost: 560 * 1250 KV tokens + 1488 * 12 tiles.
  EXPECT_NEAR(c.solo_ms(b, p, p.ops[1].op), 0.010 + 0.7 / 700000 * (560 * 1250 + 1488 * 12), 1e-9);
}

TEST(PipelineSearch, TwoStreamsOverlapOnlyAsTheRatesAllow) {
  const nf::ScheduledBatch b = mixed_batch();
  PipelineSchedule two;
  two.shares = {{{1, 1}, {1, 1}, {1}, {1}}};
  two.ops = {{Stage::kQkv, 0, 0, 0},       {Stage::kAttention, 0, 1, 0}, {Stage::kQkv, 1, 0, 0},
             {Stage::kAttention, 1, 1, 0}, {Stage::kO, 0, 0, 0},         {Stage::kFfn, 0, 0, 0}};
  const PipelinePlan p = nf::plan_pipeline(b, two);
  double sum = 0;
  for (const auto& op : p.ops) sum += h200_like(0.5, 0.5).solo_ms(b, p, op.op);
  // Time-slicing (each at half speed beside another) conserves the work: the sum, no less.
  EXPECT_NEAR(nf::simulate_ms(b, p, h200_like(0.5, 0.5), 1), sum, 1e-9);
  // Perfect overlap: qkv 1 runs entirely beside attention 0, so the layer is shorter by it.
  const double perfect = nf::simulate_ms(b, p, h200_like(1.0, 1.0), 1);
  EXPECT_LT(perfect, sum - 0.9 * h200_like(1, 1).solo_ms(b, p, p.ops[2].op));
  // Worse than time-slicing (interference): longer than the sum.
  EXPECT_GT(nf::simulate_ms(b, p, h200_like(0.4, 0.4), 1), sum);
}

TEST(PipelineSearch, PicksSerialWithoutOverlapGainAndSplitsWithIt) {
  const nf::ScheduledBatch b = mixed_batch();
  // No gain from running two at once: every split only adds fixed costs, so serial wins.
  const nf::SearchResult none = nf::search_schedule(b, h200_like(0.5, 0.5));
  EXPECT_TRUE(none.schedule.is_serial()) << none.schedule.name;
  EXPECT_DOUBLE_EQ(none.layer_ms, none.serial_layer_ms);
  EXPECT_GT(none.candidates, 20);
  // A memory-bound nano-operation beside a GEMM at 90% of their solo speeds: a split with the
  // attention on its own stream wins by a clear margin.
  const nf::SearchResult gain = nf::search_schedule(b, h200_like(0.9, 0.5));
  EXPECT_FALSE(gain.schedule.is_serial());
  bool second_stream = false;
  for (const NanoOp& op : gain.schedule.ops) second_stream |= op.stream != 0;
  EXPECT_TRUE(second_stream) << gain.schedule.name;
  EXPECT_LT(gain.layer_ms, 0.9 * gain.serial_layer_ms) << gain.schedule.name;
  std::printf("REPORT search with overlap at 0.9: %s, %.3f ms per layer against %.3f serial\n",
              gain.schedule.name.c_str(), gain.layer_ms, gain.serial_layer_ms);
  // The chosen schedule is a valid file entry.
  EXPECT_EQ(nf::to_json(nf::schedule_from_json(nf::to_json(gain.schedule))),
            nf::to_json(gain.schedule));
}

}  // namespace
