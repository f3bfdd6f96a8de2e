// What a hostile or broken input must never do: kill the process. Each test here is one of the
// crashes found by probing the server, the loaders and the tokenizer (issue 20), kept as a
// regression test: the input is refused with a clear error, or served, and the process goes on.
#include <gtest/gtest.h>
#include <nanoflow/engine.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "../unit/model_test_files.h"
#include "backends/cpu/cpu_backend.h"
#include "common/json_file.h"
#include "common/status.h"
#include "engine/sampling_json.h"
#include "model/model_loader.h"
#include "tokenizer/tokenizer.h"

namespace nf::testing {
namespace {

using nanoflow::Engine;
using nanoflow::EngineConfig;
using nanoflow::GenerateRequest;
using nanoflow::RequestOutput;
using nlohmann::json;

const fs::path kFixtures = fs::path(NANOFLOW_SOURCE_DIR) / "tests/fixtures/models";

// ---- JSON -------------------------------------------------------------------------------------

TEST(HardeningJson, DepthNumbersAndUtf8AreErrorsAtParseTime) {
  const std::string deep = "{\"x\":" + std::string(70000, '[') + std::string(70000, ']') + "}";
  try {
    parse_json(deep);
    FAIL() << "no error";
  } catch (const JsonError& e) {
    EXPECT_EQ(e.kind(), JsonError::Kind::kDepth);
  }
  for (const char* big : {"{\"max_tokens\": 1e400}", "[-1e999]", "{\"a\":[1,2,3e308000]}"}) {
    try {
      parse_json(big);
      FAIL() << big;
    } catch (const JsonError& e) {
      EXPECT_EQ(e.kind(), JsonError::Kind::kNumber) << big;
    }
  }
  try {
    parse_json("{\"a\":\"\xff\"}");
    FAIL();
  } catch (const JsonError& e) {
    EXPECT_EQ(e.kind(), JsonError::Kind::kUtf8);
  }
  try {
    parse_json("{\"a\":", "body");
    FAIL();
  } catch (const JsonError& e) {
    EXPECT_EQ(e.kind(), JsonError::Kind::kSyntax);
    EXPECT_EQ(std::string(e.what()).rfind("body: ", 0), 0u) << e.what();
  }
  // The limit itself: kMaxJsonDepth levels parse, one more does not.
  const int d = kMaxJsonDepth;
  EXPECT_NO_THROW(parse_json(std::string(d, '[') + std::string(d, ']')));
  EXPECT_THROW(parse_json(std::string(d + 1, '[') + std::string(d + 1, ']')), JsonError);
  // Big integers still parse (as unsigned or as doubles), and are range-checked where used.
  EXPECT_NO_THROW(parse_json("[18446744073709551615, 1e300]"));
}

TEST(HardeningJson, IntegersAreComparedBeforeNarrowing) {
  auto params = [](const std::string& body) {
    return sampling_params_from_json(parse_json(body), "request");
  };
  EXPECT_THROW(params(R"({"logprobs": 4294967301})"), Error);              // 2^32 + 5, not 5
  EXPECT_THROW(params(R"({"max_tokens": 18446744073709551615})"), Error);  // not -1
  EXPECT_THROW(params(R"({"stop_token_ids": [-1]})"), Error);
  EXPECT_THROW(params(R"({"stop_token_ids": [4294967297]})"), Error);  // 2^32 + 1, not 1
  EXPECT_THROW(params(R"({"min_tokens": 9, "max_tokens": 8})"), Error);
  EXPECT_EQ(params(R"({"min_tokens": 8, "max_tokens": 8})").min_tokens, 8);
  EXPECT_EQ(params(R"({"stop_token_ids": [7, 2147483647]})").stop_token_ids.back(), 2147483647);
  EXPECT_EQ(json_integer(json::parse("3"), 0, 5, "x"), 3);
  EXPECT_THROW(json_integer(json::parse("3.5"), 0, 5, "x"), Error);
}

// ---- loaders ----------------------------------------------------------------------------------

TEST(HardeningLoader, DeeplyNestedSafetensorsHeaderIsAnError) {
  const fs::path dir = fresh_dir("deep_header");
  std::ofstream(dir / "config.json") << tiny_llama_config().dump();
  const std::string nested = std::string(100000, '[') + std::string(100000, ']');
  const std::string header =
      "{\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":" + nested + ",\"data_offsets\":[0,4]}}";
  const uint64_t n = header.size();
  write_bytes(dir / "model.safetensors",
              std::string(reinterpret_cast<const char*>(&n), 8) + header + std::string(4, '\0'));
  auto m = load_model(dir.string());
  ASSERT_FALSE(m.ok());
  EXPECT_NE(m.error().find("nested deeper"), std::string::npos) << m.error();
  EXPECT_EQ(m.error().find('\n'), std::string::npos);

  // A malformed entry at a legal depth: its error message quotes at most an excerpt.
  const std::string wide =
      "{\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[" + std::string(200000, '7') + "]}}";
  const uint64_t w = wide.size();
  write_bytes(dir / "model.safetensors", std::string(reinterpret_cast<const char*>(&w), 8) + wide);
  auto m2 = load_model(dir.string());
  ASSERT_FALSE(m2.ok());
  EXPECT_LT(m2.error().size(), 1000u);
}

// ---- tokenizer --------------------------------------------------------------------------------

TEST(HardeningTokenizer, TenMegabytesOfWhitespaceTokenize) {
  for (const char* model : {"llama3-tiny", "qwen2-tiny"}) {
    auto tok = Tokenizer::load((kFixtures / model).string());
    for (const std::string& text :
         {std::string(10 << 20, ' '), std::string(3 << 20, '\n'),
          "a" + std::string(1 << 20, '\t') + "b", std::string(2 << 20, 'x')}) {
      std::vector<int32_t> ids;
      ASSERT_NO_THROW(ids = tok->encode(text, {})) << model << " " << text.size();
      EXPECT_EQ(tok->decode(ids, false), text) << model;
    }
    // Text without a run past the slice length tokenizes as before (one slice).
    const std::string normal = "Hello   world,\n\n  this is\ttext " + std::string(300, ' ') + "end";
    std::vector<int32_t> a = tok->encode(normal, {});
    std::vector<int32_t> b = tok->encode(normal + std::string(100, 'z'), {});
    b.resize(a.size() - 1);
    a.resize(a.size() - 1);
    EXPECT_EQ(a, b);
  }
}

TEST(HardeningTokenizer, CatastrophicRegexIsAnErrorNotAnAbort) {
  json tj = read_json_file((kFixtures / "llama3-tiny/tokenizer.json").string());
  tj["pre_tokenizer"] = {{"type", "Split"},
                         {"pattern", {{"Regex", "(a+)+$"}}},
                         {"behavior", "Isolated"},
                         {"invert", false}};
  const fs::path dir = fresh_dir("catastrophic_regex");
  std::ofstream(dir / "tokenizer.json") << tj.dump();
  fs::copy_file(kFixtures / "llama3-tiny/tokenizer_config.json", dir / "tokenizer_config.json");
  auto tok = Tokenizer::load(dir.string());
  EXPECT_NO_THROW(tok->encode("aaab", {}));
  try {
    tok->encode(std::string(4000, 'a') + "b", {});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("regex"), std::string::npos) << e.what();
  }
}

// ---- token ids the tokenizer does not have ----------------------------------------------------

TEST(HardeningVocab, PaddedEmbeddingRowsAreNeverSampled) {
  const fs::path dir = padded_vocab_model(kFixtures / "llama3-tiny", "padded_hf", 8);
  EngineConfig c;
  c.model = dir.string();
  c.num_kv_blocks = 64;
  // The fixture is what it claims: without a tokenizer (no mask) greedy takes padded rows.
  {
    auto m = load_model(c.model).take();
    CpuBackendConfig cpu;
    cpu.num_kv_blocks = 64;
    Engine raw(c, std::make_unique<CpuBackend>(m.config, *m.weights, cpu), {});
    GenerateRequest r = padded_vocab_requests(12)[0];
    const auto out = raw.generate({r});
    int padded = 0;
    for (int32_t t : out[0].token_ids) padded += t >= 512;
    EXPECT_GT(padded, 0);
  }
  auto engine = Engine::create(c);
  ASSERT_EQ(engine->model_config().vocab_size, 520);
  const auto outs = engine->generate(padded_vocab_requests(12));
  for (const RequestOutput& o : outs) {
    EXPECT_EQ(o.finish_reason, nanoflow::FinishReason::Length) << o.error;
    ASSERT_EQ(o.token_ids.size(), 12u);
    for (int32_t t : o.token_ids) EXPECT_LT(t, 512);
    for (const auto& step : o.top_logprobs)
      for (const auto& [id, lp] : step) EXPECT_LT(id, 512);
  }
  // Ids past the tokenizer are refused where they enter.
  nanoflow::SamplingParams p;
  EXPECT_THROW(engine->add_request({1, 515}, p), Error);
  p.logit_bias = {{515, 100.0f}};
  EXPECT_THROW(engine->add_request({1, 2}, p), Error);
  p.logit_bias.clear();
  p.stop_token_ids = {519};
  EXPECT_THROW(engine->add_request({1, 2}, p), Error);
}

TEST(HardeningVocab, GgufWithASpareEmbeddingRow) {
  json cfg = tiny_llama_config();
  cfg["vocab_size"] = 65;
  const ModelConfig c = parse_hf_config(cfg, "config.json");
  auto tensors = tiny_tensors(c, 3);
  for (auto& t : tensors)
    if (t.name == "lm_head.weight") t.values[64 * 32] = 100.0f, t.values[64 * 32 + 1] = 100.0f;
  GgufWriter w = tiny_gguf(c, tensors, GgmlType::F32, 64);
  const fs::path dir = fresh_dir("gguf_spare_row");
  w.write(dir / "m.gguf");
  EngineConfig ec;
  ec.model = (dir / "m.gguf").string();
  ec.num_kv_blocks = 64;
  auto engine = Engine::create(ec);
  ASSERT_EQ(engine->tokenizer()->vocab_size(), 64);
  std::vector<GenerateRequest> reqs = padded_vocab_requests(12);
  for (auto& r : reqs) r.prompt = {1, 5, 9};
  for (const RequestOutput& o : engine->generate(reqs)) {
    EXPECT_EQ(o.finish_reason, nanoflow::FinishReason::Length) << o.error;
    for (int32_t t : o.token_ids) EXPECT_LT(t, 64);
  }
  EXPECT_THROW(engine->add_request({1, 64}, {}), Error);
}

}  // namespace
}  // namespace nf::testing
