// A compiled PCRE2 pattern (UTF + UCP, so \p{L}, \p{N} and \s are Unicode-aware), JIT-compiled
// when the platform supports it. Thread-safe: matching allocates its own match data.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace nf {

class Regex {
 public:
  // Throws nf::Error (without a file name; callers add it) when the pattern does not compile.
  // literal: match the pattern text as a plain string.
  explicit Regex(const std::string& pattern, bool literal = false);
  ~Regex();
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;

  const std::string& pattern() const { return pattern_; }
  // Appends the [begin, end) byte offsets of every non-empty, non-overlapping match in s, left to
  // right. s must be valid UTF-8. Throws nf::Error when matching fails (PCRE2's match limit,
  // say).
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>& out) const;

 private:
  std::string pattern_;
  void* code_ = nullptr;  // pcre2_code_8*
};

}  // namespace nf
