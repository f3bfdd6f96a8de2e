#include "tokenizer/added_tokens.h"

#include "tokenizer/unicode.h"

namespace nf {

namespace {

bool is_whitespace_cp(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

// A "word" character for single_word: letters, digits and '_' (any non-ASCII, non-space code
// point counts as a letter here).
bool is_word_cp(uint32_t cp) {
  if (cp < 0x80) {
    return (cp >= '0' && cp <= '9') || (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') ||
           cp == '_';
  }
  return !is_whitespace_cp(cp);
}

// The code point ending just before byte offset `end` (> 0) and its start offset.
std::pair<uint32_t, size_t> cp_before(std::string_view s, size_t end) {
  size_t b = end - 1;
  while (b > 0 && end - b < 4 && (static_cast<uint8_t>(s[b]) & 0xC0) == 0x80) --b;
  const Utf8Step st = utf8_step(s, b);
  if (st.status == Utf8Status::kOk && b + st.len == end) return {st.cp, b};
  return {0xFFFD, end - 1};
}

}  // namespace

int32_t AddedTokenMatcher::child(int32_t node, uint8_t b) const {
  for (const auto& [c, n] : nodes_[node].children) {
    if (c == b) return n;
  }
  return -1;
}

void AddedTokenMatcher::add(const AddedToken& token) {
  if (token.content.empty()) return;
  int32_t node = 0;
  for (char ch : token.content) {
    const uint8_t b = static_cast<uint8_t>(ch);
    int32_t next = child(node, b);
    if (next < 0) {
      next = static_cast<int32_t>(nodes_.size());
      nodes_.push_back(Node{});
      nodes_[node].children.emplace_back(b, next);
    }
    node = next;
  }
  // The first token with a given content wins.
  if (nodes_[node].token < 0) {
    nodes_[node].token = static_cast<int32_t>(tokens_.size());
    tokens_.push_back(token);
  }
}

void AddedTokenMatcher::split(std::string_view text, bool parse_special,
                              std::vector<TextSegment>& out) const {
  size_t seg_start = 0;  // start of the pending text segment
  size_t pos = 0;
  auto emit_text = [&](size_t b, size_t e) {
    if (e > b) out.push_back({-1, b, e});
  };
  while (pos < text.size()) {
    // Longest allowed match starting at pos.
    int32_t best = -1;
    size_t best_end = 0;
    int32_t node = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      node = child(node, static_cast<uint8_t>(text[i]));
      if (node < 0) break;
      const int32_t t = nodes_[node].token;
      if (t < 0) continue;
      const AddedToken& tok = tokens_[t];
      if (tok.special && !parse_special) continue;
      if (tok.single_word) {
        const bool left_ok = pos == 0 || !is_word_cp(cp_before(text, pos).first);
        bool right_ok = i + 1 == text.size();
        if (!right_ok) {
          const Utf8Step st = utf8_step(text, i + 1);
          right_ok = !is_word_cp(st.status == Utf8Status::kOk ? st.cp : 0xFFFD);
        }
        if (!left_ok || !right_ok) continue;
      }
      best = t;
      best_end = i + 1;
    }
    if (best < 0) {
      ++pos;
      continue;
    }
    const AddedToken& tok = tokens_[best];
    size_t b = pos, e = best_end;
    if (tok.lstrip) {
      while (b > seg_start) {
        auto [cp, start] = cp_before(text, b);
        if (!is_whitespace_cp(cp)) break;
        b = start;
      }
    }
    if (tok.rstrip) {
      while (e < text.size()) {
        const Utf8Step st = utf8_step(text, e);
        if (st.status != Utf8Status::kOk || !is_whitespace_cp(st.cp)) break;
        e += st.len;
      }
    }
    emit_text(seg_start, b);
    out.push_back({tok.id, b, e});
    seg_start = pos = e;
  }
  emit_text(seg_start, text.size());
}

}  // namespace nf
