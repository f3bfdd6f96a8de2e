// A request's generated text as it streams: incremental detokenization plus stop strings.
//
// Design: a stop string can only end in the newest text, so it must start within the last
// (longest stop - 1) characters before it plus the new text. That many bytes are held back
// (never streamed) until they can no longer begin a stop string; when one matches, the text
// before it is released and the rest is dropped, so a stop string is never streamed.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace nf {

class TextStream {
 public:
  TextStream(const Tokenizer& tok, std::vector<std::string> stops, bool skip_special = true);
  // The text that may be streamed after `id`; sets `stopped` when a stop string matched.
  std::string push(int32_t id, bool& stopped);
  // Everything still held back (call when the request finishes for another reason).
  std::string finish();

 private:
  IncrementalDetokenizer detok_;
  std::vector<std::string> stops_;
  size_t hold_ = 0;      // bytes to hold back: longest stop string - 1
  std::string pending_;  // text not streamed yet
};

}  // namespace nf
