// The engine loop over a fake backend: scripted timelines checked step by step, and randomized
// property tests (every request finishes or is aborted exactly once; no KV block leaks).
#include <gtest/gtest.h>
#include <nanoflow/engine.h>

#include <atomic>
#include <map>
#include <mutex>
#include <thread>
#include <random>
#include <set>

#include "common/status.h"
#include "engine/kv_cache_manager.h"
#include "engine/request.h"
#include "engine/scheduler.h"
#include "model/model_config.h"
#include "runtime/backend.h"

namespace nf {
namespace {

using nanoflow::Engine;
using nanoflow::EngineConfig;
using nanoflow::FinishReason;
using nanoflow::RequestOutput;
using nanoflow::SamplingParams;

constexpr int kVocab = 64;
constexpr int32_t kEos = 0;

// Greedy sampling on its logits yields next = (token + 1) % kVocab, skipping EOS unless the
// token is `eos_after`. Records every batch it runs.
class FakeBackend final : public Backend {
 public:
  explicit FakeBackend(int64_t blocks, int block_size = 4) : blocks_(blocks), block_size_(block_size) {
    config_.vocab_size = kVocab;
    config_.max_position_embeddings = 512;
  }
  const ModelConfig& config() const override { return config_; }
  int block_size() const override { return block_size_; }
  int64_t num_kv_blocks() const override { return blocks_; }
  void forward(const ScheduledBatch& b, std::span<float> logits) override {
    {
      std::lock_guard<std::mutex> lock(mu);  // loads come from the executor's copier thread
      batches.push_back(b);
      if (static_cast<int>(batches.size()) == fail_batch) throw Error("fake: device failed");
    }
    for (size_t s = 0; s < b.sample_rows.size(); ++s) {
      const int32_t tok = b.token_ids[b.sample_rows[s]];
      NF_CHECK(tok >= 0, "unresolved token reached the backend");
      int32_t next = (tok + 1) % kVocab;
      if (next == kEos && tok != eos_after) next = 1;
      if (tok == eos_after) next = kEos;
      for (int v = 0; v < kVocab; ++v) logits[s * kVocab + v] = v == next ? 10.0f : 0.0f;
    }
  }
  std::vector<ScheduledBatch> batches;
  int32_t eos_after = -1;
  int fail_batch = -1;  // the forward of this batch (1-based) throws
  // KV offload (kv_bytes > 0): a block's bytes are its id; a load records how many batches had
  // run when it finished.
  size_t kv_block_bytes() const override { return kv_bytes; }
  std::string kv_layout() const override { return "fake"; }
  void read_kv_block(int32_t b, std::span<std::byte> out) override {
    if (fail_copies) throw Error("fake: device copy failed");
    std::fill(out.begin(), out.end(), static_cast<std::byte>(b));
  }
  std::atomic<bool> fail_copies{false};
  void write_kv_block(int32_t b, std::span<const std::byte>) override {
    // A slow copy: a request that ran before its loads finished would show in the count.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::lock_guard<std::mutex> lock(mu);
    loads.emplace_back(b, batches.size());
  }
  std::mutex mu;
  size_t kv_bytes = 0;
  std::vector<std::pair<int32_t, size_t>> loads;  // (block, batches run before it)

 private:
  ModelConfig config_;
  int64_t blocks_;
  int block_size_;
};

struct Harness {
  FakeBackend* backend;
  std::unique_ptr<Engine> engine;
  std::map<nanoflow::RequestId, RequestOutput> outs;
  std::map<nanoflow::RequestId, int> finishes;

