#include "common/json_file.h"

#include <fstream>
#include <sstream>

namespace nf {

namespace {

// Refuses a value nested deeper than max_depth while the parser builds it (before any copy of
// the deep value exists: the callback runs as each array or object starts).
class DepthGuard {
 public:
  explicit DepthGuard(int max_depth) : max_depth_(max_depth) {}
  bool operator()(int depth, nlohmann::json::parse_event_t event, nlohmann::json&) const {
    using E = nlohmann::json::parse_event_t;
    if ((event == E::object_start || event == E::array_start) && depth >= max_depth_)
      throw JsonError(JsonError::Kind::kDepth,
                      fmt::format("JSON nested deeper than {} levels", max_depth_));
    return true;
  }

 private:
  int max_depth_;
};

// s cut to at most max_chars bytes at a UTF-8 character boundary, with "..." when cut.
std::string truncated(std::string s, size_t max_chars) {
  if (s.size() <= max_chars) return s;
  s.resize(max_chars);
  while (!s.empty() && (static_cast<unsigned char>(s.back()) & 0xC0) == 0x80) s.pop_back();
  if (!s.empty() && static_cast<unsigned char>(s.back()) >= 0xC0) s.pop_back();
  return s + "...";
}

// nlohmann's messages quote the offending token, which may be a megabyte of digits.
std::string cut(const std::string& msg) {
  return truncated(msg, 300);
}

}  // namespace

nlohmann::json parse_json(std::string_view text, const std::string& where, int max_depth) {
  const std::string prefix = where.empty() ? "" : where + ": ";
  try {
    return nlohmann::json::parse(text.begin(), text.end(), DepthGuard(max_depth));
  } catch (const JsonError& e) {
    throw JsonError(e.kind(), prefix + e.what());
  } catch (const nlohmann::json::out_of_range& e) {
    // 406: a number that overflows a double ("1e400").
    throw JsonError(JsonError::Kind::kNumber, prefix + "number out of range: " + cut(e.what()));
  } catch (const nlohmann::json::exception& e) {
    const std::string what = e.what();
    if (what.find("UTF-8") != std::string::npos)
      throw JsonError(JsonError::Kind::kUtf8, prefix + "not valid UTF-8: " + cut(what));
    throw JsonError(JsonError::Kind::kSyntax, prefix + "malformed JSON: " + cut(what));
  }
}

nlohmann::json read_json_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) fail("{}: cannot open", path);
  std::stringstream ss;
  ss << f.rdbuf();
  try {
    return parse_json(ss.str());
  } catch (const JsonError& e) {
    fail("{}: invalid JSON: {}", path, e.what());
  }
}

std::string json_excerpt(const nlohmann::json& j, size_t max_chars) {
  return truncated(j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace), max_chars);
}

}  // namespace nf
