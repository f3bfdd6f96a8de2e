// Choosing a nano-batch schedule (issue 6's auto-search): a cost model of the four stages, a
// simulation of a schedule's nano-operations on their streams (with the slowdown of two running
// at once), and an exact search over a small space of candidate schedules.
//
// The cost model's numbers come from profiling on the GPU (`nanoflow tune`, to come); the
// simulation and the search are plain host code, tested here with made-up models.
#pragma once

#include <array>
#include <string>
#include <vector>

#include "runtime/batch.h"
#include "runtime/pipeline.h"

namespace nf {

struct StageCost {
  // Solo time of one nano-operation on the whole GPU: fixed_ms + per_unit_ms * units, where
  // units are rows for qkv, o and ffn and KV tokens read for attention (context tokens, once
  // per 128-row query tile, as plan_pipeline balances them). The fixed part is what makes small
  // nano-batches less efficient (launch, ramp-up and tail of the GEMMs).
  double fixed_ms = 0;
  double per_unit_ms = 0;
  bool memory_bound = false;  // attention: true; the GEMM stages: false
};

struct CostModel {
  std::array<StageCost, kNumStages> stage;
  // Two nano-operations at once: each runs at this fraction of its solo speed, by the kinds of
  // both (a compute-bound one beside a memory-bound one; two of a kind). 0.5 is no gain from
  // overlap (time-slicing); 1.0 is perfect overlap.
  double rate_beside_other_kind = 0.5;
  double rate_beside_same_kind = 0.5;
  // Time of one layer's nano-operation `op` of `plan` on its own.
  double solo_ms(const ScheduledBatch& b, const PipelinePlan& plan, const NanoOp& op) const;
};

// Simulated time of `layers` layers of `plan` for batch `b`: every stream runs its
// nano-operations in the plan's order, each when its stream is free and the nano-operations it
// needs have ended (the previous layer's ffn for qkv); while two run at once each progresses at
// its CostModel rate.
double simulate_ms(const ScheduledBatch& b, const PipelinePlan& plan, const CostModel& cost,
                   int layers);

struct SearchResult {
  PipelineSchedule schedule;
  double layer_ms = 0;         // simulated, per layer in steady state
  double serial_layer_ms = 0;  // the serial schedule's
  int candidates = 0;          // schedules simulated
};

// The best of the candidate schedules for batch `b` (serial included): requests in 1 or 2
// groups; qkv and attention cut in 1 to 4 equal nano-batches, o and ffn in 1 or 2; issued
// stage-major or interleaved (each attention nano-batch right after its qkv one), with attention
// on the GEMMs' stream or a second one; or every nano-batch a whole layer on its own stream.
// Ties go to the earlier (simpler) candidate.
SearchResult search_schedule(const ScheduledBatch& b, const CostModel& cost);

// Cross-layer pipelining over `groups` groups (cuts at the groups): each period issues, group by
// group, this layer's o and ffn and then the next layer's qkv and attention (ahead; attention on
// stream 1 with attention_stream), so that one group's attention runs beside the next group's
// GEMMs.
PipelineSchedule cross_layer_schedule(int groups, bool attention_stream);
// `s` (attention on stream 1, everything else on stream 0) with its attention in a hard
// partition of `attention_sms` SMs (PipelineSchedule::stream_sms) and, with gemm_partition, its
// other operations on stream 2 in the SMs left; named with a suffix.
PipelineSchedule with_attention_partition(PipelineSchedule s, int attention_sms,
                                          bool gemm_partition);
// `s` (attention on stream 1, everything else on stream 0) with a soft partition instead: its
// attention's decode grid bounded to `attention_sms` SMs (NanoOp::sm_target; persistent CTAs on
// an ordinary stream, no green context) and, with gemm_rest, every GEMM targeted at the other
// SMs (sm_target -attention_sms); named with a suffix.
PipelineSchedule with_attention_grid(PipelineSchedule s, int attention_sms, bool gemm_rest);
// Cross-layer pipelining over two groups by kind (PipelineSchedule::by_kind): group 0 the
// prefill requests, group 1 the decode requests, attention on stream 1. So the decode rows'
// attention of the next layer runs beside the prefill rows' o, ffn and qkv GEMMs, and the decode
// rows' GEMMs run alone on the whole GPU. attention_sms > 0 bounds the decode attention to that
// many SMs: a soft partition (its decode grid, NanoOp::sm_target) or, with green, a hard one
// (stream_sms); with prefill_gemm_rest the prefill rows' GEMMs, which run beside it, target the
// other SMs. balance (soft, with prefill_gemm_rest): attention_sms only marks the grid, which
// each batch sizes to its work (PipelineSchedule::balance_grid).
PipelineSchedule by_kind_schedule(int attention_sms, bool prefill_gemm_rest, bool green,
                                  bool balance = false);

// The candidates search_schedule() tries, the serial schedule first (for `nanoflow tune`, which
// times them on the GPU instead of simulating them).
std::vector<PipelineSchedule> candidate_schedules();

}  // namespace nf
