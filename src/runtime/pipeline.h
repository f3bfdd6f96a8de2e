// The nano-batch pipeline schedule (NanoFlow's intra-device parallelism): how one iteration's
// dense batch is cut into nano-batches per stage of a layer, and in which order, on which stream
// and with how many SMs each nano-operation runs. Overlap off is the one-nano-batch schedule.
//
// A layer is four stages:
//   qkv        attention RMSNorm (with the residual add), QKV GEMM, RoPE and the K/V write
//   attention  decode and prefill attention (cut at request boundaries only)
//   o          O GEMM into the residual
//   ffn        FFN RMSNorm, gate/up GEMM, SiLU-and-multiply, down GEMM into the residual
// Each stage cuts the batch into its own nano-batches (shares of the work, in row order).
// A nano-operation (stage, nano-batch) needs the nano-operations of the stage before it (the
// ffn stage of the layer before, for qkv) whose rows overlap its own; every layer issues the
// same list of nano-operations, which must respect that.
//
// Backends execute a PipelinePlan: the schedule cut for one batch. The CPU backend runs the
// nano-operations one after the other in the plan's order (the test twin: bitwise the serial
// results); the CUDA backend issues them on their streams with events along the dependencies
// (CudaBackend::run_pipelined).
#pragma once

#include <array>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "runtime/batch.h"

namespace nf {

enum class Stage : int { kQkv = 0, kAttention = 1, kO = 2, kFfn = 3 };
inline constexpr int kNumStages = 4;
inline constexpr int kMaxNanoBatches = 16;
inline constexpr int kMaxStreams = 8;  // per schedule (NanoOp::stream, stream_sms)
const char* stage_name(Stage s);

struct NanoOp {
  Stage stage = Stage::kQkv;
  int nano = 0;       // index into the stage's nano-batches
  int stream = 0;     // CUDA: the stream it is issued on (0 = the main one)
  // CUDA; other backends ignore it. A GEMM's SM-count target while it runs (cuBLASLt's): n > 0
  // that many SMs, -n all but n (of its stream's partition, or of the GPU), 0 all. An attention
  // operation's decode grid with --attention tc: n > 0 runs its decode rows on the streaming
  // kernel with n persistent CTAs, one per SM (a soft partition on an ordinary stream; a GEMM
  // beside it with target -n takes the other SMs), 0 leaves it to the stream's partition. An
  // attention operation with a bounded grid or in a partition runs its prefill rows (compute
  // bound) on the stream of the qkv operation it needs, on the SMs that stream has.
  int sm_target = 0;
  // Cross-layer pipelining: 1 issues this qkv or attention nano-operation for the next layer,
  // among this layer's nano-operations (a layer's list is then a period: layer l's o and ffn
  // with layer l+1's ahead qkv and attention; one more period before the first layer). So one
  // group's next-layer attention can run beside another group's FFN. An ahead operation that
  // needs a not-ahead one of its layer is issued without ahead for that batch (plan_pipeline).
  int ahead = 0;
};

struct PipelineSchedule {
  std::string name = "serial";
  // Used for batches whose share of decode rows among all rows is at least this (the schedule
  // with the largest such threshold wins), so that decode-heavy and prefill-heavy iterations
  // may differ.
  double min_decode_share = 0.0;
  // Before cutting, the batch's requests are dealt into this many groups, each with about its
  // share of the decode rows' KV and of the prefill tokens, and reordered group by group (decodes
  // first in each). With groups matching the cuts, every nano-batch holds decode and prefill
  // rows, so one nano-batch's decode attention can run beside another's FFN GEMMs; in the
  // scheduler's order (all decodes first) the first dense nano-batch would hold all decodes.
  int groups = 1;
  // With groups, cut every stage exactly at the group boundaries (each stage must then have
  // `groups` nano-batches; shares are ignored): nano-batch j of every stage is group j, so a
  // group's operations depend only on the same group's.
  bool group_cuts = false;
  // With 2 groups: group 0 holds the prefill requests and group 1 the decode requests, instead
  // of groups balanced in both (so that, cut at the groups, the decode rows' memory-bound
  // attention runs beside the prefill rows' GEMMs, which are the larger and the more efficient).
  // A batch without both kinds runs serially.
  bool by_kind = false;
  // CUDA, with by_kind: the soft partition follows the work. Per batch, the decode attention's
  // grid k (in place of its operations' sm_target) and the GEMM targets -k (in place of negative
  // sm_targets) are sized so that the decode rows' KV read on k SMs and the prefill rows' GEMMs
  // on the other SMs take about equally long (NanoOp::sm_target).
  bool balance_grid = false;
  // Per stage, the shares of its work given to each nano-batch (positive; normalized). Dense
  // stages share rows; the attention stage shares the KV it reads (context tokens per request,
  // times the request's 128-row query tiles) and cuts between requests.
  std::array<std::vector<double>, kNumStages> shares{{{1.0}, {1.0}, {1.0}, {1.0}}};
  // The nano-operations of one layer in issue order; empty: stage by stage, nano-batch by
  // nano-batch, stream 0, all SMs.
  std::vector<NanoOp> ops;
  // CUDA: hard SM partitions (green contexts) per stream, index = stream. 0 (or no entry): an
  // ordinary stream on the whole GPU (stream 0 always is); n > 0: a partition of n SMs (the
  // driver rounds up to its granularity) carved from what the streams before left; -1: all SMs
  // the streams before left. E.g. [0, 32, -1]: stream 1 on 32 SMs, stream 2 on the other 100,
  // each GEMM there tuned for its partition's SM count. Backends without partitions ignore it.
  std::vector<int> stream_sms;

