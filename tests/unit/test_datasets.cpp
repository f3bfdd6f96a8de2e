// Trace loaders (bench/datasets.h): each format on small files written here and on the real
// traces in ../shared/data; bad files name the file and line; prompts have exact lengths and
// Mooncake hash blocks share tokens exactly where their hash ids match.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <set>

#include "bench/datasets.h"
#include "common/status.h"

namespace {

namespace fs = std::filesystem;
const fs::path kData = fs::path(NANOFLOW_SHARED_DIR) / "data";

fs::path write_file(const std::string& name, const std::string& text) {
  const fs::path dir = fs::temp_directory_path() / ("nf_datasets_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path p = dir / name;
  std::ofstream(p) << text;
  return p;
}

// The message of the nf::Error that fn throws ("" when it throws none).
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const nf::Error& e) {
    return e.what();
  }
  return "";
}

TEST(Datasets, AzureCsv) {
  const auto p = write_file("azure.csv",
                            "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                            "2023-11-16 18:15:46.6805900,374,44\n"
                            "2023-11-16 18:15:50.9951690,396,109\r\n"
                            "2023-11-17 00:00:00.0000000,5,1\n");
  const auto t = nf::load_trace(p.string(), 0);
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0].input_len, 374);
  EXPECT_EQ(t[0].output_len, 44);
  EXPECT_DOUBLE_EQ(t[0].arrival_s, 0);
  EXPECT_NEAR(t[1].arrival_s, 4.314579, 1e-9);
  EXPECT_EQ(t[1].output_len, 109);
  // Across midnight: 5 h 44 min 13.31941 s after the first.
  EXPECT_NEAR(t[2].arrival_s, 5 * 3600 + 44 * 60 + 13.31941, 1e-6);
  EXPECT_TRUE(t[2].hash_ids.empty());
  EXPECT_EQ(nf::load_trace(p.string(), 2).size(), 2u);
}

TEST(Datasets, Azure2024TimestampsWithOffset) {
  const auto p = write_file("azure24.csv",
                            "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                            "2024-05-10 00:00:00.009930+00:00,100,10\n"
                            "2024-05-10 02:00:01.009930+02:00,200,20\n");
  const auto t = nf::load_trace(p.string(), 0);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_NEAR(t[1].arrival_s, 1.0, 1e-9);  // the offset makes it one second later
}

TEST(Datasets, ShareGptCsv) {
  const auto p = write_file("sharegpt.csv",
                            "num_prefill_tokens,num_decode_tokens,num_total_tokens,pd_ratio\n"
                            "74,918,992,0.08\n290,905,1195,0.32\n");
  const auto t = nf::load_trace(p.string(), 0);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[1].input_len, 290);
  EXPECT_EQ(t[1].output_len, 905);
  EXPECT_EQ(t[1].arrival_s, 0);
}

TEST(Datasets, MooncakeJsonl) {
  const auto p = write_file("mooncake.jsonl",
                            "{\"timestamp\": 1000, \"input_length\": 600, \"output_length\": 5, "
                            "\"hash_ids\": [0, 1]}\n\n"
                            "{\"timestamp\": 3500, \"input_length\": 10, \"output_length\": 1, "
                            "\"hash_ids\": [0]}\n");
  const auto t = nf::load_trace(p.string(), 0);
  ASSERT_EQ(t.size(), 2u);
  EXPECT_EQ(t[0].input_len, 600);
  EXPECT_EQ(t[0].hash_ids, (std::vector<int64_t>{0, 1}));
  EXPECT_DOUBLE_EQ(t[1].arrival_s, 2.5);
  EXPECT_EQ(t[1].output_len, 1);
}

TEST(Datasets, BadFilesNameFileAndLine) {
  const auto missing = (fs::temp_directory_path() / "nf_no_such_trace.csv").string();
  EXPECT_NE(error_of([&] { nf::load_trace(missing, 0); }).find(missing), std::string::npos);

  const auto bad_count = write_file("bad_count.csv",
                                    "TIMESTAMP,ContextTokens,GeneratedTokens\n"
                                    "2023-11-16 18:15:46.68,374,44\n"
                                    "2023-11-16 18:15:47.68,abc,44\n");
  const std::string e1 = error_of([&] { nf::load_trace(bad_count.string(), 0); });
  EXPECT_NE(e1.find(bad_count.string() + ":3:"), std::string::npos) << e1;
  EXPECT_NE(e1.find("ContextTokens"), std::string::npos) << e1;
  EXPECT_EQ(e1.find('\n'), std::string::npos);

  const auto bad_ts =
      write_file("bad_ts.csv", "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-13-45 xx,1,1\n");
  EXPECT_NE(error_of([&] { nf::load_trace(bad_ts.string(), 0); }).find(":2: TIMESTAMP"),
            std::string::npos);

  const auto zero = write_file("zero.csv", "num_prefill_tokens,num_decode_tokens\n5,0\n");
  EXPECT_NE(error_of([&] { nf::load_trace(zero.string(), 0); }).find(":2: num_decode_tokens"),
            std::string::npos);

  const auto short_row = write_file("short.csv", "num_prefill_tokens,num_decode_tokens\n5\n");
  EXPECT_NE(error_of([&] { nf::load_trace(short_row.string(), 0); }).find(":2:"),
            std::string::npos);

  const auto bad_json = write_file(
      "bad.jsonl", "{\"input_length\": 5, \"output_length\": 1}\n{\"input_length\": 5,\n");
  EXPECT_NE(error_of([&] { nf::load_trace(bad_json.string(), 0); }).find(":2: not a JSON object"),
            std::string::npos);

  const auto no_len = write_file("no_len.jsonl", "{\"input_length\": 5}\n");
  EXPECT_NE(error_of([&] { nf::load_trace(no_len.string(), 0); }).find(":1: 'output_length'"),
            std::string::npos);

  const auto header = write_file("unknown.csv", "a,b,c\n1,2,3\n");
  EXPECT_NE(error_of([&] { nf::load_trace(header.string(), 0); }).find("unknown trace header"),
            std::string::npos);

  const auto empty = write_file("empty.csv", "\n\n");
  EXPECT_NE(error_of([&] { nf::load_trace(empty.string(), 0); }).find("empty"), std::string::npos);
}

