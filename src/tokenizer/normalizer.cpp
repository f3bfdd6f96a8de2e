#include "tokenizer/normalizer.h"

#include "common/strings.h"
#include "tokenizer/unicode.h"

namespace nf {

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
