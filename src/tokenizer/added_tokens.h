// Added tokens (special/control tokens such as "<|im_end|>", and user-defined tokens): they are
// cut out of the text before normal encoding, longest match first at the leftmost position, the
// way Hugging Face tokenizers' AddedVocabulary and llama.cpp's special-token pass do.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace nf {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = false;      // matched only when parsing special tokens; skipped by decode
  bool lstrip = false;       // swallows the whitespace to its left
  bool rstrip = false;       // swallows the whitespace to its right
  bool single_word = false;  // matched only when not inside a word
  bool normalized = false;   // matched in the normalized text instead of the raw text
};

// A piece of text after splitting: an added token (id >= 0) or the text bytes [begin, end).
struct TextSegment {
  int32_t id = -1;
  size_t begin = 0;
  size_t end = 0;
};

class AddedTokenMatcher {
 public:
  void add(const AddedToken& token);
  bool empty() const { return tokens_.empty(); }
  // Splits text into segments covering it in order; empty text segments are left out.
  // parse_special: also match special tokens (non-special ones always match).
  void split(std::string_view text, bool parse_special, std::vector<TextSegment>& out) const;

 private:
  struct Node {
    std::vector<std::pair<uint8_t, int32_t>> children;  // byte -> node index
    int32_t token = -1;                                 // index into tokens_ ending here
  };
  int32_t child(int32_t node, uint8_t b) const;
  std::vector<AddedToken> tokens_;
  std::vector<Node> nodes_{Node{}};  // [0] is the root
};

}  // namespace nf
