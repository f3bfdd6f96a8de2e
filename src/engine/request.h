// A request's state inside the engine.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include <nanoflow/request_output.h>

#include <memory>

#include "engine/text_stream.h"
#include <nanoflow/sampling_params.h>

namespace nf {

enum class RequestState { Waiting, Running, Finished };

struct Request {
  nanoflow::RequestId id = 0;
  nanoflow::SamplingParams params;
  std::vector<int32_t> tokens;      // prompt, then generated tokens (kTokenFromDevice until resolved)
  int prompt_len = 0;
  int num_computed = 0;             // tokens whose KV is in the cache, or scheduled to be
  int num_resolved = 0;             // generated tokens whose id the host has seen
  bool stop_pending = false;        // will stop after its last sampled token: schedule no more
  bool sent_to_executor = false;
  bool awaiting_kv = false;         // admitted with blocks still loading from an offload tier
  // Set while its prefix moves from the disk tier up to host memory (KvOffload::prefetch).
  std::shared_ptr<const std::atomic<bool>> kv_prefetch;
  std::vector<int32_t> block_table; // KV block ids in position order
  std::vector<uint64_t> block_hashes;  // prefix hashes of the full blocks registered so far
  RequestState state = RequestState::Waiting;
  uint64_t seed = 0;                // params.seed, or drawn at random when it is not set
  nanoflow::RequestOutput output;
  std::unique_ptr<TextStream> text;  // when the engine has a tokenizer
  // n > 1: set once the first completion's prompt is scheduled; the others wait for it so
  // that they find its blocks in the prefix cache. Null for single requests.
  std::shared_ptr<bool> prompt_ready;
  bool leads_siblings = false;

  int num_generated() const { return static_cast<int>(tokens.size()) - prompt_len; }
};

}  // namespace nf
