// The syntax tree of the Jinja subset (see chat_template.h), built by jinja_parser.cpp and run by
// jinja_eval.cpp. Every node keeps the byte offset of its construct in the template source so
// errors can name a line and column.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja_value.h"

namespace nf::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    literal,  // value
    name,     // name
    list,     // args = items; name "tuple" for (a, b)
    dict,     // args = key0, value0, key1, value1, ...
    attr,     // args[0].name
    item,     // args[0][args[1]]
    slice,    // args[0][args[1]:args[2]:args[3]] (any of 1..3 may be null)
    call,     // args[0](args[1..], kwargs)
    filter,   // args[0] | name(args[1..], kwargs)
    test,     // args[0] is [not] name(args[1..])
    unary,    // name in {"-", "+", "not"}, args[0]
    binary,   // args[0] name args[1]; name is an operator, "and", "or", "in" or "not in"
    cond,     // args[0] if args[1] else args[2] (args[2] may be null)
  };
  Kind kind;
  size_t pos = 0;
  Value value;
  std::string name;
  bool negated = false;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
};

struct Node;
using Body = std::vector<Node>;

struct Node {
  enum class Kind { text, output, if_block, for_block, set, break_loop, continue_loop, block };
  Node(Kind k, size_t p) : kind(k), pos(p) {}
  Kind kind;
  size_t pos;
  std::string text;  // text: the literal output
  ExprPtr expr;      // output: the expression; for: the iterable; set: the value
  std::vector<std::pair<ExprPtr, Body>> branches;  // if: (condition or null for else, body)
  std::vector<std::string> targets;  // for: loop variables; set: the name (+ attribute)
  ExprPtr filter;                    // for: optional `if` condition
  Body body;                         // for / block body
  Body else_body;                    // for: body when the iterable is empty
};

// Parses a template with transformers' settings (trim_blocks, lstrip_blocks, the trailing newline
// dropped). Throws nf::Error naming the construct and its line:column.
Body parse_template(const std::string& source);

// "line L, column C" for a byte offset into source.
std::string describe_pos(const std::string& source, size_t pos);

}  // namespace nf::jinja