  Harness(int budget, int64_t blocks, bool async, int max_running = 64,
          const char* admission = "peak", double kv_host_gb = 0) {
    EngineConfig c;
    c.max_batch_tokens = budget;
    c.max_running_requests = max_running;
    c.async_schedule = async;
    c.kv_admission = admission;
    c.kv_host_gb = kv_host_gb;
    auto b = std::make_unique<FakeBackend>(blocks);
    if (kv_host_gb > 0) b->kv_bytes = 8;
    backend = b.get();
    engine = std::make_unique<Engine>(c, std::move(b), std::vector<int32_t>{kEos});
  }
  void drain() {
    std::vector<RequestOutput> d;
    engine->poll_outputs(d, std::chrono::milliseconds(0));
    for (auto& o : d) {
      outs[o.id].id = o.id;
      outs[o.id].append(o);
      if (o.finished()) ++finishes[o.id];
    }
  }
  bool step() {
    const bool more = engine->step();
    engine->check_integrity();
    drain();
    return more;
  }
  void run() {
    while (step()) {
    }
  }
};

SamplingParams greedy(int max_tokens) {
  SamplingParams p;
  p.temperature = 0;
  p.max_tokens = max_tokens;
  return p;
}

std::vector<int32_t> prompt_of(int n, int32_t start = 1) {
  std::vector<int32_t> p(n);
  for (int i = 0; i < n; ++i) p[i] = 1 + (start + i) % (kVocab - 1);
  return p;
}

class EngineTimeline : public ::testing::TestWithParam<bool> {};

TEST_P(EngineTimeline, ChunkedPrefillThenDecode) {
  Harness h(8, 64, GetParam());
  const auto id = h.engine->add_request(prompt_of(20), greedy(3));
  h.run();
  const auto& bs = h.backend->batches;
  // 20 prompt tokens under a budget of 8: 8, 8, 4 (sampled), then one decode per new token.
  ASSERT_EQ(bs.size(), 5u);
  EXPECT_EQ(bs[0].num_tokens(), 8);
  EXPECT_TRUE(bs[0].sample_rows.empty());
  EXPECT_EQ(bs[1].positions.front(), 8);
  EXPECT_EQ(bs[2].num_tokens(), 4);
  EXPECT_EQ(bs[2].sample_rows.size(), 1u);
  EXPECT_EQ(bs[3].num_tokens(), 1);
  EXPECT_EQ(bs[3].positions[0], 20);
  EXPECT_EQ(bs[4].positions[0], 21);
  const auto& o = h.outs.at(id);
  const int32_t last = prompt_of(20).back();
  EXPECT_EQ(o.token_ids, (std::vector<int32_t>{last + 1, last + 2, last + 3}));
  EXPECT_EQ(o.finish_reason, FinishReason::Length);
  EXPECT_EQ(h.finishes.at(id), 1);
}

TEST_P(EngineTimeline, DecodesGoFirstAndOnePartialPromptPerStep) {
  Harness h(6, 64, GetParam());
  const auto a = h.engine->add_request(prompt_of(4), greedy(4));
  h.step();  // a: 4 prompt tokens
  const auto b = h.engine->add_request(prompt_of(9, 10), greedy(2));
  const auto c = h.engine->add_request(prompt_of(3, 20), greedy(2));
  h.run();
  const auto& bs = h.backend->batches;
  // Step 2: a decodes (1 token) first, then b gets the remaining 5 of the budget (partial).
  ASSERT_GE(bs.size(), 3u);
  EXPECT_EQ(bs[1].request_ids, (std::vector<nanoflow::RequestId>{a, b}));
  EXPECT_EQ(bs[1].seq_indptr, (std::vector<int32_t>{0, 1, 6}));
  // Step 3: a decodes, b finishes its prompt (4), c gets the last token of budget. Single-token
  // rows go first in the batch (a, then c's one-token chunk), then b's chunk.
  EXPECT_EQ(bs[2].request_ids, (std::vector<nanoflow::RequestId>{a, c, b}));
  EXPECT_EQ(bs[2].seq_indptr, (std::vector<int32_t>{0, 1, 2, 6}));
  for (auto id : {a, b, c}) EXPECT_EQ(h.finishes.at(id), 1);
  EXPECT_EQ(h.outs.at(b).token_ids.size(), 2u);
}

TEST_P(EngineTimeline, EosStopsAndTheLateTokenIsNeverEmitted) {
  Harness h(16, 64, GetParam());
  SamplingParams p = greedy(10);
  const auto prompt = prompt_of(4);
  h.backend->eos_after = prompt.back() + 2;  // third generated token is EOS
  const auto id = h.engine->add_request(prompt, p);
  h.run();
  const auto& o = h.outs.at(id);
  EXPECT_EQ(o.token_ids, (std::vector<int32_t>{prompt.back() + 1, prompt.back() + 2, kEos}));
  EXPECT_EQ(o.finish_reason, FinishReason::Stop);
  EXPECT_EQ(h.finishes.at(id), 1);
  // One step for the prompt, one per further token; one step ahead, the step planned while
  // EOS was being sampled also ran, and its token was dropped.
  EXPECT_EQ(h.backend->batches.size(), GetParam() ? 4u : 3u);
  // min_tokens masks EOS; ignore_eos runs to max_tokens.
  Harness h2(16, 64, GetParam());
  h2.backend->eos_after = prompt.back() + 2;
  p.ignore_eos = true;
  p.max_tokens = 5;
  const auto id2 = h2.engine->add_request(prompt, p);
  h2.run();
  EXPECT_EQ(h2.outs.at(id2).token_ids.size(), 5u);
  EXPECT_EQ(h2.outs.at(id2).finish_reason, FinishReason::Length);
}

TEST_P(EngineTimeline, PreemptsTheNewestWhenBlocksRunOut) {
  // 6 blocks of 4 tokens. Two requests of 8 prompt tokens each take 4 blocks; decoding grows
  // them until the newest must give its blocks back and be recomputed later (greedy admission:
  // b is admitted while its prompt's blocks are free).
  Harness h(64, 6, GetParam(), 64, "greedy");
  const auto a = h.engine->add_request(prompt_of(8), greedy(8));
  const auto b = h.engine->add_request(prompt_of(8, 30), greedy(8));
  h.run();
  EXPECT_GT(h.engine->stats().preemptions, 0);
  for (auto id : {a, b}) {
    EXPECT_EQ(h.finishes.at(id), 1);
    EXPECT_EQ(h.outs.at(id).token_ids.size(), 8u);
  }
  // The recomputed request produced the same tokens as without preemption.
  const int32_t lb = prompt_of(8, 30).back();
  for (int i = 0; i < 8; ++i) EXPECT_EQ(h.outs.at(b).token_ids[i], (lb + 1 + i) % kVocab == 0 ? 1 : (lb + 1 + i) % kVocab);
}

TEST_P(EngineTimeline, PeakAdmissionWaitsInsteadOfPreempting) {
  // The same two requests under peak admission: a alone will grow to 16 tokens (4 blocks,
  // plus a block of rounding), so b (another 5) does not fit beside it and waits for a to end.
  Harness h(64, 6, GetParam());
  const auto a = h.engine->add_request(prompt_of(8), greedy(8));
  const auto b = h.engine->add_request(prompt_of(8, 30), greedy(8));
  h.run();
  EXPECT_EQ(h.engine->stats().preemptions, 0);
  for (auto id : {a, b}) {
    EXPECT_EQ(h.finishes.at(id), 1);
    EXPECT_EQ(h.outs.at(id).token_ids.size(), 8u);
  }
  // b ran only after a finished: no batch holds both.
  for (const ScheduledBatch& batch : h.backend->batches) EXPECT_LE(batch.num_requests(), 1);
  const int32_t lb = prompt_of(8, 30).back();
  for (int i = 0; i < 8; ++i) EXPECT_EQ(h.outs.at(b).token_ids[i], (lb + 1 + i) % kVocab == 0 ? 1 : (lb + 1 + i) % kVocab);
}

TEST_P(EngineTimeline, PeakAdmissionLearnsTheOutputLengthFromCompletedRequests) {
  // Every request: a 4-token prompt, max_tokens 100, but EOS after 3 tokens. 40 blocks of 4
  // tokens = 160. Expecting 100 tokens each (104 + a block of rounding), two never fit: the
  // first 16 run one at a time. Once 16 have completed, a request expects 1.5 x 3 = 5 tokens
  // (13 with rounding) and many run together.
  Harness h(64, 40, GetParam());
  h.backend->eos_after = prompt_of(4, 10).back() + 2;
  auto submit = [&](int n) {
    for (int i = 0; i < n; ++i) h.engine->add_request(prompt_of(4, 10), greedy(100));
  };
  auto widest = [&](size_t from) {
    int w = 0;
    for (size_t i = from; i < h.backend->batches.size(); ++i)
      w = std::max(w, h.backend->batches[i].num_requests());
    return w;
  };
  submit(16);
  h.run();
  EXPECT_LE(widest(0), 2) << "cold start: max_tokens is the expectation";
  const size_t phase2 = h.backend->batches.size();
  submit(16);
  h.run();
  EXPECT_GE(widest(phase2), 6) << "after 16 completions the expectation is 1.5x their mean";
  EXPECT_EQ(h.engine->stats().preemptions, 0);
  for (const auto& [id, o] : h.outs) EXPECT_EQ(o.token_ids.size(), 3u) << "request " << id;
}

TEST(EngineConfigCheck, RejectsAnUnknownAdmissionPolicy) {
  EngineConfig c;
  c.kv_admission = "eager";
  EXPECT_THROW(Engine(c, std::make_unique<FakeBackend>(8), {kEos}), Error);
}

TEST_P(EngineTimeline, AbortFreesBlocksWithinAStep) {
  Harness h(64, 32, GetParam());
  const auto a = h.engine->add_request(prompt_of(8), greedy(100));
  h.step();
  h.step();
  h.engine->abort(a);
  h.step();
  h.step();
  EXPECT_EQ(h.outs.at(a).finish_reason, FinishReason::Abort);
  EXPECT_EQ(h.finishes.at(a), 1);
  EXPECT_EQ(h.engine->stats().kv_blocks_used, 0);
  EXPECT_FALSE(h.engine->has_unfinished());
}

TEST_P(EngineTimeline, PrefixCacheHitSkipsComputedBlocks) {
  Harness h(64, 32, GetParam());
  const auto p = prompt_of(10);
  h.engine->add_request(p, greedy(1));
  h.run();
  const size_t before = h.backend->batches.size();
  const auto id = h.engine->add_request(p, greedy(1));
  h.run();
  // Two full blocks (8 tokens) come from the cache: only 2 tokens are computed.
  EXPECT_EQ(h.backend->batches[before].num_tokens(), 2);
  EXPECT_EQ(h.backend->batches[before].positions[0], 8);
  EXPECT_EQ(h.outs.at(id).cached_prompt_tokens, 8);
}

// A prefix found in the host tier is loaded beside the forwards (other requests keep running),
// and the request computes only the rest, once its blocks are resident.
TEST_P(EngineTimeline, OffloadHitRunsOnceItsLoadsFinishedAndComputesTheRest) {
  Harness h(64, 8, GetParam(), 64, "peak", /*kv_host_gb=*/1e-6);  // 125 blocks of 8 bytes
  const auto p = prompt_of(10);
  h.engine->add_request(p, greedy(1));
  h.run();
  EXPECT_EQ(h.engine->stats().kv_saved_blocks, 2);  // its full blocks
  h.engine->add_request(prompt_of(28, 30), greedy(1));  // takes every block of the pool
  h.run();
  ASSERT_TRUE(h.backend->loads.empty());
  h.engine->add_request(prompt_of(3, 40), greedy(6));
  h.step();
  h.step();
  const auto id = h.engine->add_request(p, greedy(1));
  h.run();
  const auto& bs = h.backend->batches;
  auto has = [](const ScheduledBatch& b, nanoflow::RequestId r) {
    return std::find(b.request_ids.begin(), b.request_ids.end(), r) != b.request_ids.end();
  };
  size_t j = 0;  // the first batch with the request
  while (j < bs.size() && !has(bs[j], id)) ++j;
  ASSERT_LT(j, bs.size());
  ASSERT_EQ(h.backend->loads.size(), 2u);
  for (const auto& [block, batches_before] : h.backend->loads) EXPECT_LE(batches_before, j);
  EXPECT_EQ(bs[j].positions.back(), 9);  // only the 2 tokens after the hit
  EXPECT_EQ(bs[j].positions[bs[j].num_tokens() - 2], 8);
  EXPECT_EQ(h.outs.at(id).cached_prompt_tokens, 8);
  EXPECT_EQ(h.engine->stats().kv_host_hit_tokens, 8);
  EXPECT_EQ(h.outs.at(id).token_ids, (std::vector<int32_t>{p.back() + 1}));
}

// A request whose prefix is still coming up from the disk tier waits while others run, but is
// admitted at once when the step would otherwise be empty (the GPU never idles for the disk).
TEST(SchedulerPrefetch, WaitsForItsPrefetchOnlyWhileOthersRun) {
  KvCacheManager kv(64, 4);
  Scheduler s({64, 8, 512, false}, kv);
  auto make = [](nanoflow::RequestId id, int n, int32_t start) {
    Request r;
    r.id = id;
    r.tokens = prompt_of(n, start);
    r.prompt_len = n;
    r.params = greedy(4);
    return r;
  };
  Request a = make(1, 5, 1), b = make(2, 6, 20), c = make(3, 7, 40);
  auto fetching_b = std::make_shared<std::atomic<bool>>(false);
  auto fetching_c = std::make_shared<std::atomic<bool>>(false);
  b.kv_prefetch = fetching_b;
  c.kv_prefetch = fetching_c;
  ScheduledBatch batch;
  auto ids = [&](const std::vector<ScheduledRequest>& out) {
    std::vector<nanoflow::RequestId> v;
    for (const ScheduledRequest& x : out) v.push_back(x.request->id);
    return v;
  };
  // Only fetching requests and nothing else to run: the first is admitted anyway.
  s.add(&b);
  EXPECT_EQ(ids(s.schedule(batch)), (std::vector<nanoflow::RequestId>{2}));
  b.tokens.push_back(1);  // its sampled token
  // Now b runs: a is admitted, c waits for its prefetch.
  s.add(&a);
  s.add(&c);
  EXPECT_EQ(ids(s.schedule(batch)), (std::vector<nanoflow::RequestId>{2, 1}));
  EXPECT_EQ(c.state, RequestState::Waiting);
  b.tokens.push_back(1);
  a.tokens.push_back(1);
  fetching_c->store(true);
  EXPECT_EQ(ids(s.schedule(batch)), (std::vector<nanoflow::RequestId>{2, 1, 3}));
}

// A copy that fails on the copier thread (the device in error) is raised on the engine's
// thread, not lost.
// A failed device copy is raised on the engine's thread, once: the requests in the engine
// then fail with its message (FinishReason::Error), the copy's blocks are returned, and the
// engine goes on serving.
TEST_P(EngineTimeline, AFailedOffloadCopyDoesNotStopTheEngine) {
  Harness h(64, 8, GetParam(), 64, "peak", /*kv_host_gb=*/1e-6);
  h.backend->fail_copies = true;
  const auto a = h.engine->add_request(prompt_of(10), greedy(1));
  for (int i = 0; i < 50; ++i) {
    EXPECT_NO_THROW(h.engine->step());
    h.drain();
  }
  EXPECT_EQ(h.finishes[a], 1);
  h.backend->fail_copies = false;
  const auto b = h.engine->add_request(prompt_of(12, 3), greedy(3));
  for (int i = 0; i < 50; ++i) {
    EXPECT_NO_THROW(h.engine->step());
    h.drain();
  }
  ASSERT_EQ(h.finishes[b], 1);
  EXPECT_EQ(h.outs[b].finish_reason, FinishReason::Length);
  EXPECT_EQ(h.outs[b].token_ids.size(), 3u);
  h.engine->check_integrity();
}

INSTANTIATE_TEST_SUITE_P(AsyncAndSync, EngineTimeline, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "async" : "sync"; });

// Thousands of random arrivals, aborts and lengths over a small KV pool.
TEST(EngineProperty, EveryRequestEndsExactlyOnceAndNoBlockLeaks) {
  for (const char* admission : {"peak", "greedy"})
  for (bool async : {false, true}) {
    SCOPED_TRACE(std::string(admission) + (async ? " async" : " sync"));
    std::mt19937 rng(async ? 11 : 7);
    Harness h(32, 40, async, 8, admission);
    std::set<nanoflow::RequestId> live;
    std::vector<nanoflow::RequestId> all;
    for (int step = 0; step < 6000 || h.engine->has_unfinished(); ++step) {
      if (step < 6000 && rng() % 3 == 0) {
        const int len = 1 + static_cast<int>(rng() % 40);
        auto id = h.engine->add_request(prompt_of(len, static_cast<int32_t>(rng() % 8)), greedy(1 + rng() % 30));
        live.insert(id);
        all.push_back(id);
      }
      if (!live.empty() && rng() % 17 == 0) {
        auto it = live.begin();
        std::advance(it, rng() % live.size());
        h.engine->abort(*it);
      }
      h.step();
      for (auto it = live.begin(); it != live.end();) it = h.finishes.count(*it) ? live.erase(it) : std::next(it);
      ASSERT_LT(step, 50000) << "the engine does not drain";
    }
    for (auto id : all) {
      ASSERT_EQ(h.finishes[id], 1) << "request " << id;
      const auto& o = h.outs.at(id);
      if (o.finish_reason == FinishReason::Length) EXPECT_GT(o.token_ids.size(), 0u);
    }
    EXPECT_EQ(h.engine->stats().kv_blocks_used, 0);
    EXPECT_GT(all.size(), 1500u);
    // Every batch is well formed, and its single-token rows (decodes) come before its
    // multi-token chunks: the CUDA backend runs the two groups as separate attention batches.
    size_t mixed = 0;
    for (const ScheduledBatch& b : h.backend->batches) {
      b.check_shape();
      bool chunk_seen = false, decode_seen = false;
      for (int r = 0; r < b.num_requests(); ++r) {
        const bool single = b.seq_indptr[r + 1] - b.seq_indptr[r] == 1;
        ASSERT_FALSE(single && chunk_seen) << "a single-token row after a chunk";
        chunk_seen = chunk_seen || !single;
        decode_seen = decode_seen || single;
      }
      mixed += decode_seen && chunk_seen ? 1 : 0;
    }
    EXPECT_GT(mixed, 100u) << "the workload should mix decodes and chunks in one batch";
  }
}

TEST(ScheduledBatchShape, RejectsArraysThatDisagree) {
  ScheduledBatch b;
  b.clear();
  b.token_ids = {5, 6, 7};
  b.positions = {0, 1, 2};
  b.slot_mapping = {0, 1, 2};
  b.seq_indptr = {0, 3};
  b.context_lens = {3};
  b.block_ids = {0};
  b.block_indptr = {0, 1};
  b.request_ids = {1};
  b.sample_rows = {2};
  b.check_shape();  // an internal-error abort fails the test
  // A malformed batch is a bug in the scheduler, not a user error: check_shape aborts.
  auto bad = [&](auto mutate, const char* message) {
    ScheduledBatch c = b;
    mutate(c);
    EXPECT_DEATH(c.check_shape(), message);
  };
  bad([](ScheduledBatch& c) { c.positions.pop_back(); }, "3 tokens, 2 positions");
  bad([](ScheduledBatch& c) { c.slot_mapping.push_back(3); }, "3 slots|4 slots");
  bad([](ScheduledBatch& c) { c.seq_indptr = {0, 2}; }, "seq_indptr does not cover");
  bad([](ScheduledBatch& c) { c.block_indptr = {0, 2}; }, "block_indptr does not cover");
  bad([](ScheduledBatch& c) { c.context_lens.clear(); }, "0 context lengths");
  bad([](ScheduledBatch& c) { c.sample_rows = {3}; }, "sample row 3 outside");
}

}  // namespace
}  // namespace nf

