// Request traces for the benchmarks (offline and `bench serve`), and prompts of exact token
// lengths built from them.
//
// Formats, recognized by content (the header line or a leading '{'), else by extension:
//  - Azure LLM inference trace 2023/2024 CSV: `TIMESTAMP,ContextTokens,GeneratedTokens`, with
//    timestamps like `2023-11-16 18:15:46.6805900` (a `+00:00` suffix is accepted);
//  - ShareGPT length CSV (Sarathi-Serve/Vidur): `num_prefill_tokens,num_decode_tokens,...`,
//    no timestamps;
//  - Mooncake JSONL: `{"timestamp": ms, "input_length", "output_length", "hash_ids": [...]}`,
//    where each hash id names one 512-token prefix block.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace nf {

struct TraceRequest {
  int input_len = 0;              // prompt tokens
  int output_len = 0;             // generated tokens
  double arrival_s = 0;           // seconds after the first request; 0 where the format has none
  std::vector<int64_t> hash_ids;  // Mooncake prefix blocks (kMooncakeBlockTokens each); or empty
};

// Tokens per Mooncake hash block.
inline constexpr int kMooncakeBlockTokens = 512;

// Reads at most `limit` requests (all when limit <= 0) in file order. A bad file throws nf::Error
// naming the file and line.
std::vector<TraceRequest> load_trace(const std::string& path, int limit);

// The token ids prompts are drawn from: [lo, vocab_size - 1]. Low ids are skipped because that is
// where tokenizers keep control and byte-fallback tokens; a tiny vocabulary uses the upper half.
struct PromptVocab {
  int32_t lo = 0;
  int32_t hi = 0;
};
PromptVocab prompt_vocab(int vocab_size);

// `len` uniform random ids.
std::vector<int32_t> random_prompt(int len, const PromptVocab& vocab, std::mt19937_64& rng);

// A prompt of exactly r.input_len ids whose i-th block of kMooncakeBlockTokens ids depends only on
// (seed, r.hash_ids[i]): requests sharing hash ids share those prefix blocks token for token, so a
// server's prefix cache sees the trace's real reuse. Tokens past the hashed blocks are random
// from `rng`. A request without hash ids is all random.
std::vector<int32_t> trace_prompt(const TraceRequest& r, const PromptVocab& vocab, uint64_t seed,
                                  std::mt19937_64& rng);

}  // namespace nf
