#include "tokenizer/unicode.h"

#include <algorithm>
#include <unordered_map>
#include <vector>

#include "tokenizer/unicode_nfc_tables.h"

namespace nf {

Utf8Step utf8_step(std::string_view s, size_t pos) {
  const auto* p = reinterpret_cast<const uint8_t*>(s.data()) + pos;
  const size_t avail = s.size() - pos;
  const uint8_t b0 = p[0];
  if (b0 < 0x80) return {Utf8Status::kOk, 1, b0};
  uint32_t need = 0;
  uint32_t cp = 0;
  uint8_t lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1, cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2, cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3, cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {Utf8Status::kInvalid, 1, 0};
  }
  for (uint32_t i = 1; i <= need; ++i) {
    if (i >= avail) return {Utf8Status::kIncomplete, static_cast<uint32_t>(avail), 0};
    const uint8_t b = p[i];
    const bool ok = i == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return {Utf8Status::kInvalid, i, 0};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {Utf8Status::kOk, need + 1, cp};
}

bool utf8_is_valid(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    if (static_cast<uint8_t>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const Utf8Step st = utf8_step(s, i);
    if (st.status != Utf8Status::kOk) return false;
    i += st.len;
  }
  return true;
}

std::string utf8_sanitize(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  while (i < s.size()) {
    const Utf8Step st = utf8_step(s, i);
    if (st.status == Utf8Status::kOk) {
      out.append(s.substr(i, st.len));
    } else {
      out.append(kReplacementChar);
    }
    i += st.len;
  }
  return out;
}

void utf8_append(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// ---- GPT-2 byte-level alphabet ----

namespace {

bool byte_is_printable(uint32_t b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct ByteLevelTables {
  std::array<uint32_t, 256> chars{};    // byte -> code point
  std::array<std::string, 256> utf8{};  // byte -> UTF-8 of chars[byte]
  std::array<int16_t, 512> bytes{};     // code point (< 0x200) -> byte, or -1
  ByteLevelTables() {
    bytes.fill(-1);
    uint32_t next = 0x100;
    for (uint32_t b = 0; b < 256; ++b) {
      chars[b] = byte_is_printable(b) ? b : next++;
      utf8_append(utf8[b], chars[b]);
      bytes[chars[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteLevelTables& byte_level_tables() {
  static const ByteLevelTables t;
  return t;
}

}  // namespace

uint32_t byte_level_char(uint8_t b) {
  return byte_level_tables().chars[b];
}

const std::array<std::string, 256>& byte_level_table() {
  return byte_level_tables().utf8;
}

std::optional<uint8_t> byte_level_byte(uint32_t cp) {
  if (cp >= 512) return std::nullopt;
  const int16_t b = byte_level_tables().bytes[cp];
  if (b < 0) return std::nullopt;
  return static_cast<uint8_t>(b);
}

std::string byte_level_encode(std::string_view s) {
  const auto& t = byte_level_tables().utf8;
  std::string out;
  out.reserve(s.size() * 2);
  for (char c : s) out.append(t[static_cast<uint8_t>(c)]);
  return out;
}

std::optional<std::string> byte_level_decode(std::string_view token) {
  std::string out;
  out.reserve(token.size());
  for (size_t i = 0; i < token.size();) {
    const Utf8Step st = utf8_step(token, i);
    if (st.status != Utf8Status::kOk) return std::nullopt;
    const auto b = byte_level_byte(st.cp);
    if (!b) return std::nullopt;
    out.push_back(static_cast<char>(*b));
    i += st.len;
  }
  return out;
}

// ---- NFC ----
//
// Design: the generated tables list each code point's canonical combining class (ccc) as ranges
// and its one-level canonical decomposition. At first use they are loaded into hash maps:
// cp -> decomposition, and (first, second) -> primary composite. Normalizing is the textbook
// three passes over the code points: full canonical decomposition (recursive, plus the Hangul
// arithmetic), a stable sort of each run of non-starters by ccc, then canonical composition,
// where a character combines with the last starter unless a character in between is blocking.

namespace {

constexpr uint32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr uint32_t kLCount = 19, kVCount = 21, kTCount = 28;
constexpr uint32_t kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

struct NfcTables {
  std::unordered_map<uint32_t, std::pair<uint32_t, uint32_t>> decomp;
  std::unordered_map<uint64_t, uint32_t> compose;
  NfcTables() {
    decomp.reserve(kNfcDecompositionCount * 2);
    for (size_t i = 0; i < kNfcDecompositionCount; ++i) {
      const NfcDecomposition& d = kNfcDecompositions[i];
      decomp.emplace(d.cp, std::make_pair(d.first, d.second));
      if (d.composes) compose.emplace((uint64_t{d.first} << 32) | d.second, d.cp);
    }
  }
};

const NfcTables& nfc_tables() {
  static const NfcTables t;
  return t;
}

uint8_t ccc_of(uint32_t cp) {
  if (cp < 0x300) return 0;
  const NfcCccRange* end = kNfcCccRanges + kNfcCccRangeCount;
  const NfcCccRange* it = std::upper_bound(
      kNfcCccRanges, end, cp, [](uint32_t c, const NfcCccRange& r) { return c < r.first; });
  if (it == kNfcCccRanges) return 0;
  --it;
  return cp <= it->last ? it->ccc : 0;
}

void decompose(uint32_t cp, const NfcTables& t, std::vector<uint32_t>& out) {
  if (cp >= kSBase && cp < kSBase + kSCount) {
    const uint32_t s = cp - kSBase;
    out.push_back(kLBase + s / kNCount);
    out.push_back(kVBase + (s % kNCount) / kTCount);
    if (s % kTCount != 0) out.push_back(kTBase + s % kTCount);
    return;
  }
  auto it = t.decomp.find(cp);
  if (it == t.decomp.end()) {
    out.push_back(cp);
    return;
  }
  decompose(it->second.first, t, out);
  if (it->second.second != 0) decompose(it->second.second, t, out);
}

std::optional<uint32_t> compose_pair(uint32_t a, uint32_t b, const NfcTables& t) {
  if (a >= kLBase && a < kLBase + kLCount && b >= kVBase && b < kVBase + kVCount) {
    return kSBase + ((a - kLBase) * kVCount + (b - kVBase)) * kTCount;
  }
  if (a >= kSBase && a < kSBase + kSCount && (a - kSBase) % kTCount == 0 && b > kTBase &&
      b < kTBase + kTCount) {
    return a + (b - kTBase);
  }
  auto it = t.compose.find((uint64_t{a} << 32) | b);
  if (it == t.compose.end()) return std::nullopt;
  return it->second;
}

}  // namespace

std::string nfc_normalize(std::string_view s) {
  if (std::all_of(s.begin(), s.end(), [](char c) { return static_cast<uint8_t>(c) < 0x80; })) {
    return std::string(s);
  }
  const NfcTables& t = nfc_tables();
  std::vector<uint32_t> cps;
  cps.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const Utf8Step st = utf8_step(s, i);
    decompose(st.status == Utf8Status::kOk ? st.cp : 0xFFFD, t, cps);
    i += st.len;
  }
  std::vector<uint8_t> ccc(cps.size());
  for (size_t i = 0; i < cps.size(); ++i) ccc[i] = ccc_of(cps[i]);
  // Canonical ordering: insertion sort inside each run of non-starters (runs are short).
  for (size_t i = 1; i < cps.size(); ++i) {
    if (ccc[i] == 0) continue;
    for (size_t j = i; j > 0 && ccc[j - 1] > ccc[j]; --j) {
      std::swap(cps[j - 1], cps[j]);
      std::swap(ccc[j - 1], ccc[j]);
    }
  }
  // Canonical composition, in place: cps[0..n) is the output so far.
  size_t n = 0;
  std::optional<size_t> starter;
  int last_ccc = -1;  // ccc of the last character kept after the starter; -1: none yet
  for (size_t i = 0; i < cps.size(); ++i) {
    const uint32_t cp = cps[i];
    const uint8_t c = ccc[i];
    if (starter) {
      const bool blocked = last_ccc != -1 && (last_ccc == 0 || last_ccc >= c);
      if (!blocked) {
        if (auto composed = compose_pair(cps[*starter], cp, t)) {
          cps[*starter] = *composed;
          continue;
        }
      }
    }
    if (c == 0) {
      starter = n;
      last_ccc = -1;
    } else {
      last_ccc = c;
    }
    cps[n++] = cp;
  }
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < n; ++i) utf8_append(out, cps[i]);
  return out;
}

}  // namespace nf
