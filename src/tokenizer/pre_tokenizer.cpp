#include "tokenizer/pre_tokenizer.h"

#include <utility>

#include "common/strings.h"
#include "tokenizer/unicode.h"

namespace nf {

namespace {

// Splits `piece` on the regex matches and appends the resulting pieces to `out` according to the
// step's behavior. Empty pieces are dropped.
void split_piece(const PreTokenizerStep& step, std::string_view piece,
                 std::vector<std::pair<size_t, size_t>>& matches, std::vector<std::string>& out) {
  matches.clear();
  step.regex->find_all(piece, matches);
  // Spans covering the piece: (begin, end, is_delimiter).
  struct Span {
    size_t begin, end;
    bool delim;
  };
  std::vector<Span> spans;
  spans.reserve(matches.size() * 2 + 1);
  size_t pos = 0;
  for (auto [b, e] : matches) {
    if (b > pos) spans.push_back({pos, b, step.invert});
    spans.push_back({b, e, !step.invert});
    pos = e;
  }
  if (pos < piece.size()) spans.push_back({pos, piece.size(), step.invert});

  auto sub = [&](size_t b, size_t e) { return std::string(piece.substr(b, e - b)); };
  switch (step.behavior) {
    case SplitBehavior::kIsolated:
      for (const Span& s : spans) out.push_back(sub(s.begin, s.end));
      break;
    case SplitBehavior::kRemoved:
      for (const Span& s : spans) {
        if (!s.delim) out.push_back(sub(s.begin, s.end));
      }
      break;
    case SplitBehavior::kMergedWithPrevious: {
      // A delimiter ends the current piece.
      size_t start = 0;
      for (const Span& s : spans) {
        if (s.delim) {
          out.push_back(sub(start, s.end));
          start = s.end;
        }
      }
      if (start < piece.size()) out.push_back(sub(start, piece.size()));
      break;
    }
    case SplitBehavior::kMergedWithNext: {
      // A delimiter starts a new piece.
      size_t start = 0;
      for (const Span& s : spans) {
        if (s.delim && s.begin > start) {
          out.push_back(sub(start, s.begin));
          start = s.begin;
        }
      }
      if (start < piece.size()) out.push_back(sub(start, piece.size()));
      break;
    }
    case SplitBehavior::kContiguous: {
      // Runs of adjacent delimiters become one piece.
      for (size_t i = 0; i < spans.size();) {
        size_t j = i + 1;
        if (spans[i].delim) {
          while (j < spans.size() && spans[j].delim) ++j;
        }
        out.push_back(sub(spans[i].begin, spans[j - 1].end));
        i = j;
      }
      break;
    }
  }
}

}  // namespace

void PreTokenizer::add_split(const std::string& pattern, SplitBehavior behavior, bool invert,
                             bool literal) {
  PreTokenizerStep step;
  step.kind = PreTokenizerStep::Kind::kSplit;
  step.regex = std::make_shared<const Regex>(pattern, literal);
  step.behavior = behavior;
  step.invert = invert;
  steps_.push_back(std::move(step));
}

bool PreTokenizer::byte_level() const {
  for (const auto& s : steps_) {
    if (s.kind == PreTokenizerStep::Kind::kByteMap) return true;
  }
  return false;
}

std::vector<std::string> PreTokenizer::run(std::string_view text, bool first_segment) const {
  std::vector<std::string> pieces;
  if (text.empty()) return pieces;
  pieces.emplace_back(text);
  std::vector<std::string> next;
  std::vector<std::pair<size_t, size_t>> matches;
  for (const PreTokenizerStep& step : steps_) {
    switch (step.kind) {
      case PreTokenizerStep::Kind::kSplit:
        next.clear();
        for (const std::string& p : pieces) split_piece(step, p, matches, next);
        pieces.swap(next);
        break;
      case PreTokenizerStep::Kind::kPrefixSpace:
        for (std::string& p : pieces) {
          if (p.empty() || p[0] != ' ') p.insert(0, 1, ' ');
        }
        break;
      case PreTokenizerStep::Kind::kByteMap:
        for (std::string& p : pieces) p = byte_level_encode(p);
        break;
      case PreTokenizerStep::Kind::kMetaspace:
        for (size_t i = 0; i < pieces.size(); ++i) {
          std::string& p = pieces[i];
          p = replace_all(p, " ", step.replacement);
          const bool want = step.prepend == PrependScheme::kAlways ||
                            (step.prepend == PrependScheme::kFirst && first_segment && i == 0);
          if (want && !p.starts_with(step.replacement)) p.insert(0, step.replacement);
        }
        break;
    }
  }
  return pieces;
}

std::optional<PreTokenizer> gguf_pre_tokenizer(std::string_view pre) {
  PreTokenizer p;
  if (pre == "gpt-2" || pre == "default") {
    p.add_split(kGpt2Pattern);
  } else if (pre == "starcoder" || pre == "refact" || pre == "smollm") {
    p.add_split(kDigitPattern);
    p.add_split(kGpt2Pattern);
  } else if (pre == "llama-bpe" || pre == "llama3") {
    p.add_split(kLlama3Pattern);
  } else if (pre == "qwen2") {
    p.add_split(kQwen2Pattern);
  } else {
    return std::nullopt;
  }
  PreTokenizerStep map;
  map.kind = PreTokenizerStep::Kind::kByteMap;
  p.add(std::move(map));
  return p;
}

}  // namespace nf
