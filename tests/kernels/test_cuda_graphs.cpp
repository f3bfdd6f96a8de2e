// CUDA graphs in the CUDA backend: the dense ops replayed from a graph give bitwise the results of
// their eager run at the same padded token count, and graphs on agree with graphs off (exact
// token counts, so other GEMM shapes and rounding) within bf16 tolerance.
//
// The same golden requests run three times on one engine with graphs on and prefix caching off,
// so every pass has the same batches: in the first pass each padded size runs eagerly at its
// first use and is captured at its second; the later passes only replay. Skipped without a CUDA
// device or without the llama3-hd128 fixture model.
#include <gtest/gtest.h>
#include <nanoflow/engine.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <string>
#include <vector>

#include "../golden_fixture.h"
#include "backends/cuda/device.h"

namespace {

namespace fs = std::filesystem;
using nanoflow::Engine;
using nanoflow::RequestOutput;

const fs::path kSource = fs::path(__FILE__).parent_path().parent_path().parent_path();

void expect_bitwise_equal(const std::vector<RequestOutput>& a, const std::vector<RequestOutput>& b,
                          const std::string& what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t r = 0; r < a.size(); ++r) {
    EXPECT_EQ(a[r].token_ids, b[r].token_ids) << what << " request " << r;
    ASSERT_EQ(a[r].top_logprobs.size(), b[r].top_logprobs.size()) << what << " request " << r;
    for (size_t i = 0; i < a[r].top_logprobs.size(); ++i)
      EXPECT_EQ(a[r].top_logprobs[i], b[r].top_logprobs[i]) << what << " request " << r << " step " << i;
  }
}

TEST(CudaGraphs, ReplayIsBitwiseEagerAndAgreesWithGraphsOff) {
  if (nf::cuda::list_devices().empty()) GTEST_SKIP() << "no CUDA device";
  const fs::path fixture = kSource / "tests/fixtures/golden/llama3-hd128.json";
  if (!fs::exists(fixture)) GTEST_SKIP() << fixture << " not present";
  const nf::testing::Golden g = nf::testing::load_golden(kSource, fixture);
  const auto reqs = nf::testing::golden_requests(g);

  nanoflow::EngineConfig c = nf::testing::golden_engine_config(g.model);
  c.device = "cuda";
  c.enable_prefix_caching = false;
  c.cuda_graphs = true;
  auto engine = Engine::create(c);
  const auto first = engine->generate(reqs);
  const auto second = engine->generate(reqs);
  const auto third = engine->generate(reqs);
  expect_bitwise_equal(first, second, "graphs: pass 1 (eager at each size's first use) vs pass 2");
  expect_bitwise_equal(second, third, "graphs: pass 2 vs pass 3 (replays)");

  c.cuda_graphs = false;
  const auto eager = Engine::create(c)->generate(reqs);
  ASSERT_EQ(eager.size(), first.size());
  double max_diff = 0;
  size_t same = 0, steps = 0;
  for (size_t r = 0; r < first.size(); ++r) {
    const auto& a = first[r];
    const auto& b = eager[r];
    const size_t n = std::min(a.token_ids.size(), b.token_ids.size());
    for (size_t i = 0; i < n; ++i) {
      ++steps;
      ASSERT_FALSE(a.top_logprobs[i].empty());
      ASSERT_FALSE(b.top_logprobs[i].empty());
      if (a.token_ids[i] != b.token_ids[i]) {
        // Different rounding may flip a near tie: each token must be in the other's top-5.
        EXPECT_TRUE(nf::testing::find_id(b.top_logprobs[i], a.token_ids[i]) != nullptr &&
                    nf::testing::find_id(a.top_logprobs[i], b.token_ids[i]) != nullptr)
            << "request " << r << " step " << i;
        break;
      }
      ++same;
      max_diff = std::max<double>(
          max_diff, std::abs(a.top_logprobs[i][0].second - b.top_logprobs[i][0].second));
    }
  }
  std::printf("REPORT CUDA graphs on vs off: %zu/%zu steps with the same token, max |top-1 "
              "logprob diff| %.3e\n", same, steps, max_diff);
  EXPECT_LE(max_diff, 0.05);
}

}  // namespace
