// The CPU engine on a real (tiny) model: a batch of mixed requests gives exactly what the same
// requests give one by one, whatever the engine options (prefix caching, one-step-ahead
// scheduling, a KV pool so small that requests get preempted).
#include <gtest/gtest.h>
#include <nanoflow/engine.h>

#include <filesystem>
#include <random>

namespace {

using nanoflow::Engine;
using nanoflow::EngineConfig;
using nanoflow::GenerateRequest;
using nanoflow::RequestOutput;

const std::string kModel = std::string(NANOFLOW_SOURCE_DIR) + "/tests/fixtures/models/llama3-tiny";

// Requests of mixed lengths, with shared prefixes, greedy and seeded sampling, and n-style
// duplicates of one prompt.
std::vector<GenerateRequest> mixed_requests() {
  std::mt19937 rng(1234);
  std::vector<int32_t> shared(40);
  for (auto& t : shared) t = 3 + static_cast<int32_t>(rng() % 500);
  std::vector<GenerateRequest> reqs;
  for (int i = 0; i < 12; ++i) {
    GenerateRequest r;
    const int len = 1 + static_cast<int>(rng() % 90);
    if (i % 3 == 0) r.prompt = shared;  // common prefix
    for (int k = 0; k < len; ++k) r.prompt.push_back(3 + static_cast<int32_t>(rng() % 500));
    r.params.max_tokens = 4 + static_cast<int>(rng() % 20);
    r.params.ignore_eos = true;
    if (i % 2 == 0) {
      r.params.temperature = 0;
    } else {
      r.params.temperature = 0.8f;
      r.params.top_p = 0.9f;
      r.params.top_k = 50;
      r.params.seed = 100 + i;
    }
    reqs.push_back(r);
  }
  reqs.push_back(reqs[1]);  // an identical seeded request gives identical tokens
  return reqs;
}

EngineConfig base() {
  EngineConfig c;
  c.model = kModel;
  c.num_kv_blocks = 256;
  c.block_size = 16;
  c.max_batch_tokens = 128;
  return c;
}

std::vector<std::vector<int32_t>> tokens_of(const std::vector<RequestOutput>& outs) {
  std::vector<std::vector<int32_t>> t;
  for (const auto& o : outs) t.push_back(o.token_ids);
  return t;
}

const std::vector<std::vector<int32_t>>& reference() {
  // One request at a time, synchronous scheduling, no prefix cache.
  static const auto ref = [] {
    EngineConfig c = base();
    c.enable_prefix_caching = false;
    c.async_schedule = false;
    auto e = Engine::create(c);
    std::vector<std::vector<int32_t>> out;
    for (const auto& r : mixed_requests()) out.push_back(e->generate({r})[0].token_ids);
    return out;
  }();
  return ref;
}

struct Variant {
  const char* name;
  bool prefix_caching, async;
  int64_t blocks;
  const char* admission = "peak";
};

class EngineCpu : public ::testing::TestWithParam<Variant> {};

TEST_P(EngineCpu, BatchEqualsOneByOne) {
  const Variant v = GetParam();
  EngineConfig c = base();
  c.enable_prefix_caching = v.prefix_caching;
  c.async_schedule = v.async;
  c.num_kv_blocks = v.blocks;
  c.kv_admission = v.admission;
  auto e = Engine::create(c);
  const auto reqs = mixed_requests();
  const auto outs = e->generate(reqs);
  const auto got = tokens_of(outs);
  ASSERT_EQ(got.size(), reference().size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i], reference()[i]) << v.name << " request " << i;
    EXPECT_EQ(outs[i].completion_tokens, reqs[i].params.max_tokens);
  }
  EXPECT_EQ(got[1], got.back());
  const auto st = e->stats();
  // A small pool forces preemption under greedy admission; peak admission waits instead.
  if (v.blocks < 64 && std::string(v.admission) == "greedy")
    EXPECT_GT(st.preemptions, 0) << "the small pool should force preemption";
  if (std::string(v.admission) == "peak") EXPECT_EQ(st.preemptions, 0);
  if (v.prefix_caching) EXPECT_GT(st.cached_prompt_tokens, 0);
  EXPECT_EQ(st.kv_blocks_used, 0);
  e->check_integrity();
}

