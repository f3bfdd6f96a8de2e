// The two merge-based subword models.
//  - BpeModel: merges ranked by their order in the merge list (GPT-2 byte-level BPE, and
//    tokenizer.json "BPE" models, including SentencePiece-converted ones with byte_fallback).
//  - SpmModel: SentencePiece BPE driven by piece scores (GGUF "llama" vocabularies): the adjacent
//    pair whose concatenation is the highest-scoring vocabulary piece merges first.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokenizer/vocab.h"

namespace nf {

struct BpeOptions {
  bool byte_fallback = false;     // a character outside the vocabulary becomes its <0xXX> tokens
  std::optional<int32_t> unk_id;  // otherwise it becomes unk (dropped when there is none)
  bool fuse_unk = false;          // consecutive unk tokens collapse into one
  bool ignore_merges = false;     // a word that is itself a model token is emitted as is
};

class BpeModel {
 public:
  explicit BpeModel(BpeOptions opts = {}) : opts_(opts) {}
  // Appends the next merge (its rank is the number of merges before it). Returns false, adding
  // nothing, when left, right or left+right is not a model token.
  bool add_merge(const Vocab& vocab, std::string_view left, std::string_view right);
  size_t merge_count() const { return merges_.size(); }
  const BpeOptions& options() const { return opts_; }

  // Encodes one word (already normalized, pre-tokenized and, for byte-level vocabularies,
  // byte-mapped) and appends its ids to out. O(n log n) in the word's length.
  void encode(const Vocab& vocab, std::string_view word, std::vector<int32_t>& out) const;

 private:
  BpeOptions opts_;
  // (left id << 32 | right id) -> (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
};

class SpmModel {
 public:
  // scores: [vocab size] piece scores; unk_id is used for a byte with no <0xXX> token.
  SpmModel(std::vector<float> scores, std::optional<int32_t> unk_id)
      : scores_(std::move(scores)), unk_id_(unk_id) {}
  SpmModel() = default;

  // Encodes one normalized text (spaces already replaced by U+2581) and appends its ids.
  void encode(const Vocab& vocab, std::string_view text, std::vector<int32_t>& out) const;

 private:
  std::vector<float> scores_;  // [vocab size]
  std::optional<int32_t> unk_id_;
};

}  // namespace nf
