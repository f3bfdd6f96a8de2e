// The parts a Tokenizer is made of, filled in by the loaders (tokenizer_gguf.cpp,
// tokenizer_hf.cpp) and read by Tokenizer. Internal to src/tokenizer.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/pre_tokenizer.h"
#include "tokenizer/vocab.h"

namespace nf {

enum class SubwordModel {
  kBpe,  // merges ranked by order (BpeModel)
  kSpm,  // SentencePiece merges by score (SpmModel)
};

struct TokenizerCore {
  std::string source;  // the file or directory it was loaded from, for messages
  Vocab vocab;
  SubwordModel model = SubwordModel::kBpe;
  BpeModel bpe;
  SpmModel spm;

  // Encoding: added tokens are cut out of the raw text (raw_tokens), each remaining segment is
  // normalized, cut again on the added tokens that match normalized text (normalized_tokens),
  // pre-tokenized into words, and each word is encoded by the model.
  AddedTokenMatcher raw_tokens;
  AddedTokenMatcher normalized_tokens;
  std::vector<NormalizerStep> normalizers;
  PreTokenizer pre_tokenizer;
  std::vector<int32_t> special_prefix;  // EncodeOptions::add_special: ids before the text
  std::vector<int32_t> special_suffix;  // ... and after it

  // Decoding: the bytes of the kept ids' pieces are concatenated, one leading ' ' is dropped
  // when strip_leading_space, and invalid UTF-8 becomes U+FFFD.
  std::vector<std::string> pieces;  // [vocab size] the bytes each id decodes to
  std::vector<uint8_t> special;     // [vocab size] 1 for special/control ids
  bool strip_leading_space = false;

  std::optional<int32_t> bos_id;
  std::vector<int32_t> eos_ids;
  std::string chat_template;
};

}  // namespace nf
