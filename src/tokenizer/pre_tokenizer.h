// Pre-tokenization: splitting one normalized text segment into the words that the model encodes
// one at a time. A PreTokenizer is a sequence of steps, each applied to every piece the previous
// steps produced (the semantics of a tokenizer.json "Sequence" of pre-tokenizers).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/regex.h"

namespace nf {

// What happens to the regex matches ("delimiters") of a split step, as in tokenizer.json.
enum class SplitBehavior { kIsolated, kRemoved, kMergedWithPrevious, kMergedWithNext, kContiguous };

// When a Metaspace step prepends its replacement character to a piece.
enum class PrependScheme { kAlways, kFirst, kNever };

struct PreTokenizerStep {
  enum class Kind {
    kSplit,        // split on regex matches
    kPrefixSpace,  // ByteLevel(add_prefix_space): prepend ' ' unless the piece starts with ' '
    kByteMap,      // ByteLevel: map each byte to its GPT-2 byte-level character
    kMetaspace,    // replace ' ' by `replacement`, then prepend it per `prepend`
  };
  Kind kind = Kind::kSplit;
  std::shared_ptr<const Regex> regex;  // kSplit
  SplitBehavior behavior = SplitBehavior::kIsolated;
  bool invert = false;      // kSplit: the matches are the pieces kept, the gaps the delimiters
  std::string replacement;  // kMetaspace
  PrependScheme prepend = PrependScheme::kAlways;
};

class PreTokenizer {
 public:
  void add(PreTokenizerStep step) { steps_.push_back(std::move(step)); }
  void add_split(const std::string& pattern, SplitBehavior behavior = SplitBehavior::kIsolated,
                 bool invert = false, bool literal = false);
  bool byte_level() const;  // true when a kByteMap step is present
  const std::vector<PreTokenizerStep>& steps() const { return steps_; }

  // The words of one segment of text (valid UTF-8). first_segment: the segment starts the input
  // (PrependScheme::kFirst). With no steps, the whole segment is one word.
  std::vector<std::string> run(std::string_view text, bool first_segment) const;

 private:
  std::vector<PreTokenizerStep> steps_;
};

// The regular expressions of well-known pre-tokenizers.
inline constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
inline constexpr const char* kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr const char* kQwen2Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
inline constexpr const char* kDigitPattern = R"(\p{N})";

// The byte-level pre-tokenizer for a GGUF `tokenizer.ggml.pre` value (isolated regex splits, then
// the byte mapping), or nullopt for a value we do not know.
std::optional<PreTokenizer> gguf_pre_tokenizer(std::string_view pre);

}  // namespace nf
