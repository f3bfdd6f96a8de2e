// Text normalization applied to each text segment (between added tokens) before
// pre-tokenization: the tokenizer.json normalizers we support, and SentencePiece's whitespace
// handling for GGUF "llama" vocabularies.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace nf {

struct NormalizerStep {
  enum class Kind {
    kNfc,      // Unicode NFC
    kPrepend,  // prepend `text` to a non-empty segment
    kReplace,  // replace every occurrence of `pattern` by `text`
  };
  Kind kind = Kind::kNfc;
  std::string pattern;
  std::string text;
};

// Applies the steps in order. s must be valid UTF-8.
std::string normalize(const std::vector<NormalizerStep>& steps, std::string_view s);

}  // namespace nf
