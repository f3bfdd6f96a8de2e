#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>

#include "common/half.h"
#include "common/status.h"
#include "model/gguf.h"

namespace nf {
namespace {

const std::string kSmol = std::string(NANOFLOW_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
const std::string kVocab = std::string(NANOFLOW_SHARED_DIR) + "/data/tokenizer/ggml-vocab-gpt-2.gguf";

TEST(Gguf, ReadsVocabOnlyFile) {
  auto g = GgufFile::open(kVocab);
  EXPECT_EQ(g->version(), 3u);
  EXPECT_EQ(g->get_string("tokenizer.ggml.model"), "gpt2");
  ASSERT_NE(g->get_string_array("tokenizer.ggml.tokens"), nullptr);
  EXPECT_EQ(g->get_string_array("tokenizer.ggml.tokens")->size(), 50257u);
  EXPECT_EQ(g->get_string_array("tokenizer.ggml.merges")->size(), 50000u);
  EXPECT_TRUE(g->tensors().empty());
  EXPECT_THROW(g->get_int("tokenizer.ggml.model"), Error);
}

TEST(Gguf, ReadsSmolLM2Tensors) {
  if (!std::filesystem::exists(kSmol)) GTEST_SKIP() << "default model not fetched";
  auto g = GgufFile::open(kSmol);
  EXPECT_EQ(g->get_string("general.architecture"), "llama");
  EXPECT_EQ(g->get_int("llama.block_count"), 30);
  const GgufTensor* t = g->find_tensor("blk.0.attn_q.weight");
  ASSERT_NE(t, nullptr);
  ASSERT_EQ(t->dims.size(), 2u);
  EXPECT_EQ(t->dims[0], 576u);
  EXPECT_EQ(t->dims[1], 576u);
  ASSERT_TRUE(ggml_can_dequantize(t->type)) << ggml_type_name(t->type);
  std::vector<float> w(t->numel());
  ggml_dequantize(t->type, t->data, w.data(), w.size());
  double sum2 = 0;
  for (float x : w) {
    ASSERT_TRUE(std::isfinite(x));
    sum2 += x * x;
  }
  EXPECT_GT(sum2, 0.0);
}

TEST(Gguf, DequantizesBlocks) {
  // Q4_1 block: d = 0.5, m = -1, nibbles 0..15 (low) and 15..0 (high).
  uint8_t blk[20];
  const uint16_t d = float_to_fp16(0.5f), m = float_to_fp16(-1.0f);
  std::memcpy(blk, &d, 2);
  std::memcpy(blk + 2, &m, 2);
  for (int j = 0; j < 16; ++j) blk[4 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float out[32];
  ggml_dequantize(GgmlType::Q4_1, blk, out, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_FLOAT_EQ(out[j], 0.5f * j - 1.0f);
    EXPECT_FLOAT_EQ(out[j + 16], 0.5f * (15 - j) - 1.0f);
  }
  // Q4_0: x = d * (q - 8).
  uint8_t b0[18];
  std::memcpy(b0, &d, 2);
  for (int j = 0; j < 16; ++j) b0[2 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  ggml_dequantize(GgmlType::Q4_0, b0, out, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_FLOAT_EQ(out[j], 0.5f * (j - 8));
    EXPECT_FLOAT_EQ(out[j + 16], 0.5f * (7 - j));
  }
  // Q8_0: x = d * q.
  uint8_t b8[34];
  std::memcpy(b8, &d, 2);
  for (int j = 0; j < 32; ++j) b8[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j - 16));
  ggml_dequantize(GgmlType::Q8_0, b8, out, 32);
  for (int j = 0; j < 32; ++j) EXPECT_FLOAT_EQ(out[j], 0.5f * (j - 16));
}

TEST(Gguf, RejectsBadFiles) {
  const auto dir = std::filesystem::temp_directory_path() / "nf_gguf_test";
  std::filesystem::create_directories(dir);
  const auto bad = (dir / "bad_magic.gguf").string();
  std::ofstream(bad) << "NOPE0000000000000000000000";
  try {
    GgufFile::open(bad);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad_magic.gguf"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("magic"), std::string::npos);
  }
  // Truncate the vocab file in the middle of its metadata.
  std::ifstream in(kVocab, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), {});
  const auto trunc = (dir / "truncated.gguf").string();
  std::ofstream(trunc, std::ios::binary).write(bytes.data(), 100000);
  try {
    GgufFile::open(trunc);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("truncated"), std::string::npos) << e.what();
  }
  EXPECT_THROW(GgufFile::open((dir / "missing.gguf").string()), Error);
}

}  // namespace
}  // namespace nf
