// The incremental detokenizer (never a broken UTF-8 sequence; adds up to decode()), and the
// Unicode helpers under the tokenizers: UTF-8 replacement, byte-level alphabet, NFC, regexes.
#include <gtest/gtest.h>

#include <random>

#include "common/status.h"
#include "model/gguf.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"
#include "tokenizer_test_util.h"

namespace nf {
namespace {

const std::string kVocabDir = std::string(NANOFLOW_SHARED_DIR) + "/data/tokenizer/";
const std::string kModels = std::string(NANOFLOW_SOURCE_DIR) + "/tests/fixtures/models/";

std::unique_ptr<Tokenizer> gguf_vocab(const std::string& file) {
  auto g = GgufFile::open(kVocabDir + file);
  return Tokenizer::from_gguf(*g);
}

// Streams ids one by one and checks each piece is valid UTF-8 and the sum equals decode().
void expect_stream_matches(const Tokenizer& tok, const std::vector<int32_t>& ids, bool skip,
                           const std::string& what) {
  IncrementalDetokenizer detok(tok, skip);
  std::string all;
  for (int32_t id : ids) {
    const std::string piece = detok.push(id);
    ASSERT_TRUE(test::is_valid_utf8(piece)) << what << ": broken UTF-8 after id " << id;
    all += piece;
  }
  const std::string tail = detok.finish();
  ASSERT_TRUE(test::is_valid_utf8(tail)) << what;
  all += tail;
  EXPECT_EQ(all, tok.decode(ids, skip)) << what << ":" << test::ids_str(ids);
}

const char* kMultibyteTexts[] = {
    "héllo wörld",
    "日本語のテキスト and 中文分词测试，你好世界！",
    "emoji 😀🎉👍 and a family 👨\u200d👩\u200d👧\u200d👦 and a flag "
    "🏳️\u200d🌈",
    "한국어 텍스트, Привет, мир! مرحبا بالعالم",
    " leading space, tabs\tand\nnewlines\n\n",
    "Cửa Việt ½ months 🦙.cpp",
};

class StreamTest : public ::testing::TestWithParam<std::string> {
 protected:
  std::unique_ptr<Tokenizer> load() const {
    const std::string& p = GetParam();
    if (p.ends_with(".gguf")) return gguf_vocab(p);
    return Tokenizer::load(kModels + p);
  }
};

TEST_P(StreamTest, TextsWithMultibyteCharacters) {
  auto tok = load();
  for (const char* text : kMultibyteTexts) {
    const auto ids = tok->encode(text, {.add_special = true});
    expect_stream_matches(*tok, ids, true, text);
    expect_stream_matches(*tok, ids, false, text);
    EXPECT_EQ(tok->decode(tok->encode(text)), text) << GetParam();
  }
}

TEST_P(StreamTest, RandomIdSequences) {
  auto tok = load();
  std::mt19937 rng(1234);
  std::uniform_int_distribution<int32_t> any(0, tok->vocab_size() - 1);
  // Ids of byte-ish tokens, to make split characters frequent: the ids of every single byte.
  std::vector<int32_t> byte_ids;
  for (int b = 0; b < 256; ++b) {
    const auto ids = tok->encode(std::string(1, static_cast<char>(b)), {.parse_special = false});
    if (ids.size() == 1) byte_ids.push_back(ids[0]);
  }
  for (int i = 0; i < 300; ++i) {
    std::vector<int32_t> ids(1 + rng() % 30);
    for (auto& id : ids) {
      id = (!byte_ids.empty() && rng() % 2) ? byte_ids[rng() % byte_ids.size()] : any(rng);
    }
    expect_stream_matches(*tok, ids, i % 2 == 0, "random");
  }
}

TEST_P(StreamTest, CharacterSplitAcrossIds) {
  auto tok = load();
  // Encode each text, then stream it: whatever the split, complete characters come out whole.
  for (const char* text : kMultibyteTexts) {
    const auto ids = tok->encode(text);
    IncrementalDetokenizer detok(*tok);
    std::string all;
    for (int32_t id : ids) {
      const std::string piece = detok.push(id);
      EXPECT_TRUE(test::is_valid_utf8(piece));
      all += piece;
      // What has been emitted is always a prefix of the full text.
      EXPECT_EQ(std::string(text).substr(0, all.size()), all);
    }
    EXPECT_EQ(detok.finish(), "");
    EXPECT_EQ(all, text);
  }
}

INSTANTIATE_TEST_SUITE_P(Vocabs, StreamTest,
                         ::testing::Values("ggml-vocab-llama-spm.gguf", "ggml-vocab-gpt-2.gguf",
                                           "ggml-vocab-phi-3.gguf", "llama2-tiny", "llama3-tiny",
                                           "qwen2-tiny"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string s = info.param;
                           for (char& c : s) {
                             if (!isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return s;
                         });

TEST(Stream, ByteFallbackHeldBackUntilComplete) {
  auto tok = Tokenizer::load(kModels + "llama2-tiny");
  // "€" = E2 82 AC has no token in the tiny vocab: it becomes three <0xXX> tokens.
  const int32_t e2 = *tok->token_id("<0xE2>"), x82 = *tok->token_id("<0x82>"),
                xac = *tok->token_id("<0xAC>");
  IncrementalDetokenizer d(*tok);
  EXPECT_EQ(d.push(e2), "");
  EXPECT_EQ(d.push(x82), "");
  EXPECT_EQ(d.push(xac), "€");
  // An incomplete sequence at the end comes out as U+FFFD.
  EXPECT_EQ(d.push(e2), "");
  EXPECT_EQ(d.finish(), "\xEF\xBF\xBD");
  // A broken sequence is replaced as soon as it is known to be broken.
  IncrementalDetokenizer d2(*tok);
  EXPECT_EQ(d2.push(e2), "");
  EXPECT_EQ(d2.push(*tok->token_id("<0x41>")),
            "\xEF\xBF\xBD"
            "A");
  EXPECT_EQ(tok->decode(std::vector<int32_t>{e2, *tok->token_id("<0x41>")}),
            "\xEF\xBF\xBD"
            "A");
}

TEST(Stream, LeadingSpaceStrippedOnlyOnce) {
  auto tok = gguf_vocab("ggml-vocab-llama-spm.gguf");
  const auto ids = tok->encode("Hello world", {.add_special = true});
  IncrementalDetokenizer d(*tok);
  std::string all;
  for (int32_t id : ids) all += d.push(id);
  EXPECT_EQ(all + d.finish(), "Hello world");
}

TEST(Utf8, MaximalSubpartReplacement) {
  EXPECT_EQ(utf8_sanitize("a\xFF"
                          "b"),
            "a\xEF\xBF\xBD"
            "b");
  // E2 82 followed by 'x': one U+FFFD for the two-byte truncated sequence.
  EXPECT_EQ(utf8_sanitize("\xE2\x82x"), "\xEF\xBF\xBDx");
  // A surrogate (ED A0 80) is three ill-formed subparts.
  EXPECT_EQ(utf8_sanitize("\xED\xA0\x80"), "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_EQ(utf8_sanitize("\xF0\x9F\x98"), "\xEF\xBF\xBD");
  EXPECT_TRUE(utf8_is_valid("😀 ok"));
  EXPECT_FALSE(utf8_is_valid("\xC0\x80"));
}

TEST(Unicode, ByteLevelAlphabet) {
  EXPECT_EQ(byte_level_char(' '), 0x120u);   // "Ġ"
  EXPECT_EQ(byte_level_char('\n'), 0x10Au);  // "Ċ"
  EXPECT_EQ(byte_level_char('A'), static_cast<uint32_t>('A'));
  for (int b = 0; b < 256; ++b) {
    EXPECT_EQ(byte_level_byte(byte_level_char(static_cast<uint8_t>(b))), b);
  }
  EXPECT_EQ(byte_level_encode(" hi"), "\xC4\xA0hi");
}

TEST(Unicode, Nfc) {
  EXPECT_EQ(nfc_normalize("Cafe\xCC\x81"), "Caf\xC3\xA9");               // e + U+0301 -> é
  EXPECT_EQ(nfc_normalize("\xE1\x84\x80\xE1\x85\xA1"), "\xEA\xB0\x80");  // Hangul L+V -> 가
  EXPECT_EQ(nfc_normalize("\xE2\x84\xAB"), "\xC3\x85");                  // Angstrom sign -> Å
  // Canonical ordering: the dot below (ccc 220) moves before the acute (ccc 230); "q" has no
  // precomposed forms, so nothing composes.
  EXPECT_EQ(nfc_normalize("q\xCC\x81\xCC\xA3"), "q\xCC\xA3\xCC\x81");
  // s + dot below + dot above -> U+1E69.
  EXPECT_EQ(nfc_normalize("s\xCC\x87\xCC\xA3"), "\xE1\xB9\xA9");
  EXPECT_EQ(nfc_normalize("plain ascii"), "plain ascii");
}

TEST(Regex, UnicodeClassesAndLookahead) {
  PreTokenizer p;
  p.add_split(kGpt2Pattern);
  EXPECT_EQ(p.run("Hello  world's 123!!", true),
            (std::vector<std::string>{"Hello", " ", " world", "'s", " 123", "!!"}));
  PreTokenizer l3;
  l3.add_split(kLlama3Pattern);
  EXPECT_EQ(l3.run("I'M 12345 héllo\n\n x", true),
            (std::vector<std::string>{"I", "'M", " ", "123", "45", " héllo", "\n\n", " x"}));
  EXPECT_THROW(Regex("(unclosed"), Error);
}

TEST(GgufLoader, ErrorsNameFileAndKey) {
  const std::string dir = test::temp_dir("gguf");
  auto expect_error = [&](const test::GgufWriter& w, const std::string& key) {
    const std::string path = dir + "/t.gguf";
    w.write(path);
    try {
      Tokenizer::load(path);
      ADD_FAILURE() << "no error for " << key;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(key), std::string::npos) << e.what();
    }
  };
  test::GgufWriter base;
  base.str("general.architecture", "llama");
  expect_error(base, "tokenizer.ggml.model");
  test::GgufWriter bert = base;
  bert.str("tokenizer.ggml.model", "bert");
  expect_error(bert, "tokenizer.ggml.model 'bert'");
  test::GgufWriter pre = base;
  pre.str("tokenizer.ggml.model", "gpt2");
  pre.str("tokenizer.ggml.pre", "no-such-pre");
  pre.str_array("tokenizer.ggml.tokens", {"a", "b", "ab"});
  pre.str_array("tokenizer.ggml.merges", {"a b"});
  expect_error(pre, "tokenizer.ggml.pre 'no-such-pre'");
  test::GgufWriter spm = base;
  spm.str("tokenizer.ggml.model", "llama");
  spm.str_array("tokenizer.ggml.tokens", {"<unk>", "a"});
  expect_error(spm, "tokenizer.ggml.scores");
  std::filesystem::remove_all(dir);
}

TEST(GgufLoader, TinyByteLevelVocab) {
  // A hand-made gpt2 vocabulary: the 256 byte-level characters plus two merges.
  test::GgufWriter w;
  w.str("tokenizer.ggml.model", "gpt2");
  w.str("tokenizer.ggml.pre", "qwen2");
  std::vector<std::string> toks;
  for (int b = 0; b < 256; ++b) toks.push_back(byte_level_table()[b]);
  toks.push_back("\xC4\xA0h");   // "Ġh"
  toks.push_back("\xC4\xA0hi");  // "Ġhi"
  toks.push_back("<|end|>");
  w.str_array("tokenizer.ggml.tokens", toks);
  std::vector<int32_t> types(toks.size(), 1);
  types.back() = 3;
  w.i32_array("tokenizer.ggml.token_type", types);
  w.str_array("tokenizer.ggml.merges", {"\xC4\xA0 h", "\xC4\xA0h i"});
  w.u32("tokenizer.ggml.eos_token_id", 258);
  const std::string dir = test::temp_dir("tiny_gguf");
  w.write(dir + "/v.gguf");
  auto tok = Tokenizer::load(dir + "/v.gguf");
  const int32_t hi = 257, end = 258;
  const auto ids = tok->encode("a hi<|end|>");
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[1], hi);
  EXPECT_EQ(ids[2], end);
  EXPECT_EQ(tok->decode(ids), "a hi");
  EXPECT_EQ(tok->decode(ids, false), "a hi<|end|>");
  // qwen2 splits digits one by one.
  EXPECT_EQ(tok->encode("123").size(), 3u);
  EXPECT_EQ(tok->eos_ids(), std::vector<int32_t>{end});
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace nf