INSTANTIATE_TEST_SUITE_P(
    Options, EngineCpu,
    ::testing::Values(Variant{"plain", false, false, 256}, Variant{"prefix", true, false, 256},
                      Variant{"async", false, true, 256}, Variant{"prefix_async", true, true, 256},
                      Variant{"preempt", false, true, 14, "greedy"},
                      Variant{"preempt_prefix", true, true, 14, "greedy"},
                      Variant{"small_pool_peak", false, true, 14, "peak"},
                      Variant{"small_pool_peak_prefix", true, true, 14, "peak"}),
    [](const auto& info) { return std::string(info.param.name); });

// The background loop: requests from another thread, outputs through the stream.
TEST(EngineCpuThreaded, BackgroundLoopServesRequests) {
  auto e = Engine::create(base());
  e->start();
  const auto reqs = mixed_requests();
  const auto outs = e->generate(reqs);
  e->stop();
  EXPECT_EQ(tokens_of(outs), reference());
}

}  // namespace

namespace {

std::vector<int32_t> some_prompt() {
  std::vector<int32_t> p;
  for (int i = 0; i < 37; ++i) p.push_back(5 + (i * 37) % 400);
  return p;
}

TEST(EngineCpuText, StopStringsEndTheTextAndAreNeverStreamed) {
  auto e = Engine::create(base());
  ASSERT_NE(e->tokenizer(), nullptr);
  GenerateRequest r;
  r.prompt = some_prompt();
  r.params.temperature = 0;
  r.params.max_tokens = 24;
  r.params.ignore_eos = true;
  const std::string full = e->generate({r})[0].text;
  ASSERT_GT(full.size(), 12u) << full;
  const std::string stop = full.substr(full.size() / 2, 3);
  const size_t cut = full.find(stop);
  r.params.stop = {"no such stop string in this text at all", stop};
  const auto id = e->add_request(r.prompt, r.params);
  std::string streamed;
  nanoflow::RequestOutput all;
  while (!all.finished()) {
    e->step();
    std::vector<RequestOutput> d;
    e->poll_outputs(d, std::chrono::milliseconds(0));
    for (const auto& o : d) {
      ASSERT_EQ(o.id, id);
      streamed += o.text;
      EXPECT_EQ(streamed.find(stop), std::string::npos) << "stop string streamed";
      all.append(o);
    }
  }
  EXPECT_EQ(all.finish_reason, nanoflow::FinishReason::Stop);
  EXPECT_EQ(all.text, full.substr(0, cut));
  EXPECT_EQ(streamed, all.text);
}

TEST(EngineCpuText, NCompletionsShareThePromptBlocks) {
  auto e = Engine::create(base());
  GenerateRequest r;
  r.prompt = some_prompt();  // 37 tokens: two full blocks of 16
  r.params.n = 3;
  r.params.temperature = 1.0f;
  r.params.seed = 7;
  r.params.max_tokens = 8;
  r.params.ignore_eos = true;
  const auto outs = e->generate({r});
  ASSERT_EQ(outs.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(outs[i].index, i);
    EXPECT_EQ(outs[i].token_ids.size(), 8u);
  }
  EXPECT_EQ(outs[0].cached_prompt_tokens, 0);
  EXPECT_EQ(outs[1].cached_prompt_tokens, 32);
  EXPECT_EQ(outs[2].cached_prompt_tokens, 32);
  EXPECT_NE(outs[0].token_ids, outs[1].token_ids);  // seeds seed, seed+1, seed+2
  // Greedy completions of one prompt are all the same.
  r.params.temperature = 0;
  const auto g = e->generate({r});
  EXPECT_EQ(g[0].token_ids, g[1].token_ids);
  EXPECT_EQ(g[1].token_ids, g[2].token_ids);
}

}  // namespace