  // One nano-batch everywhere, one stream, no SM targets: overlap off.
  bool is_serial() const;
  // The ops, or the default order when `ops` is empty.
  std::vector<NanoOp> issue_order() const;
  // Throws nf::Error unless every share is positive and finite, at most kMaxNanoBatches per
  // stage, every (stage, nano-batch) appears exactly once in `ops` (when given), only qkv and
  // attention operations are ahead, and group_cuts has `groups` nano-batches in every stage.
  void validate() const;
};

// A file of schedules (`nanoflow tune` writes one; `--pipeline FILE` loads it).
struct PipelineConfig {
  std::vector<PipelineSchedule> schedules;  // empty: serial
  // The schedule for a batch with this share of decode rows.
  const PipelineSchedule& select(double decode_share) const;
};

// The same schedules with every nano-operation on stream 0 and no SM targets: the nano-batch
// split without overlap (NanoFlow's middle ablation, `--pipeline-one-stream`).
PipelineConfig one_stream(PipelineConfig c);

nlohmann::json to_json(const PipelineSchedule& s);
PipelineSchedule schedule_from_json(const nlohmann::json& j);  // validated; throws nf::Error
nlohmann::json to_json(const PipelineConfig& c);
PipelineConfig pipeline_from_json(const nlohmann::json& j);  // validated; throws nf::Error
PipelineConfig load_pipeline_file(const std::string& path);  // throws nf::Error

// The schedule cut for one batch: row ranges of every nano-batch of every stage (request
// ranges too for attention), and the nano-operations in an order that respects the batch's
// actual dependencies: the schedule's issue order, each nano-operation moved after the ones it
// needs where the cut requires it (a stable topological sort). Empty nano-batches (begin ==
// end) keep their place in `nano` but have no nano-operation.
struct PipelinePlan {
  struct Range {
    int begin = 0, end = 0;          // rows [begin, end)
    int req_begin = 0, req_end = 0;  // attention only: requests [req_begin, req_end)
    bool empty() const { return begin == end; }
  };
  struct Op {
    NanoOp op;  // ahead as run for this batch (see NanoOp::ahead)
    // Indices into `ops` of what it needs: the nano-operations of the stage before that share
    // its rows, of its layer (`deps`); for qkv, the ffn ones of the layer before (`prev_deps`).
    std::vector<int> deps, prev_deps;
  };
  std::array<std::vector<Range>, kNumStages> nano;
  std::vector<Op> ops;  // issue order within a period (a layer when nothing is ahead)
  bool any_ahead = false;
  std::vector<int> stream_sms;  // the schedule's (PipelineSchedule::stream_sms)
  bool balance_grid = false;    // the schedule's (PipelineSchedule::balance_grid)
  const Range& range(const NanoOp& op) const {
    return nano[static_cast<int>(op.stage)][static_cast<size_t>(op.nano)];
  }
};

// The request order of `groups` groups (see PipelineSchedule::groups): a permutation of
// [0, b.num_requests()), the identity for one group. group_ends (optional): where each group
// ends in that order (request counts, ascending, the last = num_requests).
// by_kind (2 groups): the prefill requests, then the decode requests (PipelineSchedule::by_kind).
std::vector<int> group_requests(const ScheduledBatch& b, int groups,
                                std::vector<int>* group_ends = nullptr, bool by_kind = false);
// `b` with its requests in `order` (rows, positions, slots, block tables move with them);
// sample_rows keep their order and point at the moved rows, so the logits' rows are unchanged.
ScheduledBatch permute_requests(const ScheduledBatch& b, const std::vector<int>& order);

// Cuts `schedule` for batch `b` (after b.check_shape(), and after permute_requests for a
// schedule with groups). Dense stages cut rows at their shares
// (rounded to multiples of `row_align` rows, the last nano-batch taking the rest); attention cuts
// between requests, nearest to its shares of the KV read; with group_cuts, every stage at
// `group_ends` (from group_requests; required then).
PipelinePlan plan_pipeline(const ScheduledBatch& b, const PipelineSchedule& schedule,
                           int row_align = 16, const std::vector<int>* group_ends = nullptr);

// What a backend runs for one batch: the schedule `config` selects by the batch's decode share,
// the batch itself or, for a schedule with groups, `grouped` (filled here: the requests
// regrouped; the sampled rows keep their order, so the logits' rows do not move), and the plan.
struct BatchPlan {
  const PipelineSchedule* schedule = nullptr;
  const ScheduledBatch* batch = nullptr;
  PipelinePlan plan;
};
BatchPlan plan_batch(const ScheduledBatch& b, const PipelineConfig& config,
                     ScheduledBatch& grouped);

// Runs a plan over `layers` layers in order: calls run(op index, layer) for every
// nano-operation, period by period (one period before the first layer when some are ahead).
template <typename Fn>
void for_each_nano_op(const PipelinePlan& plan, int layers, Fn&& run) {
  for (int period = plan.any_ahead ? -1 : 0; period < layers; ++period)
    for (size_t i = 0; i < plan.ops.size(); ++i) {
      const int layer = period + plan.ops[i].op.ahead;
      if (layer >= 0 && layer < layers) run(i, layer);
    }
}

}  // namespace nf
