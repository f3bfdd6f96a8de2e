#include "bench/datasets.h"

#include <algorithm>
#include <charconv>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/status.h"

namespace nf {
namespace {

enum class TraceFormat { kAzure, kShareGpt, kMooncake };

std::string trim(std::string_view s) {
  size_t b = 0, e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\r' || s[b] == '\n')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r' || s[e - 1] == '\n'))
    --e;
  return std::string(s.substr(b, e - b));
}

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> out;
  std::stringstream ss(line);
  std::string item;
  while (std::getline(ss, item, ',')) out.push_back(trim(item));
  if (!line.empty() && line.back() == ',') out.emplace_back();
  return out;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (Howard Hinnant's
// days_from_civil), so timestamps need no time zone database.
int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = static_cast<unsigned>(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + static_cast<int64_t>(doe) - 719468;
}

// A timestamp as whole seconds since the epoch plus a fraction, kept apart because a double
// holding both would lose the 100 ns digits of the Azure traces.
struct Timestamp {
  int64_t secs = 0;
  double frac = 0;
};

// "YYYY-MM-DD HH:MM:SS[.fffffff][+HH:MM|-HH:MM|Z]"; false when malformed.
bool parse_timestamp(const std::string& s, Timestamp& out) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, se = 0, n = 0;
  if (std::sscanf(s.c_str(), "%4d-%2d-%2d%*[ T]%2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &se, &n) != 6)
    return false;
  if (mo < 1 || mo > 12 || d < 1 || d > 31 || h > 23 || mi > 59 || se > 60) return false;
  size_t i = static_cast<size_t>(n);
  double frac = 0;
  if (i < s.size() && s[i] == '.') {
    double scale = 0.1;
    ++i;
    const size_t start = i;
    for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i, scale /= 10)
      frac += (s[i] - '0') * scale;
    if (i == start) return false;
  }
  int64_t offset = 0;
  if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
    int oh = 0, om = 0;
    if (std::sscanf(s.c_str() + i + 1, "%2d:%2d", &oh, &om) != 2) return false;
    offset = (s[i] == '+' ? 1 : -1) * (oh * 3600 + om * 60);
    i += 6;
  } else if (i < s.size() && s[i] == 'Z') {
    ++i;
  }
  if (i != s.size()) return false;
  out.secs = days_from_civil(y, static_cast<unsigned>(mo), static_cast<unsigned>(d)) * 86400 +
             h * 3600 + mi * 60 + se - offset;
  out.frac = frac;
  return true;
}

int parse_count(const std::string& path, int line_no, const std::string& field,
                const std::string& text) {
  long long v = 0;
  const char* end = text.data() + text.size();
  const auto [p, ec] = std::from_chars(text.data(), end, v);
  if (ec != std::errc() || p != end || v < 0 || v > (1 << 30))
    fail("{}:{}: {} '{}' is not a token count", path, line_no, field, text);
  if (v < 1) fail("{}:{}: {} is {}; requests need at least one token", path, line_no, field, v);
  return static_cast<int>(v);
}

int column(const std::vector<std::string>& header, const std::string& name) {
  for (size_t i = 0; i < header.size(); ++i)
    if (header[i] == name) return static_cast<int>(i);
  return -1;
}

std::vector<TraceRequest> load_csv(const std::string& path, std::istream& in, TraceFormat format,
                                   const std::vector<std::string>& header, int limit) {
  const bool azure = format == TraceFormat::kAzure;
  const int c_in = column(header, azure ? "ContextTokens" : "num_prefill_tokens");
  const int c_out = column(header, azure ? "GeneratedTokens" : "num_decode_tokens");
  const int c_ts = azure ? column(header, "TIMESTAMP") : -1;
  std::vector<TraceRequest> out;
  Timestamp first;
  std::string line;
  for (int line_no = 2;
       (limit <= 0 || static_cast<int>(out.size()) < limit) && std::getline(in, line); ++line_no) {
    if (trim(line).empty()) continue;
    const std::vector<std::string> f = split_csv(line);
    const int need = std::max({c_in, c_out, c_ts}) + 1;
    if (static_cast<int>(f.size()) < need)
      fail("{}:{}: {} fields, expected {} as in the header", path, line_no, f.size(),
           header.size());
    TraceRequest r;
    r.input_len = parse_count(path, line_no, header[c_in], f[c_in]);
    r.output_len = parse_count(path, line_no, header[c_out], f[c_out]);
    if (c_ts >= 0) {
      Timestamp t;
      if (!parse_timestamp(f[c_ts], t))
        fail("{}:{}: TIMESTAMP '{}' is not 'YYYY-MM-DD HH:MM:SS.fff'", path, line_no, f[c_ts]);
      if (out.empty()) first = t;
      r.arrival_s = static_cast<double>(t.secs - first.secs) + (t.frac - first.frac);
    }
    out.push_back(std::move(r));
  }
  return out;
}