// The traces in ../shared/data, against the row counts and first rows in its SOURCES.md.
TEST(Datasets, SharedTraces) {
  if (!fs::exists(kData / "AzureLLMInferenceTrace_conv.csv")) GTEST_SKIP() << "no " << kData;
  const auto conv = nf::load_trace((kData / "AzureLLMInferenceTrace_conv.csv").string(), 0);
  EXPECT_EQ(conv.size(), 19366u);
  EXPECT_EQ(conv[0].input_len, 374);
  EXPECT_GT(conv.back().arrival_s, 3400);  // the trace covers about an hour
  EXPECT_LT(conv.back().arrival_s, 3700);
  const auto code = nf::load_trace((kData / "AzureLLMInferenceTrace_code.csv").string(), 0);
  EXPECT_EQ(code.size(), 8819u);
  const auto sg =
      nf::load_trace((kData / "sharegpt_8k_filtered_stats_llama2_tokenizer.csv").string(), 0);
  EXPECT_EQ(sg.size(), 30731u);
  EXPECT_EQ(sg[0].input_len, 74);
  EXPECT_EQ(sg[0].output_len, 918);
  const auto mc = nf::load_trace((kData / "conversation_trace.jsonl").string(), 0);
  EXPECT_EQ(mc.size(), 12031u);
  EXPECT_EQ(mc[0].input_len, 6758);
  EXPECT_EQ(mc[0].hash_ids.size(), 14u);
  EXPECT_NEAR(mc.back().arrival_s, 3536.999, 1e-9);
  for (const auto& r : mc)  // one hash block per started 512 tokens
    ASSERT_EQ(r.hash_ids.size(), static_cast<size_t>((r.input_len + 511) / 512));
  EXPECT_EQ(nf::load_trace((kData / "conversation_trace.jsonl").string(), 5).size(), 5u);
}

TEST(Datasets, PromptVocabSkipsLowIds) {
  const nf::PromptVocab v = nf::prompt_vocab(32000);
  EXPECT_EQ(v.lo, 1000);
  EXPECT_EQ(v.hi, 31999);
  const nf::PromptVocab tiny = nf::prompt_vocab(256);
  EXPECT_EQ(tiny.lo, 128);
  EXPECT_EQ(tiny.hi, 255);
  std::mt19937_64 rng(1);
  const auto ids = nf::random_prompt(1000, v, rng);
  ASSERT_EQ(ids.size(), 1000u);
  for (int32_t t : ids) ASSERT_TRUE(t >= 1000 && t <= 31999) << t;
}

TEST(Datasets, TracePromptsShareHashBlocks) {
  const nf::PromptVocab v = nf::prompt_vocab(32000);
  const int B = nf::kMooncakeBlockTokens;
  std::mt19937_64 rng(7);
  nf::TraceRequest a{2 * B + 100, 4, 0, {0, 1, 2}};
  nf::TraceRequest b{B + 10, 4, 0, {0, 5}};
  nf::TraceRequest c{3 * B + 50, 4, 0, {0, 1}};  // more tokens than hash blocks
  const auto pa = nf::trace_prompt(a, v, 42, rng);
  const auto pb = nf::trace_prompt(b, v, 42, rng);
  const auto pc = nf::trace_prompt(c, v, 42, rng);
  ASSERT_EQ(pa.size(), static_cast<size_t>(a.input_len));
  ASSERT_EQ(pb.size(), static_cast<size_t>(b.input_len));
  ASSERT_EQ(pc.size(), static_cast<size_t>(c.input_len));
  // Block 0 is shared by all three, block 1 by a and c only.
  EXPECT_TRUE(std::equal(pa.begin(), pa.begin() + B, pb.begin()));
  EXPECT_TRUE(std::equal(pa.begin(), pa.begin() + 2 * B, pc.begin()));
  EXPECT_FALSE(std::equal(pa.begin() + B, pa.begin() + B + 10, pb.begin() + B));
  // The tokens past the hashed blocks are fresh.
  EXPECT_FALSE(std::equal(pa.begin() + 2 * B, pa.begin() + 2 * B + 100, pc.begin() + 2 * B));
  // A different seed (another run of a sweep) draws other blocks.
  const auto pa2 = nf::trace_prompt(a, v, 43, rng);
  EXPECT_FALSE(std::equal(pa.begin(), pa.begin() + B, pa2.begin()));
  // Without hash ids every prompt is random.
  nf::TraceRequest plain{300, 1, 0, {}};
  const auto p1 = nf::trace_prompt(plain, v, 42, rng), p2 = nf::trace_prompt(plain, v, 42, rng);
  EXPECT_EQ(p1.size(), 300u);
  EXPECT_NE(p1, p2);
  std::set<int32_t> distinct(pa.begin(), pa.end());
  EXPECT_GT(distinct.size(), 500u);
  for (int32_t t : pa) ASSERT_TRUE(t >= v.lo && t <= v.hi);
}

}  // namespace
