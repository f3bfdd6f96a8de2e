#include "runtime/pipeline.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/json_file.h"
#include "common/status.h"

namespace nf {
namespace {

constexpr const char* kStageNames[kNumStages] = {"qkv", "attention", "o", "ffn"};

Stage stage_from_name(const std::string& name) {
  for (int s = 0; s < kNumStages; ++s)
    if (name == kStageNames[s]) return static_cast<Stage>(s);
  fail("pipeline schedule: unknown stage \"{}\" (qkv, attention, o, ffn)", name);
}

// Boundaries [0 = c_0 <= c_1 <= ... <= c_n = total] of `shares` over `total`, each interior one
// rounded to a multiple of `align` (the last nano-batch takes what is left).
std::vector<int> cut_rows(const std::vector<double>& shares, int total, int align) {
  const double sum = std::accumulate(shares.begin(), shares.end(), 0.0);
  std::vector<int> c(shares.size() + 1, 0);
  double acc = 0;
  for (size_t i = 0; i + 1 < shares.size(); ++i) {
    acc += shares[i];
    const double at = total * acc / sum;
    int r = static_cast<int>(std::lround(at / align)) * align;
    c[i + 1] = std::clamp(r, c[i], total);
  }
  c.back() = total;
  return c;
}

}  // namespace

const char* stage_name(Stage s) {
  return kStageNames[static_cast<int>(s)];
}

bool PipelineSchedule::is_serial() const {
  if (groups != 1) return false;
  for (const auto& sh : shares)
    if (sh.size() != 1) return false;
  for (const NanoOp& op : ops)
    if (op.stream != 0 || op.sm_target != 0 || op.ahead != 0) return false;
  return true;
}

std::vector<NanoOp> PipelineSchedule::issue_order() const {
  if (!ops.empty()) return ops;
  std::vector<NanoOp> out;
  for (int s = 0; s < kNumStages; ++s)
    for (int j = 0; j < static_cast<int>(shares[s].size()); ++j)
      out.push_back({static_cast<Stage>(s), j, 0, 0});
  return out;
}

void PipelineSchedule::validate() const {
  for (int s = 0; s < kNumStages; ++s) {
    const auto& sh = shares[s];
    if (!(!sh.empty() && static_cast<int>(sh.size()) <= kMaxNanoBatches))
      fail("pipeline schedule \"{}\": stage {} has {} nano-batches (1 to {})", name, kStageNames[s],
           sh.size(), kMaxNanoBatches);
    for (double v : sh)
      if (!(std::isfinite(v) && v > 0))
        fail("pipeline schedule \"{}\": stage {} has share {}", name, kStageNames[s], v);
  }
  if (groups < 1 || groups > kMaxNanoBatches)
    fail("pipeline schedule \"{}\": {} groups (1 to {})", name, groups, kMaxNanoBatches);
  if (group_cuts) {
    if (groups < 2) fail("pipeline schedule \"{}\": group_cuts needs 2 groups or more", name);
    for (int s = 0; s < kNumStages; ++s)
      if (static_cast<int>(shares[s].size()) != groups)
        fail("pipeline schedule \"{}\": group_cuts, but stage {} has {} nano-batches for {} groups",
             name, kStageNames[s], shares[s].size(), groups);
  }
  if (by_kind && !(groups == 2 && group_cuts))
    fail("pipeline schedule \"{}\": by_kind needs 2 groups and group_cuts", name);
  if (balance_grid && !by_kind) fail("pipeline schedule \"{}\": balance_grid needs by_kind", name);
  if (!(std::isfinite(min_decode_share) && min_decode_share >= 0 && min_decode_share <= 1))
    fail("pipeline schedule \"{}\": min_decode_share {} is not in [0, 1]", name, min_decode_share);
  if (stream_sms.size() > static_cast<size_t>(kMaxStreams))
    fail("pipeline schedule \"{}\": stream_sms has {} entries (at most {} streams)", name,
         stream_sms.size(), kMaxStreams);
  bool rest_taken = false;
  for (size_t i = 0; i < stream_sms.size(); ++i) {
    const int n = stream_sms[i];
    if (n < -1 || (i == 0 && n != 0) || (rest_taken && n != 0))
      fail(
          "pipeline schedule \"{}\": stream_sms[{}] = {} (stream 0 is 0; then SM counts, or -1 "
          "once for all that is left, last)",
          name, i, n);
    rest_taken = rest_taken || n == -1;
  }
  if (ops.empty()) return;
  std::array<std::vector<int>, kNumStages> seen;
  for (int s = 0; s < kNumStages; ++s) seen[s].assign(shares[s].size(), 0);
  for (const NanoOp& op : ops) {
    const int s = static_cast<int>(op.stage);
    if (!(s >= 0 && s < kNumStages && op.nano >= 0 && op.nano < static_cast<int>(shares[s].size())))
      fail("pipeline schedule \"{}\": op ({}, {}) names no nano-batch", name,
           s >= 0 && s < kNumStages ? kStageNames[s] : "?", op.nano);
    if (op.ahead != 0 &&
        !(op.ahead == 1 && (op.stage == Stage::kQkv || op.stage == Stage::kAttention)))
      fail("pipeline schedule \"{}\": op ({}, {}) has ahead {} (only qkv and attention may be 1)",
           name, kStageNames[s], op.nano, op.ahead);
    if (!(op.stream >= 0 && op.stream < kMaxStreams &&
          (op.stage == Stage::kAttention ? op.sm_target >= 0 : op.sm_target > -1024)))
      fail("pipeline schedule \"{}\": op ({}, {}) has stream {} and SM target {}", name,
           kStageNames[s], op.nano, op.stream, op.sm_target);
    ++seen[s][static_cast<size_t>(op.nano)];
  }
  for (int s = 0; s < kNumStages; ++s)
    for (size_t j = 0; j < seen[s].size(); ++j)
      if (seen[s][j] != 1)
        fail("pipeline schedule \"{}\": op ({}, {}) issued {} times", name, kStageNames[s], j,
             seen[s][j]);
}

const PipelineSchedule& PipelineConfig::select(double decode_share) const {
  static const PipelineSchedule kSerial;
  const PipelineSchedule* best = &kSerial;
  double best_min = -1;
  for (const PipelineSchedule& s : schedules) {
    if (s.min_decode_share <= decode_share && s.min_decode_share > best_min) {
      best = &s;
      best_min = s.min_decode_share;
    }
  }
  return *best;
}

PipelineConfig one_stream(PipelineConfig c) {
  for (PipelineSchedule& s : c.schedules) {
    s.ops = s.issue_order();
    for (NanoOp& op : s.ops) op.stream = op.sm_target = 0;
    s.stream_sms.clear();
    s.balance_grid = false;
    s.name += " (one stream)";
  }
  return c;
}

nlohmann::json to_json(const PipelineSchedule& s) {
  nlohmann::json j;
  j["name"] = s.name;
  j["min_decode_share"] = s.min_decode_share;
  j["groups"] = s.groups;
  j["group_cuts"] = s.group_cuts;
  if (s.by_kind) j["by_kind"] = true;
  if (s.balance_grid) j["balance_grid"] = true;
  for (int st = 0; st < kNumStages; ++st) j["shares"][kStageNames[st]] = s.shares[st];
  if (!s.stream_sms.empty()) j["stream_sms"] = s.stream_sms;
  j["ops"] = nlohmann::json::array();
  for (const NanoOp& op : s.issue_order())
    j["ops"].push_back({{"stage", stage_name(op.stage)},
                        {"nano", op.nano},
                        {"stream", op.stream},
                        {"sm_target", op.sm_target},
                        {"ahead", op.ahead}});
  return j;
}

PipelineSchedule schedule_from_json(const nlohmann::json& j) {
  PipelineSchedule s;
  try {
    if (!j.is_object()) fail("pipeline schedule: not a JSON object");
    s.name = j.value("name", std::string("unnamed"));
    s.min_decode_share = j.value("min_decode_share", 0.0);
    s.groups = j.value("groups", 1);
    s.group_cuts = j.value("group_cuts", false);
    s.by_kind = j.value("by_kind", false);
    s.balance_grid = j.value("balance_grid", false);
    s.stream_sms = j.value("stream_sms", std::vector<int>{});
    if (j.contains("shares")) {
      for (const auto& [k, v] : j.at("shares").items())
        s.shares[static_cast<int>(stage_from_name(k))] = v.get<std::vector<double>>();
    }
    if (j.contains("ops")) {
      for (const auto& o : j.at("ops")) {
        NanoOp op;
        op.stage = stage_from_name(o.at("stage").get<std::string>());
        op.nano = o.at("nano").get<int>();
        op.stream = o.value("stream", 0);
        op.sm_target = o.value("sm_target", 0);
        op.ahead = o.value("ahead", 0);
        s.ops.push_back(op);
      }
    }
  } catch (const nlohmann::json::exception& e) {
    fail("pipeline schedule: {}", e.what());
  }
  s.validate();
  return s;
}

nlohmann::json to_json(const PipelineConfig& c) {
  nlohmann::json j;
  j["schedules"] = nlohmann::json::array();
  for (const PipelineSchedule& s : c.schedules) j["schedules"].push_back(to_json(s));
  return j;
}

PipelineConfig pipeline_from_json(const nlohmann::json& j) {
  if (!(j.is_object() && j.contains("schedules") && j.at("schedules").is_array()))
    fail("pipeline file: needs {{\"schedules\": [...]}}");
  PipelineConfig c;
  for (const auto& s : j.at("schedules")) c.schedules.push_back(schedule_from_json(s));
  return c;
}

PipelineConfig load_pipeline_file(const std::string& path) {
  try {
    return pipeline_from_json(read_json_file(path));
  } catch (const Error& e) {
    fail("{}: {}", path, e.what());
  }
}

std::vector<int> group_requests(const ScheduledBatch& b, int groups, std::vector<int>* group_ends,
                                bool by_kind) {
  NF_CHECK(groups >= 1, "group_requests: {} groups", groups);
  NF_CHECK(!by_kind || groups == 2, "group_requests: by kind needs 2 groups, not {}", groups);
  const int B = b.num_requests();
  std::vector<int> order(static_cast<size_t>(B));
  std::iota(order.begin(), order.end(), 0);
  if (group_ends != nullptr) group_ends->assign(1, B);
  if (groups == 1) return order;
  if (by_kind) {
    std::stable_partition(order.begin(), order.end(), [&](int r) { return b.query_len(r) != 1; });
    if (group_ends != nullptr) *group_ends = {B - b.num_decodes(), B};
    return order;
  }
  // Decodes by KV read, prefill chunks by tokens, each largest first into the lightest group.
  std::vector<int> group(static_cast<size_t>(B), 0);
  std::vector<double> kv(static_cast<size_t>(groups), 0.0),
      tokens(static_cast<size_t>(groups), 0.0);
  auto rows = [&](int r) { return b.query_len(r); };
  std::vector<int> by_size = order;
  std::stable_sort(by_size.begin(), by_size.end(), [&](int x, int y) {
    return rows(x) != rows(y) ? rows(x) > rows(y) : b.context_lens[x] > b.context_lens[y];
  });
  for (int r : by_size) {
    const bool decode = rows(r) == 1;
    std::vector<double>& load = decode ? kv : tokens;
    const size_t g = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    load[g] += decode ? b.context_lens[r] : rows(r);
    group[static_cast<size_t>(r)] = static_cast<int>(g);
  }
  std::vector<int> out;
  out.reserve(order.size());
  if (group_ends != nullptr) group_ends->clear();
  for (int g = 0; g < groups; ++g) {
    for (const bool decode : {true, false})
      for (int r = 0; r < B; ++r)
        if (group[static_cast<size_t>(r)] == g && (rows(r) == 1) == decode) out.push_back(r);
    if (group_ends != nullptr) group_ends->push_back(static_cast<int>(out.size()));
  }
  return out;
}

ScheduledBatch permute_requests(const ScheduledBatch& b, const std::vector<int>& order) {
  const int B = b.num_requests();
  NF_CHECK(static_cast<int>(order.size()) == B, "permute_requests: {} entries for {} requests",
           order.size(), B);
  ScheduledBatch p;
  std::vector<int32_t> new_row(static_cast<size_t>(b.num_tokens()), -1);
  p.seq_indptr.push_back(0);
  p.block_indptr.push_back(0);
  for (int r : order) {
    NF_CHECK(r >= 0 && r < B, "permute_requests: request {} of {}", r, B);
    for (int t = b.seq_indptr[r]; t < b.seq_indptr[r + 1]; ++t) {
      NF_CHECK(new_row[static_cast<size_t>(t)] < 0, "permute_requests: request {} twice", r);
      new_row[static_cast<size_t>(t)] = static_cast<int32_t>(p.token_ids.size());
      p.token_ids.push_back(b.token_ids[t]);
      p.positions.push_back(b.positions[t]);
      p.slot_mapping.push_back(b.slot_mapping[t]);
    }
    p.seq_indptr.push_back(static_cast<int32_t>(p.token_ids.size()));
    p.context_lens.push_back(b.context_lens[r]);
    p.block_ids.insert(p.block_ids.end(), b.block_ids.begin() + b.block_indptr[r],
                       b.block_ids.begin() + b.block_indptr[r + 1]);
    p.block_indptr.push_back(static_cast<int32_t>(p.block_ids.size()));
    p.request_ids.push_back(b.request_ids[r]);
  }
  for (int32_t row : b.sample_rows) p.sample_rows.push_back(new_row[static_cast<size_t>(row)]);
  return p;
}

BatchPlan plan_batch(const ScheduledBatch& b, const PipelineConfig& config,
                     ScheduledBatch& grouped) {
  BatchPlan bp;
  const double share =
      b.num_tokens() > 0 ? static_cast<double>(b.num_decodes()) / b.num_tokens() : 0.0;
  static const PipelineSchedule kSerial;
  bp.schedule = &config.select(share);
  // A by-kind schedule needs both kinds.
  if (bp.schedule->by_kind && (b.num_decodes() == 0 || b.num_decodes() == b.num_requests()))
    bp.schedule = &kSerial;
  bp.batch = &b;
  std::vector<int> group_ends;
  if (bp.schedule->groups > 1) {
    grouped = permute_requests(
        b, group_requests(b, bp.schedule->groups, &group_ends, bp.schedule->by_kind));
    bp.batch = &grouped;
  }
  bp.plan = plan_pipeline(*bp.batch, *bp.schedule, 16, &group_ends);
  return bp;
}

PipelinePlan plan_pipeline(const ScheduledBatch& b, const PipelineSchedule& schedule, int row_align,
                           const std::vector<int>* group_ends) {
  NF_CHECK(row_align > 0, "plan_pipeline: row_align {}", row_align);
  const int T = b.num_tokens(), B = b.num_requests();
  PipelinePlan plan;
  if (schedule.group_cuts) {
    NF_CHECK(group_ends != nullptr && static_cast<int>(group_ends->size()) == schedule.groups &&
                 group_ends->back() == B,
             "plan_pipeline: schedule \"{}\" cuts at groups but has no group ends", schedule.name);
    for (int s = 0; s < kNumStages; ++s) {
      int prev = 0;
      for (int e : *group_ends) {
        plan.nano[s].push_back({b.seq_indptr[prev], b.seq_indptr[e], prev, e});
        prev = e;
      }
    }
  }
  for (int s = 0; s < kNumStages && !schedule.group_cuts; ++s) {
    const auto& shares = schedule.shares[s];
    auto& out = plan.nano[s];
    out.resize(shares.size());
    if (static_cast<Stage>(s) != Stage::kAttention) {
      const std::vector<int> c = cut_rows(shares, T, row_align);
      for (size_t j = 0; j < shares.size(); ++j) out[j] = {c[j], c[j + 1], 0, 0};
      continue;
    }
    // Attention: cut between requests, at the request boundary nearest each share of the KV
    // read (context tokens, once per 128-row query tile).
    std::vector<double> cost(static_cast<size_t>(B) + 1, 0.0);
    for (int r = 0; r < B; ++r) {
      const int q = b.seq_indptr[r + 1] - b.seq_indptr[r];
      cost[r + 1] = cost[r] + static_cast<double>(b.context_lens[r]) * ((q + 127) / 128);
    }
    const double sum = std::accumulate(shares.begin(), shares.end(), 0.0);
    int prev = 0;
    double acc = 0;
    for (size_t j = 0; j < shares.size(); ++j) {
      int next = B;
      if (j + 1 < shares.size()) {
        acc += shares[j];
        const double target = cost[B] * acc / sum;
        next = static_cast<int>(std::lower_bound(cost.begin(), cost.end(), target) - cost.begin());
        next = std::clamp(next, prev, B);
        if (next > prev && target - cost[next - 1] < cost[next] - target) --next;
      }
      out[j] = {b.seq_indptr[prev], b.seq_indptr[next], prev, next};
      prev = next;
    }
  }
  // The schedule's issue order, non-empty nano-batches only. An ahead attention operation that
  // shares rows with a qkv operation that is not ahead runs without ahead (it would need an
  // operation issued a period later).
  std::vector<NanoOp> pending;
  for (const NanoOp& op : schedule.issue_order())
    if (!plan.range(op).empty()) pending.push_back(op);
  auto overlap = [&](const NanoOp& x, const NanoOp& y) {
    const auto& a = plan.range(x);
    const auto& e = plan.range(y);
    return a.begin < e.end && e.begin < a.end;
  };
  for (NanoOp& op : pending) {
    if (op.stage != Stage::kAttention || op.ahead == 0) continue;
    for (const NanoOp& q : pending)
      if (q.stage == Stage::kQkv && q.ahead == 0 && overlap(op, q)) op.ahead = 0;
  }
  for (const NanoOp& op : pending) plan.any_ahead = plan.any_ahead || op.ahead != 0;
  plan.stream_sms = schedule.stream_sms;
  plan.balance_grid = schedule.balance_grid;
  // What an operation needs: the stage before, same layer, sharing rows; for qkv, the layer
  // before's ffn sharing rows.
  auto same_layer_dep = [&](const NanoOp& later, const NanoOp& earlier) {
    return later.stage != Stage::kQkv &&
           static_cast<int>(earlier.stage) == static_cast<int>(later.stage) - 1 &&
           overlap(later, earlier);
  };
  auto prev_layer_dep = [&](const NanoOp& later, const NanoOp& earlier) {
    return later.stage == Stage::kQkv && earlier.stage == Stage::kFfn && overlap(later, earlier);
  };
  // Within one period, `later` must come after `earlier` when it needs that very instance: the
  // same layer (same ahead), or the layer before for qkv (one more ahead).
  auto needs_in_period = [&](const NanoOp& later, const NanoOp& earlier) {
    return (later.ahead == earlier.ahead && same_layer_dep(later, earlier)) ||
           (later.ahead == earlier.ahead + 1 && prev_layer_dep(later, earlier));
  };
  // A stable topological sort of the issue order.
  std::vector<bool> done(pending.size(), false);
  std::vector<int> index_of(pending.size(), -1);
  while (plan.ops.size() < pending.size()) {
    size_t pick = pending.size();
    for (size_t i = 0; i < pending.size() && pick == pending.size(); ++i) {
      if (done[i]) continue;
      bool ready = true;
      for (size_t k = 0; k < pending.size() && ready; ++k)
        if (!done[k] && k != i && needs_in_period(pending[i], pending[k])) ready = false;
      if (ready) pick = i;
    }
    NF_CHECK(pick < pending.size(), "plan_pipeline: schedule \"{}\" has a dependency cycle",
             schedule.name);
    done[pick] = true;
    index_of[pick] = static_cast<int>(plan.ops.size());
    plan.ops.push_back({pending[pick], {}, {}});
  }
  for (size_t i = 0; i < plan.ops.size(); ++i)
    for (size_t k = 0; k < plan.ops.size(); ++k) {
      if (same_layer_dep(plan.ops[i].op, plan.ops[k].op))
        plan.ops[i].deps.push_back(static_cast<int>(k));
      if (prev_layer_dep(plan.ops[i].op, plan.ops[k].op))
        plan.ops[i].prev_deps.push_back(static_cast<int>(k));
    }
  return plan;
}

}  // namespace nf
