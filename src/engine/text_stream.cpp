#include "engine/text_stream.h"

#include <algorithm>

namespace nf {

TextStream::TextStream(const Tokenizer& tok, std::vector<std::string> stops, bool skip_special)
    : detok_(tok, skip_special), stops_(std::move(stops)) {
  stops_.erase(std::remove(stops_.begin(), stops_.end(), std::string()), stops_.end());
  for (const auto& s : stops_) hold_ = std::max(hold_, s.size() - 1);
}

std::string TextStream::push(int32_t id, bool& stopped) {
  stopped = false;
  pending_ += detok_.push(id);
  size_t first = std::string::npos;
  for (const auto& s : stops_) first = std::min(first, pending_.find(s));
  if (first != std::string::npos) {
    stopped = true;
    std::string out = pending_.substr(0, first);
    pending_.clear();
    return out;
  }
  if (pending_.size() <= hold_) return "";
  // Release all but the held-back tail, cut at a UTF-8 character boundary.
  size_t cut = pending_.size() - hold_;
  while (cut > 0 && (static_cast<unsigned char>(pending_[cut]) & 0xc0) == 0x80) --cut;
  std::string out = pending_.substr(0, cut);
  pending_.erase(0, cut);
  return out;
}

std::string TextStream::finish() {
  std::string out = pending_ + detok_.finish();
  pending_.clear();
  return out;
}

}  // namespace nf
