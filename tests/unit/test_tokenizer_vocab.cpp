// llama.cpp's tokenizer test vectors (shared/data/tokenizer): every case of every vocab-only GGUF
// must encode to the reference ids (HF tokenizers, add_special_tokens=False) and decode back.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "common/status.h"
#include "model/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer_test_util.h"

namespace nf {
namespace {

const std::string kVocabDir = std::string(NANOFLOW_SHARED_DIR) + "/data/tokenizer/";

std::vector<std::string> vocab_files() {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(kVocabDir, ec)) {
    if (e.path().extension() == ".gguf") out.push_back(e.path().filename().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::unique_ptr<Tokenizer> load_vocab(const std::string& file) {
  auto g = GgufFile::open(kVocabDir + file);
  return Tokenizer::from_gguf(*g);
}

class VocabTest : public ::testing::TestWithParam<std::string> {};

TEST(VocabFiles, AllFivePresent) {
  const auto files = vocab_files();
  for (const char* name :
       {"ggml-vocab-gpt-2.gguf", "ggml-vocab-llama-spm.gguf", "ggml-vocab-phi-3.gguf",
        "ggml-vocab-refact.gguf", "ggml-vocab-starcoder.gguf"}) {
    EXPECT_NE(std::find(files.begin(), files.end(), name), files.end()) << name;
  }
}

TEST_P(VocabTest, EncodesEveryCase) {
  auto tok = load_vocab(GetParam());
  const auto cases = test::read_vocab_cases(kVocabDir + GetParam());
  ASSERT_FALSE(cases.empty());
  size_t passed = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto got = tok->encode(cases[i].text, {.add_special = false, .parse_special = false});
    EXPECT_EQ(got, cases[i].ids) << GetParam() << " case " << i + 1 << " text \"" << cases[i].text
                                 << "\"\n  expected" << test::ids_str(cases[i].ids)
                                 << "\n  got     " << test::ids_str(got);
    passed += got == cases[i].ids;
  }
  std::cout << "[ vocab    ] " << GetParam() << ": " << passed << "/" << cases.size()
            << " cases match\n";
}

TEST_P(VocabTest, DecodeRoundTrips) {
  auto tok = load_vocab(GetParam());
  for (const auto& c : test::read_vocab_cases(kVocabDir + GetParam())) {
    // Decoding the reference ids gives the text back: byte-level BPE is lossless, and for
    // SentencePiece the one leading space the dummy prefix adds is stripped again.
    EXPECT_EQ(tok->decode(c.ids), c.text) << GetParam() << " text \"" << c.text << "\"";
    EXPECT_EQ(tok->decode(tok->encode(c.text, {.parse_special = false})), c.text);
  }
}

TEST_P(VocabTest, LongTextIsFast) {
  auto tok = load_vocab(GetParam());
  const auto cases = test::read_vocab_cases(kVocabDir + GetParam());
  const auto longest =
      std::max_element(cases.begin(), cases.end(),
                       [](const auto& a, const auto& b) { return a.text.size() < b.text.size(); });
  // ~30 KB of mixed text, then a 20 KB word with no pre-tokenizer break and a 20 KB space run:
  // none of them may take quadratic time.
  std::string text;
  while (text.size() < 30000) text += longest->text;
  const std::string word(20000, 'a');
  const std::string spaces(20000, ' ');
  const auto t0 = std::chrono::steady_clock::now();
  for (int rep = 0; rep < 5; ++rep) {
    EXPECT_FALSE(tok->encode(text).empty());
    EXPECT_EQ(tok->decode(tok->encode(word)), word);
    EXPECT_EQ(tok->decode(tok->encode(spaces)), spaces);
  }
  const double ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "[ perf     ] " << GetParam() << ": 5 x (30 KB text + 20 KB word + 20 KB spaces) in "
            << ms << " ms\n";
}

TEST_P(VocabTest, MetadataAndSpecialTokens) {
  auto tok = load_vocab(GetParam());
  auto g = GgufFile::open(kVocabDir + GetParam());
  EXPECT_EQ(tok->vocab_size(),
            static_cast<int32_t>(g->get_string_array("tokenizer.ggml.tokens")->size()));
  ASSERT_TRUE(tok->bos_id().has_value());
  EXPECT_EQ(*tok->bos_id(), *g->get_int("tokenizer.ggml.bos_token_id"));
  const auto eos = tok->eos_ids();
  ASSERT_FALSE(eos.empty());
  EXPECT_EQ(eos[0], *g->get_int("tokenizer.ggml.eos_token_id"));
  EXPECT_TRUE(tok->is_special(*tok->bos_id()));
  const std::string bos_text = tok->token_text(*tok->bos_id());
  EXPECT_EQ(tok->token_id(bos_text), tok->bos_id());
  // A control token's text is one token when parsing special tokens, plain text otherwise.
  EXPECT_EQ(tok->encode(bos_text), std::vector<int32_t>{*tok->bos_id()});
  EXPECT_NE(tok->encode(bos_text, {.parse_special = false}), std::vector<int32_t>{*tok->bos_id()});
  EXPECT_EQ(tok->decode(std::vector<int32_t>{*tok->bos_id()}, /*skip_special=*/true), "");
  EXPECT_EQ(tok->decode(std::vector<int32_t>{*tok->bos_id()}, /*skip_special=*/false), bos_text);
  EXPECT_THROW(tok->decode(std::vector<int32_t>{tok->vocab_size()}), Error);
}

INSTANTIATE_TEST_SUITE_P(Shared, VocabTest, ::testing::ValuesIn(vocab_files()),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string n = info.param.substr(0, info.param.size() - 5);
                           std::replace_if(
                               n.begin(), n.end(), [](char c) { return !isalnum(c); }, '_');
                           return n;
                         });

TEST(VocabSpm, AddsBosAndSplitsOnControlTokens) {
  auto tok = load_vocab("ggml-vocab-llama-spm.gguf");
  const auto plain = tok->encode("Hello world");
  const auto with_bos = tok->encode("Hello world", {.add_special = true});
  ASSERT_EQ(with_bos.size(), plain.size() + 1);
  EXPECT_EQ(with_bos[0], 1);
  // The dummy-prefix space is added again after a special token, as HF's legacy Llama does.
  const auto a = tok->encode("Hello</s>world");
  std::vector<int32_t> expected = tok->encode("Hello");
  expected.push_back(2);
  for (int32_t id : tok->encode("world")) expected.push_back(id);
  EXPECT_EQ(a, expected);
  EXPECT_EQ(tok->decode(a), "Hello world");
  EXPECT_EQ(tok->decode(a, false), "Hello</s> world");
  EXPECT_TRUE(tok->chat_template().empty());
}

TEST(VocabPhi3, EndTokenIsEos) {
  auto tok = load_vocab("ggml-vocab-phi-3.gguf");
  const auto eos = tok->eos_ids();
  EXPECT_NE(std::find(eos.begin(), eos.end(), *tok->token_id("<|end|>")), eos.end());
  EXPECT_NE(tok->chat_template().find("<|assistant|>"), std::string::npos);
  EXPECT_EQ(tok->encode("<|user|>\nHi<|end|>").front(), *tok->token_id("<|user|>"));
}

}  // namespace
}  // namespace nf
