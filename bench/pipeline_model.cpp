// What the nano-batch pipeline could give, by the simulation of runtime/pipeline_search.h: a
// stage cost model fitted to the H200 per-op profile of dummy:llama3-8b at 1024/512 (one full
// 2048-token iteration; bench/results/cuda_flashinfer_llama3-8b_1024_512.json), searched at
// several speeds of two nano-operations running at once. A model, not a measurement: it says how
// little interference the overlap must reach for a given gain, before the GPU says what it is.
//
//   bench_pipeline_model [--optimum-tok-s 47667]
// Prints one JSON line per overlap rate.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "engine/pipeline_tune.h"
#include "runtime/pipeline.h"
#include "runtime/pipeline_search.h"

int main(int argc, char** argv) {
  double optimum = 47667;  // sustained optimum of that run, tokens/s
  for (int i = 1; i + 1 < argc; i += 2)
    if (std::strcmp(argv[i], "--optimum-tok-s") == 0) optimum = std::atof(argv[i + 1]);
  // The profiled iteration: 558 decode rows (contexts 1025..1536) and a 1490-token chunk.
  const nf::ScheduledBatch b = nf::representative_iteration(2048, 558, 2048, 16, 1 << 20, 32000);
  double kv = 0;  // KV tokens read (per 128-row query tile), as CostModel::solo_ms counts them
  for (int r = 0; r < b.num_requests(); ++r)
    kv += static_cast<double>(b.context_lens[r]) * ((b.query_len(r) + 127) / 128);
  // Per layer at 2048 rows (ms, from the profile divided by 32 layers): qkv stage = attn_norm
  // 0.61 + qkv 4.92 + rope/KV write 0.58; attention = decode 22.80 + prefill 2.98; o = 3.35;
  // ffn = ffn_norm 0.61 + gate_up 21.30 + silu 1.45 + down 10.55. A dense nano-operation's fixed
  // part is 9% of its 2048-row time (H200-NOTES: 1024-row GEMMs run at 664 against 724 TFLOP/s).
  auto dense = [](double ms_2048) {
    const double fixed = 0.09 * ms_2048;
    return nf::StageCost{fixed, (ms_2048 - fixed) / 2048, false};
  };
  nf::CostModel c;
  c.stage[0] = dense((0.61 + 4.92 + 0.58) / 32);
  c.stage[1] = {0.005, ((22.80 + 2.98) / 32 - 0.005) / kv, true};
  c.stage[2] = dense(3.35 / 32);
  c.stage[3] = dense((0.61 + 21.30 + 1.45 + 10.55) / 32);
  for (const double other : {0.5, 0.6, 0.7, 0.8, 0.9, 1.0}) {
    c.rate_beside_other_kind = other;
    c.rate_beside_same_kind = 0.5;
    const nf::SearchResult r = nf::search_schedule(b, c);
    // Per iteration: 32 layers, plus the ~1.5 ms outside them (embedding, LM head, sampling,
    // metadata) of the profile.
    const double iter = 32 * r.layer_ms + 1.5, serial = 32 * r.serial_layer_ms + 1.5;
    std::printf(
        "{\"rate_beside_other_kind\": %.1f, \"schedule\": \"%s\", \"iteration_ms\": %.2f, "
        "\"serial_iteration_ms\": %.2f, \"speedup\": %.3f, \"full_step_pct_of_optimum\": %.1f}\n",
        other, r.schedule.name.c_str(), iter, serial, serial / iter,
        100.0 * (2048.0 / (iter * 1e-3)) / optimum);
  }
  return 0;
}
