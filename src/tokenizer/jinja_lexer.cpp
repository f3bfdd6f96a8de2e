#include "tokenizer/jinja_lexer.h"

#include <cstdlib>

#include "common/status.h"
#include "tokenizer/jinja_ast.h"

namespace nf::jinja {
namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

class Lexer {
 public:
  explicit Lexer(const std::string& src) : src_(src) {}

  std::vector<Token> run() {
    size_t pos = 0;
    bool strip_next = false;  // the previous tag ended with '-'
    bool trim_next = false;   // the previous tag was a block or comment (trim_blocks)
    while (pos < src_.size()) {
      size_t start = find_tag(pos);
      std::string text = src_.substr(pos, start - pos);
      bool line_starting = pos == 0 || src_[pos - 1] == '\n';
      if (strip_next) {
        size_t k = 0;
        while (k < text.size() && is_space(text[k])) ++k;
        text.erase(0, k);
      } else if (trim_next && !text.empty() && text[0] == '\n') {
        text.erase(0, 1);
        line_starting = true;
      }
      if (start == src_.size()) {
        emit_text(std::move(text), pos);
        break;
      }
      char kind = src_[start + 1];
      char sign = start + 2 < src_.size() ? src_[start + 2] : '\0';
      if (sign == '-') {
        while (!text.empty() && is_space(text.back())) text.pop_back();
      } else if (sign != '+' && kind != '{') {
        size_t line_pos = text.rfind('\n');
        line_pos = line_pos == std::string::npos ? 0 : line_pos + 1;
        if (line_pos > 0 || line_starting) {
          bool all_ws = true;
          for (size_t k = line_pos; k < text.size(); ++k) all_ws = all_ws && is_space(text[k]);
          if (all_ws) text.erase(line_pos);
        }
      }
      emit_text(std::move(text), pos);
      size_t inner = start + 2 + ((sign == '-' || sign == '+') ? 1 : 0);
      if (kind == '#') {
        size_t end = src_.find("#}", inner);
        if (end == std::string::npos) fail_at(start, "unterminated comment");
        strip_next = end > inner && src_[end - 1] == '-';
        trim_next = !(end > inner && src_[end - 1] == '+');
        pos = end + 2;
        continue;
      }
      bool is_block = kind == '%';
      tokens_.push_back({is_block ? Tok::block_begin : Tok::var_begin, "", start});
      pos = lex_tag(inner, is_block, strip_next, trim_next);
    }
    tokens_.push_back({Tok::eof, "", src_.size()});
    return std::move(tokens_);
  }

 private:
  [[noreturn]] void fail_at(size_t pos, const std::string& what) {
    fail("chat template syntax error: {} at {}", what, describe_pos(src_, pos));
  }

  size_t find_tag(size_t pos) const {
    for (size_t k = pos; k + 1 < src_.size(); ++k) {
      if (src_[k] == '{' && (src_[k + 1] == '{' || src_[k + 1] == '%' || src_[k + 1] == '#'))
        return k;
    }
    return src_.size();
  }

  void emit_text(std::string text, size_t pos) {
    if (!text.empty()) tokens_.push_back({Tok::text, std::move(text), pos});
  }

