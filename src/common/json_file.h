// Reading JSON with user-facing errors and bounded work: files (configs, indexes, tokenizers)
// and untrusted text (request bodies, JSONL lines, file headers).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "common/status.h"

namespace nf {

// Deepest nesting of arrays and objects accepted anywhere (requests, headers, files). Real
// documents stay far below it (tokenizer.json: 5, a JSON schema: tens); the limit keeps every
// recursive walk over a parsed value (copies, dumps, templates) on a bounded stack.
inline constexpr int kMaxJsonDepth = 128;

// Why untrusted JSON was refused.
class JsonError : public Error {
 public:
  enum class Kind { kSyntax, kUtf8, kDepth, kNumber };
  JsonError(Kind kind, const std::string& msg) : Error(msg), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

// Parses text as one JSON value. Throws JsonError when it is malformed, is not UTF-8, nests
// deeper than max_depth, or holds a number that overflows a double; the message starts with
// `where` when it is not empty ("<where>: ...").
nlohmann::json parse_json(std::string_view text, const std::string& where = "",
                          int max_depth = kMaxJsonDepth);

// Throws nf::Error "<path>: cannot open" or "<path>: invalid JSON: ..." (parse_json's limits).
nlohmann::json read_json_file(const std::string& path);

// j.dump() cut to at most max_chars characters (with "..."), for error messages: never a
// megabyte of a hostile value in a log line.
std::string json_excerpt(const nlohmann::json& j, size_t max_chars = 200);

}  // namespace nf
