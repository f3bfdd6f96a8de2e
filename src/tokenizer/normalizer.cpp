#include "tokenizer/normalizer.h"

#include "tokenizer/unicode.h"

namespace nf {

namespace {

std::string replace_all(const std::string& s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string::npos) break;
    out.append(s, pos, hit - pos);
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s, pos, std::string::npos);
  return out;
}

}  // namespace

std::string normalize(const std::vector<NormalizerStep>& steps, std::string_view s) {
  std::string cur(s);
  for (const NormalizerStep& step : steps) {
    switch (step.kind) {
      case NormalizerStep::Kind::kNfc:
        cur = nfc_normalize(cur);
        break;
      case NormalizerStep::Kind::kPrepend:
        if (!cur.empty()) cur.insert(0, step.text);
        break;
      case NormalizerStep::Kind::kReplace:
        cur = replace_all(cur, step.pattern, step.text);
        break;
    }
  }
  return cur;
}

}  // namespace nf