  // Lexes expression tokens up to the closing delimiter; returns the offset after it.
  size_t lex_tag(size_t pos, bool is_block, bool& strip_next, bool& trim_next) {
    const char close = is_block ? '%' : '}';
    int depth = 0;
    size_t tag_start = pos;
    while (true) {
      while (pos < src_.size() && is_space(src_[pos])) ++pos;
      if (pos >= src_.size())
        fail_at(tag_start, is_block ? "unterminated '{%' tag" : "unterminated '{{' tag");
      char c = src_[pos];
      if (depth == 0) {
        size_t k = pos;
        char sign = '\0';
        if (c == '-' || c == '+') {
          sign = c;
          ++k;
        }
        if (k + 1 < src_.size() && src_[k] == close && src_[k + 1] == '}') {
          tokens_.push_back({is_block ? Tok::block_end : Tok::var_end, "", pos});
          strip_next = sign == '-';
          trim_next = is_block && sign != '+';
          return k + 2;
        }
      }
      if (is_name_start(c)) {
        size_t k = pos;
        while (k < src_.size() && (is_name_start(src_[k]) || is_digit(src_[k]))) ++k;
        tokens_.push_back({Tok::name, src_.substr(pos, k - pos), pos});
        pos = k;
      } else if (is_digit(c)) {
        pos = lex_number(pos);
      } else if (c == '\'' || c == '"') {
        pos = lex_string(pos);
      } else {
        static const char* const kOps[] = {"//", "**", "==", "!=", "<=", ">=", "+", "-", "*",
                                           "/",  "%",  "~",  "<",  ">",  "=",  "(", ")", "[",
                                           "]",  "{",  "}",  ".",  ",",  ":",  "|"};
        const char* found = nullptr;
        for (const char* op : kOps) {
          if (src_.compare(pos, std::char_traits<char>::length(op), op) == 0) {
            found = op;
            break;
          }
        }
        if (found == nullptr) fail_at(pos, fmt::format("unexpected character '{}'", c));
        std::string op = found;
        if (op == "(" || op == "[" || op == "{") ++depth;
        if ((op == ")" || op == "]" || op == "}") && depth > 0) --depth;
        tokens_.push_back({Tok::op, op, pos});
        pos += op.size();
      }
    }
  }

  size_t lex_number(size_t pos) {
    size_t k = pos;
    bool is_float = false;
    while (k < src_.size() && (is_digit(src_[k]) || src_[k] == '_')) ++k;
    if (k + 1 < src_.size() && src_[k] == '.' && is_digit(src_[k + 1])) {
      is_float = true;
      ++k;
      while (k < src_.size() && (is_digit(src_[k]) || src_[k] == '_')) ++k;
    }
    if (k < src_.size() && (src_[k] == 'e' || src_[k] == 'E')) {
      size_t e = k + 1;
      if (e < src_.size() && (src_[e] == '+' || src_[e] == '-')) ++e;
      if (e < src_.size() && is_digit(src_[e])) {
        is_float = true;
        k = e;
        while (k < src_.size() && is_digit(src_[k])) ++k;
      }
    }
    std::string digits;
    for (size_t j = pos; j < k; ++j)
      if (src_[j] != '_') digits += src_[j];
    Token t{is_float ? Tok::number : Tok::integer, digits, pos};
    if (is_float)
      t.fval = std::strtod(digits.c_str(), nullptr);
    else
      t.ival = std::strtoll(digits.c_str(), nullptr, 10);
    tokens_.push_back(t);
    return k;
  }

  size_t lex_string(size_t pos) {
    char q = src_[pos];
    std::string out;
    size_t k = pos + 1;
    while (true) {
      if (k >= src_.size()) fail_at(pos, "unterminated string literal");
      char c = src_[k];
      if (c == q) break;
      if (c != '\\') {
        out += c;
        ++k;
        continue;
      }
      if (k + 1 >= src_.size()) fail_at(pos, "unterminated string literal");
      char e = src_[k + 1];
      k += 2;
      switch (e) {
        case 'n':
          out += '\n';
          break;
        case 't':
          out += '\t';
          break;
        case 'r':
          out += '\r';
          break;
        case '0':
          out += '\0';
          break;
        case 'a':
          out += '\a';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'v':
          out += '\v';
          break;
        case '\\':
          out += '\\';
          break;
        case '\'':
          out += '\'';
          break;
        case '"':
          out += '"';
          break;
        case '\n':
          break;
        case 'x':
        case 'u':
        case 'U': {
          size_t n = e == 'x' ? 2 : e == 'u' ? 4 : 8;
          if (k + n > src_.size()) fail_at(pos, "truncated escape in string literal");
          std::string hex = src_.substr(k, n);
          char* end = nullptr;
          unsigned long cp = std::strtoul(hex.c_str(), &end, 16);
          if (end != hex.c_str() + n) fail_at(k, "bad escape in string literal");
          append_utf8(out, static_cast<uint32_t>(cp));
          k += n;
          break;
        }
        default:
          out += '\\';
          out += e;
      }
    }
    tokens_.push_back({Tok::string, std::move(out), pos});
    return k + 1;
  }

  const std::string& src_;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> lex_template(const std::string& source) {
  Lexer lexer(source);
  return lexer.run();
}

}  // namespace nf::jinja
