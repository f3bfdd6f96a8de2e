// The token vocabulary shared by the tokenizer models: id <-> string, and which ids the model
// itself may produce from text.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace nf {

struct StringViewHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using TokenMap = std::unordered_map<std::string, int32_t, StringViewHash, std::equal_to<>>;

class Vocab {
 public:
  // Adds (or overwrites) token `id`; the vocabulary grows to id + 1 entries when needed.
  // model_token: the model may produce this token from text (regular vocabulary entries; not
  // added/control tokens, not <0xXX> byte tokens, which it reaches through byte_fallback_id).
  void set(int32_t id, std::string text, bool model_token);
  int32_t size() const { return static_cast<int32_t>(tokens_.size()); }
  const std::string& text(int32_t id) const { return tokens_[id]; }
  std::optional<int32_t> find(std::string_view text) const;
  // The id of `text` when it is a model token.
  std::optional<int32_t> find_model(std::string_view text) const;
  // The "<0xXX>" token of byte b, or -1. Valid after index_bytes().
  int32_t byte_token(uint8_t b) const { return byte_tokens_[b]; }
  void index_bytes();

 private:
  std::vector<std::string> tokens_;   // [size] token text as stored; "" for unused ids
  std::vector<uint8_t> model_token_;  // [size] 1 when the model may produce the id from text
  TokenMap ids_;  // text -> id; for a repeated text a model token first, then the lowest id
  std::array<int32_t, 256> byte_tokens_{};
};

}  // namespace nf