namespace nf {
namespace {

// A step that throws (a device error) fails the requests of the engine with FinishReason::Error
// and the message; the engine thread lives on and serves the next request.
TEST(EngineFake, AFailedStepFailsItsRequestsAndTheEngineGoesOn) {
  for (bool async : {false, true}) {
    Harness h(64, 64, async);
    h.backend->fail_batch = 3;
    const auto a = h.engine->add_request({5, 6, 7}, greedy(20));
    const auto b = h.engine->add_request({9, 10}, greedy(20));
    h.run();
    for (auto id : {a, b}) {
      ASSERT_EQ(h.finishes[id], 1);
      EXPECT_EQ(h.outs[id].finish_reason, FinishReason::Error);
      EXPECT_NE(h.outs[id].error.find("fake: device failed"), std::string::npos);
    }
    const auto c = h.engine->add_request({11, 12}, greedy(4));
    h.run();
    ASSERT_EQ(h.finishes[c], 1);
    EXPECT_EQ(h.outs[c].finish_reason, FinishReason::Length);
    EXPECT_EQ(h.outs[c].token_ids, (std::vector<int32_t>{13, 14, 15, 16}));
  }
}

TEST(EngineFake, TheBackgroundLoopSurvivesAFailedStep) {
  Harness h(64, 64, true);
  h.backend->fail_batch = 2;
  h.engine->start();
  auto wait_for = [&](nanoflow::RequestId id) {
    while (h.finishes[id] == 0) {
      std::vector<RequestOutput> d;
      h.engine->poll_outputs(d, std::chrono::milliseconds(50));
      for (auto& o : d) {
        h.outs[o.id].append(o);
        if (o.finished()) ++h.finishes[o.id];
      }
    }
  };
  const auto a = h.engine->add_request({5, 6, 7}, greedy(8));
  wait_for(a);
  EXPECT_EQ(h.outs[a].finish_reason, FinishReason::Error);
  const auto c = h.engine->add_request({11, 12}, greedy(3));
  wait_for(c);
  h.engine->stop();
  EXPECT_EQ(h.outs[c].finish_reason, FinishReason::Length);
  EXPECT_EQ(h.outs[c].token_ids, (std::vector<int32_t>{13, 14, 15}));
}

TEST(EngineFake, RequestsAreCheckedWhereTheyEnter) {
  Harness h(64, 64, false);
  SamplingParams p = greedy(4);
  p.min_tokens = 5;
  EXPECT_THROW(h.engine->add_request({5}, p), Error);  // min_tokens > max_tokens
  p = greedy(4);
  p.stop_token_ids = {-1};
  EXPECT_THROW(h.engine->add_request({5}, p), Error);
  p.stop_token_ids = {kVocab};
  EXPECT_THROW(h.engine->add_request({5}, p), Error);
  p = greedy(4);
  p.logit_bias = {{kVocab, 1.0f}};
  EXPECT_THROW(h.engine->add_request({5}, p), Error);
  EXPECT_THROW(h.engine->add_request({kVocab}, greedy(4)), Error);
  EXPECT_THROW(h.engine->add_request({-3}, greedy(4)), Error);
}

}  // namespace
}  // namespace nf
