#include "runtime/pipeline_search.h"

#include <algorithm>
#include <limits>

#include "common/status.h"

namespace nf {

double CostModel::solo_ms(const ScheduledBatch& b, const PipelinePlan& plan,
                          const NanoOp& op) const {
  const PipelinePlan::Range& r = plan.range(op);
  double units = r.end - r.begin;
  if (op.stage == Stage::kAttention) {
    units = 0;
    for (int q = r.req_begin; q < r.req_end; ++q) {
      const int rows = b.seq_indptr[q + 1] - b.seq_indptr[q];
      units += static_cast<double>(b.context_lens[q]) * ((rows + 127) / 128);
    }
  }
  const StageCost& c = stage[static_cast<int>(op.stage)];
  return c.fixed_ms + c.per_unit_ms * units;
}

double simulate_ms(const ScheduledBatch& b, const PipelinePlan& plan, const CostModel& cost,
                   int layers) {
  NF_CHECK(layers > 0, "simulate_ms: {} layers", layers);
  const int n = static_cast<int>(plan.ops.size());
  if (n == 0) return 0;
  // The nano-operations of all layers, in issue order (period by period), with their
  // dependencies (indices of jobs issued before).
  struct Job {
    int stream;
    bool memory;
    double remaining;  // solo milliseconds left
    std::vector<int> deps;
    bool done = false, running = false;
  };
  std::vector<Job> jobs;
  jobs.reserve(static_cast<size_t>(n) * layers);
  std::vector<int> job_of(static_cast<size_t>(n) * layers, -1);  // (op, layer) -> job
  for_each_nano_op(plan, layers, [&](size_t i, int l) {
    const PipelinePlan::Op& op = plan.ops[i];
    Job j{op.op.stream,
          cost.stage[static_cast<int>(op.op.stage)].memory_bound,
          cost.solo_ms(b, plan, op.op),
          {}};
    for (int d : op.deps) j.deps.push_back(job_of[static_cast<size_t>(l) * n + d]);
    if (l > 0)
      for (int d : op.prev_deps) j.deps.push_back(job_of[static_cast<size_t>(l - 1) * n + d]);
    for (int d : j.deps) NF_CHECK(d >= 0, "simulate_ms: a job needs one issued later");
    job_of[static_cast<size_t>(l) * n + i] = static_cast<int>(jobs.size());
    jobs.push_back(std::move(j));
  });
  int streams = 0;
  for (const Job& j : jobs) streams = std::max(streams, j.stream + 1);
  std::vector<size_t> next(static_cast<size_t>(streams), 0);  // per stream: index into its queue
  std::vector<std::vector<int>> queue(static_cast<size_t>(streams));
  for (int i = 0; i < static_cast<int>(jobs.size()); ++i)
    queue[static_cast<size_t>(jobs[static_cast<size_t>(i)].stream)].push_back(i);
  std::vector<int> running(static_cast<size_t>(streams), -1);
  double t = 0;
  size_t finished = 0;
  while (finished < jobs.size()) {
    for (int s = 0; s < streams; ++s) {
      const size_t ss = static_cast<size_t>(s);
      if (running[ss] >= 0 || next[ss] >= queue[ss].size()) continue;
      Job& j = jobs[static_cast<size_t>(queue[ss][next[ss]])];
      const bool ready = std::all_of(j.deps.begin(), j.deps.end(),
                                     [&](int d) { return jobs[static_cast<size_t>(d)].done; });
      if (!ready) continue;
      j.running = true;
      running[ss] = queue[ss][next[ss]++];
    }
    std::vector<int> live;
    for (int r : running)
      if (r >= 0) live.push_back(r);
    NF_CHECK(!live.empty(), "simulate_ms: the plan deadlocks (a stream waits for a later job)");
    // Rates: alone 1; two at once by their kinds (more than two: the same-kind rate).
    std::vector<double> rate(live.size(), 1.0);
    if (live.size() == 2) {
      const bool same =
          jobs[static_cast<size_t>(live[0])].memory == jobs[static_cast<size_t>(live[1])].memory;
      rate[0] = rate[1] = same ? cost.rate_beside_same_kind : cost.rate_beside_other_kind;
    } else if (live.size() > 2) {
      std::fill(rate.begin(), rate.end(), cost.rate_beside_same_kind * 2.0 / live.size());
    }
    double dt = std::numeric_limits<double>::infinity();
    for (size_t i = 0; i < live.size(); ++i)
      dt = std::min(dt, jobs[static_cast<size_t>(live[i])].remaining / rate[i]);
    t += dt;
    for (size_t i = 0; i < live.size(); ++i) {
      Job& j = jobs[static_cast<size_t>(live[i])];
      j.remaining -= dt * rate[i];
      if (j.remaining <= 1e-12) {
        j.remaining = 0;
        j.done = true;
        j.running = false;
        running[static_cast<size_t>(j.stream)] = -1;
        ++finished;
      }
    }
  }
  return t;
}

namespace {

enum class Streams { kOne, kAttentionApart, kPerNanoBatch };

PipelineSchedule candidate(int groups, int k_attn, int k_dense, bool interleave, Streams streams) {
  PipelineSchedule s;
  s.name = "g" + std::to_string(groups) + "-qkv" + std::to_string(k_attn) + "-o" +
           std::to_string(k_dense) + (interleave ? "-interleaved" : "-stage-major") +
           (streams == Streams::kOne              ? ""
            : streams == Streams::kAttentionApart ? "-attention-stream"
                                                  : "-stream-per-nano-batch");
  s.groups = groups;
  s.shares[0] = s.shares[1] = std::vector<double>(static_cast<size_t>(k_attn), 1.0);
  s.shares[2] = s.shares[3] = std::vector<double>(static_cast<size_t>(k_dense), 1.0);
  if (streams == Streams::kPerNanoBatch) {
    // Every nano-batch a whole layer on its own stream: independent sub-batches that the GPU
    // interleaves (needs the same count in every stage).
    for (int i = 0; i < k_attn; ++i)
      for (int st = 0; st < kNumStages; ++st) s.ops.push_back({static_cast<Stage>(st), i, i, 0});
    s.validate();
    return s;
  }
  const int as = streams == Streams::kAttentionApart ? 1 : 0;
  if (interleave) {
    for (int i = 0; i < k_attn; ++i) {
      s.ops.push_back({Stage::kQkv, i, 0, 0});
      s.ops.push_back({Stage::kAttention, i, as, 0});
    }
  } else {
    for (int i = 0; i < k_attn; ++i) s.ops.push_back({Stage::kQkv, i, 0, 0});
    for (int i = 0; i < k_attn; ++i) s.ops.push_back({Stage::kAttention, i, as, 0});
  }
  for (int j = 0; j < k_dense; ++j) {
    s.ops.push_back({Stage::kO, j, 0, 0});
    s.ops.push_back({Stage::kFfn, j, 0, 0});
  }
  s.validate();
  return s;
}

}  // namespace

// Cross-layer pipelining over `groups` groups (cuts at the groups): each period issues, group
// by group, this layer's o and ffn and then the next layer's qkv and attention (ahead), so
// that one group's attention runs beside the next group's GEMMs.
PipelineSchedule cross_layer_schedule(int groups, bool attention_stream) {
  PipelineSchedule s;
  s.name =
      "g" + std::to_string(groups) + "-cross-layer" + (attention_stream ? "-attention-stream" : "");
  s.groups = groups;
  s.group_cuts = true;
  for (auto& sh : s.shares) sh.assign(static_cast<size_t>(groups), 1.0);
  for (int g = 0; g < groups; ++g) {
    s.ops.push_back({Stage::kO, g, 0, 0, 0});
    s.ops.push_back({Stage::kFfn, g, 0, 0, 0});
    s.ops.push_back({Stage::kQkv, g, 0, 0, 1});
    s.ops.push_back({Stage::kAttention, g, attention_stream ? 1 : 0, 0, 1});
  }
  s.validate();
  return s;
}

namespace {

// Refuses a schedule that does not keep attention on stream 1 and the rest on stream 0.
void check_attention_apart(const PipelineSchedule& s, const char* who) {
  for (const NanoOp& op : s.ops)
    if (op.stream != (op.stage == Stage::kAttention ? 1 : 0))
      fail("{}: schedule \"{}\" does not keep attention on stream 1 and the rest on stream 0", who,
           s.name);
}

}  // namespace

PipelineSchedule with_attention_partition(PipelineSchedule s, int attention_sms,
                                          bool gemm_partition) {
  NF_CHECK(attention_sms > 0, "with_attention_partition: {} SMs", attention_sms);
  check_attention_apart(s, "with_attention_partition");
  for (NanoOp& op : s.ops)
    if (gemm_partition && op.stage != Stage::kAttention) op.stream = 2;
  s.stream_sms = {0, attention_sms};
  if (gemm_partition) s.stream_sms.push_back(-1);
  s.name += "-attention-sms" + std::to_string(attention_sms) + (gemm_partition ? "-gemm-rest" : "");
  s.validate();
  return s;
}

PipelineSchedule with_attention_grid(PipelineSchedule s, int attention_sms, bool gemm_rest) {
  NF_CHECK(attention_sms > 0, "with_attention_grid: {} SMs", attention_sms);
  check_attention_apart(s, "with_attention_grid");
  for (NanoOp& op : s.ops)
    op.sm_target = op.stage == Stage::kAttention ? attention_sms : gemm_rest ? -attention_sms : 0;
  s.name += "-attention-grid" + std::to_string(attention_sms) + (gemm_rest ? "-gemm-rest" : "");
  s.validate();
  return s;
}

PipelineSchedule by_kind_schedule(int attention_sms, bool prefill_gemm_rest, bool green,
                                  bool balance) {
  NF_CHECK(attention_sms >= 0, "by_kind_schedule: {} SMs", attention_sms);
  NF_CHECK(!balance || (attention_sms > 0 && prefill_gemm_rest && !green),
           "by_kind_schedule: a balanced grid is soft, with the prefill GEMMs beside it");
  PipelineSchedule s = cross_layer_schedule(2, true);
  s.by_kind = true;
  s.name = "g2-by-kind-cross-layer";
  if (attention_sms > 0) {
    for (NanoOp& op : s.ops) {
      if (op.stage == Stage::kAttention) {
        op.sm_target = green ? 0 : attention_sms;
      } else if (prefill_gemm_rest && op.nano == 0) {
        op.sm_target = -attention_sms;
      }
    }
    if (green) s.stream_sms = {0, attention_sms};
    s.balance_grid = balance;
    s.name += (green ? "-attention-sms" : "-attention-grid") +
              (balance ? std::string("-balanced") : std::to_string(attention_sms)) +
              (prefill_gemm_rest ? "-prefill-gemm-rest" : "");
  }
  s.validate();
  return s;
}

std::vector<PipelineSchedule> candidate_schedules() {
  std::vector<PipelineSchedule> out{PipelineSchedule{}};
  for (int groups : {1, 2})
    for (int k_attn : {1, 2, 3, 4})
      for (int k_dense : {1, 2}) {
        if (groups > 1 && k_attn % groups != 0 && k_dense % groups != 0) continue;
        for (bool interleave : {false, true}) {
          if (k_attn == 1 && interleave) continue;  // the same as stage-major
          for (Streams st : {Streams::kOne, Streams::kAttentionApart})
            out.push_back(candidate(groups, k_attn, k_dense, interleave, st));
        }
        if (k_attn == k_dense && k_attn > 1)
          out.push_back(candidate(groups, k_attn, k_dense, false, Streams::kPerNanoBatch));
      }
  for (int groups : {2, 3, 4})
    for (bool attention_stream : {false, true})
      out.push_back(cross_layer_schedule(groups, attention_stream));
  // Attention in a hard SM partition (green context), the GEMMs on the whole GPU or on the
  // SMs left (H200-NOTES: a well-fed memory-bound kernel needs about a third of the SMs).
  std::vector<PipelineSchedule> bases;
  for (int groups : {2, 3, 4}) bases.push_back(cross_layer_schedule(groups, true));
  bases.push_back(candidate(1, 2, 1, true, Streams::kAttentionApart));
  bases.push_back(candidate(2, 4, 2, true, Streams::kAttentionApart));
  for (const PipelineSchedule& base : bases)
    for (int sms : {16, 32, 48})
      for (bool gemm_partition : {false, true})
        out.push_back(with_attention_partition(base, sms, gemm_partition));
  // The same with soft partitions: the streaming decode kernel's grid bounded (--attention tc),
  // the GEMMs beside it on the whole GPU or targeted at the SMs it leaves. A soft partition costs
  // the GEMMs nothing while no attention runs.
  for (const PipelineSchedule& base : bases)
    for (int sms : {16, 24, 32})
      for (bool gemm_rest : {false, true}) out.push_back(with_attention_grid(base, sms, gemm_rest));
  // Decode rows apart from prefill rows: the decode attention beside the prefill GEMMs.
  out.push_back(by_kind_schedule(0, false, false));
  for (int sms : {24, 32, 40, 48})
    for (bool rest : {false, true}) out.push_back(by_kind_schedule(sms, rest, false));
  for (int sms : {32, 48}) out.push_back(by_kind_schedule(sms, true, true));
  out.push_back(by_kind_schedule(32, true, false, true));
  return out;
}

SearchResult search_schedule(const ScheduledBatch& b, const CostModel& cost) {
  constexpr int kLayers = 3;  // steady state: the third layer minus the second
  // Grouped batches by group count, balanced ones first, then by kind.
  std::vector<ScheduledBatch> grouped(2 * (kMaxNanoBatches + 1));
  std::vector<std::vector<int>> ends(2 * (kMaxNanoBatches + 1));
  auto layer_ms = [&](const PipelineSchedule& s) {
    const size_t g = static_cast<size_t>(s.groups) + (s.by_kind ? kMaxNanoBatches + 1 : 0);
    if (s.groups > 1 && grouped[g].request_ids.empty())
      grouped[g] = permute_requests(b, group_requests(b, s.groups, &ends[g], s.by_kind));
    const ScheduledBatch& run = s.groups > 1 ? grouped[g] : b;
    const PipelinePlan plan = plan_pipeline(run, s, 16, &ends[g]);
    return simulate_ms(run, plan, cost, kLayers) - simulate_ms(run, plan, cost, kLayers - 1);
  };
  SearchResult best;
  for (const PipelineSchedule& s : candidate_schedules()) {
    const double ms = layer_ms(s);
    if (best.candidates++ == 0) {
      best.serial_layer_ms = best.layer_ms = ms;
      best.schedule = s;
    } else if (ms < best.layer_ms * (1 - 1e-9)) {
      best.layer_ms = ms;
      best.schedule = s;
    }
  }
  return best;
}

}  // namespace nf
