#include "tokenizer/bpe_model.h"

#include <algorithm>
#include <queue>
#include <string>

#include "tokenizer/unicode.h"

namespace nf {

namespace {

// Length in bytes of the UTF-8 character starting at s[i] (1 for a stray byte).
size_t char_len(std::string_view s, size_t i) {
  const Utf8Step st = utf8_step(s, i);
  return st.status == Utf8Status::kOk ? st.len : std::max<size_t>(1, st.len);
}

// One symbol of a word being merged, in a doubly linked list over a vector.
struct Symbol {
  int32_t id;
  int32_t prev;
  int32_t next;
};

}  // namespace

bool BpeModel::add_merge(const Vocab& vocab, std::string_view left, std::string_view right) {
  auto l = vocab.find_model(left);
  auto r = vocab.find_model(right);
  if (!l || !r) return false;
  std::string merged(left);
  merged.append(right);
  auto m = vocab.find_model(merged);
  if (!m) return false;
  const uint64_t key =
      (static_cast<uint64_t>(static_cast<uint32_t>(*l)) << 32) | static_cast<uint32_t>(*r);
  // A repeated pair keeps its first (best) rank; it still takes up a rank.
  merges_.try_emplace(key, static_cast<int32_t>(merges_.size()), *m);
  return true;
}

// Design: the word starts as one symbol per character (or per byte token / unk for characters
// outside the vocabulary). A min-heap holds candidate adjacent pairs keyed by (merge rank, left
// position); popping the best pair, we check it is still current (both symbols alive, adjacent,
// with the ids it was queued with), merge it, and queue the two new neighbouring pairs. Equal
// ranks merge left to right, as in Hugging Face tokenizers and llama.cpp.
void BpeModel::encode(const Vocab& vocab, std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (opts_.ignore_merges) {
    if (auto id = vocab.find_model(word)) {
      out.push_back(*id);
      return;
    }
  }
  std::vector<Symbol> syms;
  syms.reserve(word.size());
  bool last_is_unk = false;
  for (size_t i = 0; i < word.size();) {
    const size_t n = char_len(word, i);
    const std::string_view ch = word.substr(i, n);
    i += n;
    if (auto id = vocab.find_model(ch)) {
      syms.push_back({*id, 0, 0});
      last_is_unk = false;
      continue;
    }
    if (opts_.byte_fallback) {
      bool all = true;
      for (char c : ch) all = all && vocab.byte_token(static_cast<uint8_t>(c)) >= 0;
      if (all) {
        for (char c : ch) syms.push_back({vocab.byte_token(static_cast<uint8_t>(c)), 0, 0});
        last_is_unk = false;
        continue;
      }
    }
    if (!opts_.unk_id) continue;
    if (!(opts_.fuse_unk && last_is_unk)) syms.push_back({*opts_.unk_id, 0, 0});
    last_is_unk = true;
  }
  const int32_t n = static_cast<int32_t>(syms.size());
  for (int32_t i = 0; i < n; ++i) {
    syms[i].prev = i - 1;
    syms[i].next = i + 1 < n ? i + 1 : -1;
  }

  struct Candidate {
    int32_t rank;
    int32_t left;
    int32_t right;
    int32_t left_id;
    int32_t right_id;
    int32_t merged_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto push_pair = [&](int32_t left) {
    if (left < 0) return;
    const int32_t right = syms[left].next;
    if (right < 0) return;
    const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(syms[left].id)) << 32) |
                         static_cast<uint32_t>(syms[right].id);
    auto it = merges_.find(key);
    if (it == merges_.end()) return;
    heap.push({it->second.first, left, right, syms[left].id, syms[right].id, it->second.second});
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);

  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& l = syms[c.left];
    if (l.id != c.left_id || l.next != c.right || syms[c.right].id != c.right_id) continue;
    Symbol& r = syms[c.right];
    l.id = c.merged_id;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = c.left;
    r.id = -1;
    r.next = -1;
    push_pair(l.prev);
    push_pair(c.left);
  }
  for (int32_t i = 0; i >= 0 && i < n; i = syms[i].next) out.push_back(syms[i].id);
}

// Design (the algorithm of SentencePiece's BPE encoder, as llama.cpp's llm_tokenizer_spm runs it):
// the text starts as one symbol per character; a max-heap holds adjacent pairs whose concatenated
// text is a model token, keyed by that token's score (ties: leftmost first). A popped pair is
// stale when either side has changed length since it was queued. At the end each symbol is looked
// up; one that is not a token (a single character outside the vocabulary) falls back to its
// <0xXX> byte tokens, or unk.
void SpmModel::encode(const Vocab& vocab, std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  struct Sym {
    size_t start;
    size_t len;  // 0: merged into its left neighbour
    int32_t prev;
    int32_t next;
  };
  std::vector<Sym> syms;
  syms.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const size_t n = char_len(text, i);
    const int32_t idx = static_cast<int32_t>(syms.size());
    syms.push_back({i, n, idx - 1, -1});
    if (idx > 0) syms[idx - 1].next = idx;
    i += n;
  }
  struct Bigram {
    float score;
    int32_t left;
    int32_t right;
    size_t len;
    bool operator<(const Bigram& o) const {
      return score != o.score ? score < o.score : left > o.left;
    }
  };
  std::priority_queue<Bigram> heap;
  auto push_pair = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const size_t len = syms[left].len + syms[right].len;
    auto id = vocab.find_model(text.substr(syms[left].start, len));
    if (!id) return;
    heap.push({scores_[*id], left, right, len});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(syms.size()); ++i) push_pair(i - 1, i);

  while (!heap.empty()) {
    const Bigram b = heap.top();
    heap.pop();
    Sym& l = syms[b.left];
    Sym& r = syms[b.right];
    if (l.len == 0 || r.len == 0 || l.len + r.len != b.len) continue;
    l.len += r.len;
    r.len = 0;
    l.next = r.next;
    if (r.next >= 0) syms[r.next].prev = b.left;
    push_pair(l.prev, b.left);
    push_pair(b.left, l.next);
  }
  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    const std::string_view piece = text.substr(syms[i].start, syms[i].len);
    if (auto id = vocab.find_model(piece)) {
      out.push_back(*id);
      continue;
    }
    for (char c : piece) {
      const int32_t bt = vocab.byte_token(static_cast<uint8_t>(c));
      if (bt >= 0) {
        out.push_back(bt);
      } else if (unk_id_) {
        out.push_back(*unk_id_);
      }
    }
  }
}

}  // namespace nf
