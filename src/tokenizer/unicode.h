// Unicode helpers for the tokenizers: UTF-8 scanning with the "maximal subpart" replacement rule,
// the GPT-2 byte <-> unicode mapping, and NFC normalization.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace nf {

inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

enum class Utf8Status { kOk, kInvalid, kIncomplete };

// One step of UTF-8 decoding at s[pos] (pos < s.size()).
//  kOk: a well-formed character of `len` bytes, code point in `cp`.
//  kInvalid: `len` (>= 1) bytes form a maximal ill-formed subpart (Unicode 3.9, "U+FFFD
//    substitution of maximal subparts"); they become one U+FFFD and scanning resumes after them.
//  kIncomplete: the `len` bytes up to the end of s are a well-formed prefix of a character that
//    more bytes could complete.
struct Utf8Step {
  Utf8Status status = Utf8Status::kOk;
  uint32_t len = 0;
  uint32_t cp = 0;
};
Utf8Step utf8_step(std::string_view s, size_t pos);

bool utf8_is_valid(std::string_view s);
// s with every maximal ill-formed subpart (and an incomplete tail) replaced by U+FFFD, as
// Rust's String::from_utf8_lossy and Python's errors="replace" do.
std::string utf8_sanitize(std::string_view s);
void utf8_append(std::string& out, uint32_t cp);

// GPT-2 byte-level alphabet: each byte maps to one printable code point (printable Latin-1 bytes
// map to themselves, the other 68 bytes to U+0100.. in byte order).
uint32_t byte_level_char(uint8_t b);
// UTF-8 of byte_level_char(b) for each byte b.
const std::array<std::string, 256>& byte_level_table();
// The byte a byte-level code point stands for, or nullopt for a code point outside the alphabet.
std::optional<uint8_t> byte_level_byte(uint32_t cp);
// Maps every byte of s to its byte-level character.
std::string byte_level_encode(std::string_view s);
// The bytes a byte-level token stands for ("\u0120the" -> " the"), or nullopt when a character
// of token is outside the byte-level alphabet.
std::optional<std::string> byte_level_decode(std::string_view token);

// Unicode NFC (canonical decomposition, canonical ordering, canonical composition) of valid
// UTF-8. ASCII-only text is returned unchanged without table lookups.
std::string nfc_normalize(std::string_view s);

}  // namespace nf