std::vector<TraceRequest> load_mooncake(const std::string& path, std::istream& in, int limit) {
  std::vector<TraceRequest> out;
  double first_ms = 0;
  std::string line;
  for (int line_no = 1;
       (limit <= 0 || static_cast<int>(out.size()) < limit) && std::getline(in, line); ++line_no) {
    if (trim(line).empty()) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) fail("{}:{}: not a JSON object", path, line_no);
    auto count = [&](const char* key) {
      const auto it = j.find(key);
      if (it == j.end() || !it->is_number_integer())
        fail("{}:{}: '{}' must be an integer", path, line_no, key);
      return parse_count(path, line_no, key, std::to_string(it->get<int64_t>()));
    };
    TraceRequest r;
    r.input_len = count("input_length");
    r.output_len = count("output_length");
    if (const auto it = j.find("timestamp"); it != j.end()) {
      if (!it->is_number()) fail("{}:{}: 'timestamp' must be a number (ms)", path, line_no);
      const double ms = it->get<double>();
      if (out.empty()) first_ms = ms;
      r.arrival_s = (ms - first_ms) / 1000.0;
    }
    if (const auto it = j.find("hash_ids"); it != j.end()) {
      if (!it->is_array()) fail("{}:{}: 'hash_ids' must be an array of integers", path, line_no);
      for (const auto& h : *it) {
        if (!h.is_number_integer())
          fail("{}:{}: 'hash_ids' must be an array of integers", path, line_no);
        r.hash_ids.push_back(h.get<int64_t>());
      }
    }
    out.push_back(std::move(r));
  }
  return out;
}

// SplitMix64: decorrelates (seed, hash id) pairs before they seed a block's generator.
uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

}  // namespace

std::vector<TraceRequest> load_trace(const std::string& path, int limit) {
  std::ifstream in(path);
  if (!in) fail("{}: cannot open the trace file", path);
  std::string first;
  while (std::getline(in, first) && trim(first).empty()) {
  }
  const std::string head = trim(first);
  if (head.empty()) fail("{}:1: the trace file is empty", path);
  if (head[0] == '{') {
    in.clear();
    in.seekg(0);
    return load_mooncake(path, in, limit);
  }
  const std::vector<std::string> header = split_csv(head);
  if (column(header, "ContextTokens") >= 0 && column(header, "GeneratedTokens") >= 0)
    return load_csv(path, in, TraceFormat::kAzure, header, limit);
  if (column(header, "num_prefill_tokens") >= 0 && column(header, "num_decode_tokens") >= 0)
    return load_csv(path, in, TraceFormat::kShareGpt, header, limit);
  if (ends_with(path, ".jsonl") || ends_with(path, ".json"))
    fail("{}:1: not a JSON object (expected Mooncake JSONL lines)", path);
  fail(
      "{}:1: unknown trace header '{}' (expected TIMESTAMP,ContextTokens,GeneratedTokens, "
      "num_prefill_tokens,num_decode_tokens,... or Mooncake JSONL)",
      path, head.substr(0, 80));
}

PromptVocab prompt_vocab(int vocab_size) {
  if (vocab_size < 2) fail("vocab size {} is too small for random prompts", vocab_size);
  const int32_t lo = vocab_size > 2000 ? 1000 : vocab_size / 2;
  return {lo, vocab_size - 1};
}

std::vector<int32_t> random_prompt(int len, const PromptVocab& vocab, std::mt19937_64& rng) {
  std::uniform_int_distribution<int32_t> tok(vocab.lo, vocab.hi);
  std::vector<int32_t> ids(static_cast<size_t>(std::max(0, len)));
  for (auto& t : ids) t = tok(rng);
  return ids;
}

std::vector<int32_t> trace_prompt(const TraceRequest& r, const PromptVocab& vocab, uint64_t seed,
                                  std::mt19937_64& rng) {
  std::vector<int32_t> ids;
  ids.reserve(static_cast<size_t>(r.input_len));
  std::uniform_int_distribution<int32_t> tok(vocab.lo, vocab.hi);
  for (const int64_t h : r.hash_ids) {
    if (static_cast<int>(ids.size()) >= r.input_len) break;
    std::mt19937_64 block_rng(splitmix64(seed ^ splitmix64(static_cast<uint64_t>(h))));
    const int n = std::min(kMooncakeBlockTokens, r.input_len - static_cast<int>(ids.size()));
    for (int i = 0; i < n; ++i) ids.push_back(tok(block_rng));
  }
  while (static_cast<int>(ids.size()) < r.input_len) ids.push_back(tok(rng));
  return ids;
}

}  // namespace nf
