// Helpers shared by the tokenizer tests: reading the llama.cpp vocab test files and the
// Hugging Face fixtures, a UTF-8 validity check, and a minimal GGUF writer for error cases.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace nf::test {

inline std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  EXPECT_TRUE(f.good()) << "cannot open " << path;
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

struct VocabCase {
  std::string text;
  std::vector<int32_t> ids;
};

// <gguf>.inp: texts each followed by "\n__ggml_vocab_test__\n"; <gguf>.out: one line of
// " id id ..." per text (see shared/data/tokenizer/README.md).
inline std::vector<VocabCase> read_vocab_cases(const std::string& gguf_path) {
  const std::string inp = read_file(gguf_path + ".inp");
  const std::string out = read_file(gguf_path + ".out");
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<VocabCase> cases;
  size_t pos = 0;
  while (pos < inp.size()) {
    const size_t hit = inp.find(sep, pos);
    EXPECT_NE(hit, std::string::npos) << gguf_path << ".inp does not end with the separator";
    if (hit == std::string::npos) break;
    cases.push_back({inp.substr(pos, hit - pos), {}});
    pos = hit + sep.size();
  }
  std::istringstream lines(out);
  std::string line;
  size_t i = 0;
  while (std::getline(lines, line)) {
    EXPECT_LT(i, cases.size()) << gguf_path << ".out has more lines than .inp has cases";
    if (i >= cases.size()) break;
    std::istringstream ids(line);
    int32_t id;
    while (ids >> id) cases[i].ids.push_back(id);
    ++i;
  }
  EXPECT_EQ(i, cases.size()) << gguf_path << ".out line count";
  return cases;
}

inline bool is_valid_utf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<uint8_t>(s[i]);
    size_t n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 2, cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 3, cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k) {
      const auto b = static_cast<uint8_t>(s[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && cp < 0x10000) || cp > 0x10FFFF ||
        (cp >= 0xD800 && cp <= 0xDFFF)) {
      return false;
    }
    i += n;
  }
  return true;
}

inline std::string ids_str(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) s += " " + std::to_string(id);
  return s;
}

// Writes a GGUF v3 file with metadata only (strings, string arrays, int32 arrays, f32 arrays,
// u32 and bool values), for tests of the loader's error paths.
class GgufWriter {
 public:
  void str(const std::string& key, const std::string& v) {
    key_(key, 8);
    string_(v);
    ++count_;
  }
  void u32(const std::string& key, uint32_t v) {
    key_(key, 4);
    raw_(&v, 4);
    ++count_;
  }
  void boolean(const std::string& key, bool v) {
    key_(key, 7);
    const uint8_t b = v ? 1 : 0;
    raw_(&b, 1);
    ++count_;
  }
  void str_array(const std::string& key, const std::vector<std::string>& v) {
    key_(key, 9);
    array_header_(8, v.size());
    for (const auto& s : v) string_(s);
    ++count_;
  }
  void i32_array(const std::string& key, const std::vector<int32_t>& v) {
    key_(key, 9);
    array_header_(5, v.size());
    for (int32_t x : v) raw_(&x, 4);
    ++count_;
  }
  void f32_array(const std::string& key, const std::vector<float>& v) {
    key_(key, 9);
    array_header_(6, v.size());
    for (float x : v) raw_(&x, 4);
    ++count_;
  }
  void write(const std::string& path) const {
    std::ofstream f(path, std::ios::binary);
    f.write("GGUF", 4);
    const uint32_t version = 3;
    const uint64_t tensors = 0;
    f.write(reinterpret_cast<const char*>(&version), 4);
    f.write(reinterpret_cast<const char*>(&tensors), 8);
    f.write(reinterpret_cast<const char*>(&count_), 8);
    f.write(body_.data(), static_cast<std::streamsize>(body_.size()));
  }

 private:
  void raw_(const void* p, size_t n) { body_.append(static_cast<const char*>(p), n); }
  void string_(const std::string& s) {
    const uint64_t n = s.size();
    raw_(&n, 8);
    body_ += s;
  }
  void key_(const std::string& k, uint32_t type) {
    string_(k);
    raw_(&type, 4);
  }
  void array_header_(uint32_t elem_type, uint64_t n) {
    raw_(&elem_type, 4);
    raw_(&n, 8);
  }
  std::string body_;
  uint64_t count_ = 0;
};

inline std::string temp_dir(const std::string& name) {
  auto p = std::filesystem::temp_directory_path() /
           ("nf_tok_" + name + "_" + std::to_string(::getpid()));
  std::filesystem::create_directories(p);
  return p.string();
}

}  // namespace nf::test
