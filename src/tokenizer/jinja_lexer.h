// Lexer of the Jinja subset: turns a template into one token stream (text, tag delimiters,
// expression tokens), applying whitespace control as Jinja's lexer does with transformers'
// settings: `{%-`/`-%}` strip all adjacent whitespace, trim_blocks drops the first newline after
// a block or comment tag, lstrip_blocks drops spaces and tabs from the start of a line up to a
// block or comment tag. Comments produce no tokens.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace nf::jinja {

enum class Tok {
  text,
  var_begin,
  var_end,
  block_begin,
  block_end,
  name,
  string,
  integer,
  number,
  op,
  eof
};

struct Token {
  Token(Tok t, std::string s, size_t p) : type(t), text(std::move(s)), pos(p) {}
  Tok type;
  std::string text;
  size_t pos;
  int64_t ival = 0;
  double fval = 0.0;
};

// Throws nf::Error naming the position on an unterminated tag, string or comment, or a stray
// character.
std::vector<Token> lex_template(const std::string& source);

}  // namespace nf::jinja
