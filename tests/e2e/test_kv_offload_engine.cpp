// KV offload on the CPU engine (issue 7): multi-turn conversations, each turn's prompt being the
// previous turns plus new text, through a device pool too small to keep them, so the prefix
// comes back from the host or disk tier. The outputs with offload on agree with offload off by
// the top-5 rule, the tiers serve hits, and a restart over the same directory reuses its blocks.
#include <gtest/gtest.h>
#include <nanoflow/engine.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "../golden_fixture.h"

namespace {

namespace fs = std::filesystem;
using nanoflow::Engine;
using nanoflow::EngineConfig;
using nanoflow::RequestOutput;

const std::string kModel = std::string(NANOFLOW_SOURCE_DIR) + "/tests/fixtures/models/llama3-tiny";
constexpr int kConversations = 6, kTurns = 3;

EngineConfig base() {
  EngineConfig c;
  c.model = kModel;
  c.num_kv_blocks = 32;  // 512 tokens: not all six conversations
  c.block_size = 16;
  c.max_batch_tokens = 128;
  return c;
}

struct TempDir {
  TempDir()
      : path(fs::temp_directory_path() /
             ("nf_kv_engine_" + std::to_string(getpid()) + "_" + std::to_string(counter++))) {
    fs::remove_all(path);
  }
  ~TempDir() { fs::remove_all(path); }
  fs::path path;
  static inline int counter = 0;
};

// Turns [first, last) of the conversations: 20-70 new tokens a turn.
std::vector<RequestOutput> run_turns(Engine& e, std::vector<std::vector<int32_t>>& history,
                                     int first, int last) {
  return nf::testing::conversation_turns(e, history, first, last, 20, 70, 503);
}

std::vector<RequestOutput> run_all(const EngineConfig& c, nanoflow::EngineStats* stats = nullptr) {
  auto e = Engine::create(c);
  std::vector<std::vector<int32_t>> history(kConversations);
  auto outs = run_turns(*e, history, 0, kTurns);
  if (stats) *stats = e->stats();
  e->check_integrity();
  return outs;
}

const std::vector<RequestOutput>& reference() {
  static const auto ref = run_all(base());
  return ref;
}

void report(const std::string& what, const nanoflow::EngineStats& st) {
  std::printf(
      "REPORT %s: prompt tokens %lld, cached %lld (host tier %lld, disk tier %lld), "
      "blocks saved %lld, held: host %lld, disk %lld\n",
      what.c_str(), static_cast<long long>(st.prompt_tokens),
      static_cast<long long>(st.cached_prompt_tokens),
      static_cast<long long>(st.kv_host_hit_tokens), static_cast<long long>(st.kv_disk_hit_tokens),
      static_cast<long long>(st.kv_saved_blocks), static_cast<long long>(st.kv_host_blocks),
      static_cast<long long>(st.kv_disk_blocks));
}

void expect_agree(const std::vector<RequestOutput>& got, const std::string& what) {
  const nf::testing::RunDiff d = nf::testing::compare_runs(reference(), got);
  std::printf(
      "REPORT %s vs offload off: %zu/%zu steps with the same token, max |top-1 logprob "
      "diff| %.3e\n",
      what.c_str(), d.same, d.steps, d.max_diff);
  for (const std::string& f : d.failures) ADD_FAILURE() << what << ": " << f;
  EXPECT_EQ(d.steps, static_cast<size_t>(kConversations * kTurns * 8)) << what;
}

TEST(KvOffloadEngine, HostTierServesLaterTurnsAndAgreesWithOffloadOff) {
  EngineConfig c = base();
  c.kv_host_gb = 0.1;
  nanoflow::EngineStats st;
  expect_agree(run_all(c, &st), "host tier");
  report("host tier", st);
  EXPECT_GT(st.kv_saved_blocks, 0);
  EXPECT_GT(st.kv_host_hit_tokens, 0);
  EXPECT_EQ(st.kv_disk_hit_tokens, 0);
  EXPECT_GT(st.kv_host_blocks, 0);
  nanoflow::EngineStats off;
  run_all(base(), &off);
  report("offload off", off);
  // The tier serves prompt tokens the device cache alone had to recompute.
  EXPECT_GT(st.cached_prompt_tokens, off.cached_prompt_tokens);
}

TEST(KvOffloadEngine, DiskTierAloneAndBelowASmallHostTier) {
  for (const double host_gb : {0.0, 4.0 * 16 * 1024 / 1e9}) {  // none, or a few blocks
    TempDir dir;
    EngineConfig c = base();
    c.kv_host_gb = host_gb;
    c.kv_disk_dir = dir.path.string();
    c.kv_disk_gb = 0.1;
    nanoflow::EngineStats st;
    const std::string what = host_gb > 0 ? "small host tier and disk" : "disk tier";
    expect_agree(run_all(c, &st), what);
    report(what, st);
    EXPECT_GT(st.kv_disk_hit_tokens, 0) << what;
    EXPECT_GT(st.kv_disk_blocks, 0) << what;
    EXPECT_TRUE(st.kv_disk_enabled) << what;
    if (host_gb == 0) EXPECT_EQ(st.kv_host_hit_tokens, 0);
  }
}

// The first engine runs the first turn and goes away; a second one over the same directory
// finds its blocks for the second turn (the device cache and host tier start empty). The block
// layout is the same for every tensor-parallel split, so the second engine may run at TP=2.
TEST(KvOffloadEngine, RestartReusesTheDiskBlocks) {
  for (const int second_tp : {1, 2}) {
    TempDir dir;
    EngineConfig c = base();
    c.kv_disk_dir = dir.path.string();
    c.kv_disk_gb = 0.1;
    std::vector<std::vector<int32_t>> history(kConversations);
    std::vector<RequestOutput> outs;
    {
      auto e = Engine::create(c);
      outs = run_turns(*e, history, 0, 1);
    }
    c.tensor_parallel_size = second_tp;
    auto e = Engine::create(c);
    const auto later = run_turns(*e, history, 1, kTurns);
    outs.insert(outs.end(), later.begin(), later.end());
    const std::string what = "restart at TP=" + std::to_string(second_tp);
    expect_agree(outs, what);
    EXPECT_GT(e->stats().kv_disk_hit_tokens, 0) << what;
  }
}

TEST(KvOffloadEngine, ClearErrors) {
  EngineConfig c = base();
  c.kv_host_gb = 1;
  c.enable_prefix_caching = false;
  EXPECT_THROW(Engine::create(c), std::exception);
  // An unusable directory: the engine runs without the disk tier.
  TempDir dir;
  fs::create_directories(dir.path);
  std::ofstream(dir.path / "file") << "x";
  c = base();
  c.kv_disk_dir = (dir.path / "file").string();
  c.kv_disk_gb = 0.1;
  nanoflow::EngineStats st;
  expect_agree(run_all(c, &st), "unusable directory");
  EXPECT_FALSE(st.kv_disk_enabled);
  EXPECT_EQ(st.kv_disk_hit_tokens, 0);
}

}  // namespace
