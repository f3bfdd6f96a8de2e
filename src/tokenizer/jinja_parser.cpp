// Recursive-descent parser for the Jinja subset, over jinja_lexer.h's tokens. Design note:
// expression precedence follows jinja2.parser:
// cond < or < and < not < compare < + - < ~ < * / // % < ** < unary, then postfix (. [] ())
// and filters / tests bind tighter than any binary operator.
#include <algorithm>

#include "common/status.h"
#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_lexer.h"

namespace nf::jinja {
namespace {

class Parser {
 public:
  Parser(const std::string& src, std::vector<Token> tokens) : src_(src), toks_(std::move(tokens)) {}

  Body parse_all() {
    std::string end_tag;
    Body body = parse_body({}, end_tag);
    return body;
  }

 private:
  [[noreturn]] void fail_at(size_t pos, const std::string& what) {
    fail("chat template syntax error: {} at {}", what, describe_pos(src_, pos));
  }

  const Token& peek(size_t ahead = 0) const {
    return toks_[std::min(i_ + ahead, toks_.size() - 1)];
  }
  const Token& next() {
    const Token& t = toks_[i_];
    if (i_ + 1 < toks_.size()) ++i_;
    return t;
  }
  bool at_op(const char* op) const { return peek().type == Tok::op && peek().text == op; }
  bool at_name(const char* name) const { return peek().type == Tok::name && peek().text == name; }
  bool accept_op(const char* op) {
    if (at_op(op)) {
      next();
      return true;
    }
    return false;
  }
  bool accept_name(const char* name) {
    if (at_name(name)) {
      next();
      return true;
    }
    return false;
  }
  void expect_op(const char* op) {
    if (!accept_op(op))
      fail_at(peek().pos, fmt::format("expected '{}' but found {}", op, describe(peek())));
  }
  std::string expect_name() {
    if (peek().type != Tok::name)
      fail_at(peek().pos, fmt::format("expected a name but found {}", describe(peek())));
    return next().text;
  }
  void expect_block_end() {
    if (peek().type != Tok::block_end)
      fail_at(peek().pos, fmt::format("expected '%}}' but found {}", describe(peek())));
    next();
  }
  static std::string describe(const Token& t) {
    switch (t.type) {
      case Tok::eof:
        return "end of template";
      case Tok::block_end:
        return "'%}'";
      case Tok::var_end:
        return "'}}'";
      case Tok::text:
        return "text";
      default:
        return "'" + t.text + "'";
    }
  }

  // Parses nodes until a block tag whose keyword is in `ends` (left unconsumed after the keyword;
  // its name is stored in end_tag). With ends empty, parses to the end of the template.
  Body parse_body(const std::vector<std::string>& ends, std::string& end_tag) {
    Body body;
    while (true) {
      const Token& t = peek();
      if (t.type == Tok::eof) {
        if (!ends.empty()) fail_at(t.pos, fmt::format("missing '{{% {} %}}'", ends.back()));
        return body;
      }
      if (t.type == Tok::text) {
        Node n{Node::Kind::text, t.pos};
        n.text = next().text;
        body.push_back(std::move(n));
      } else if (t.type == Tok::var_begin) {
        Node n{Node::Kind::output, next().pos};
        n.expr = parse_expr();
        if (peek().type != Tok::var_end)
          fail_at(peek().pos, fmt::format("expected '}}}}' but found {}", describe(peek())));
        next();
        body.push_back(std::move(n));
      } else {
        size_t tag_pos = next().pos;
        const Token& kw = peek();
        if (kw.type != Tok::name) fail_at(kw.pos, "expected a tag name");
        for (const auto& e : ends) {
          if (kw.text == e) {
            end_tag = next().text;
            return body;
          }
        }
        body.push_back(parse_statement(tag_pos));
      }
    }
  }

  Node parse_statement(size_t tag_pos) {
    const Token& kw = next();
    const std::string& name = kw.text;
    if (name == "if") return parse_if(tag_pos);
    if (name == "for") return parse_for(tag_pos);
    if (name == "set") return parse_set(tag_pos);
    if (name == "break" || name == "continue") {
      expect_block_end();
      return Node{name == "break" ? Node::Kind::break_loop : Node::Kind::continue_loop, tag_pos};
    }
    if (name == "generation") {
      expect_block_end();
      Node n{Node::Kind::block, tag_pos};
      std::string end;
      n.body = parse_body({"endgeneration"}, end);
      expect_block_end();
      return n;
    }
    if (name.starts_with("end") || name == "elif" || name == "else") {
      fail_at(kw.pos, fmt::format("unexpected '{{% {} %}}'", name));
    }
    fail_at(kw.pos, fmt::format("unsupported tag '{}'", name));
  }

  Node parse_if(size_t tag_pos) {
    Node n{Node::Kind::if_block, tag_pos};
    ExprPtr cond = parse_expr();
    while (true) {
      expect_block_end();
      std::string end;
      Body body = parse_body({"elif", "else", "endif"}, end);
      n.branches.emplace_back(std::move(cond), std::move(body));
      if (end == "endif") break;
      if (end == "else") {
        expect_block_end();
        Body else_body = parse_body({"endif"}, end);
        n.branches.emplace_back(nullptr, std::move(else_body));
        break;
      }
      cond = parse_expr();
    }
    expect_block_end();
    return n;
  }

  Node parse_for(size_t tag_pos) {
    Node n{Node::Kind::for_block, tag_pos};
    n.targets.push_back(expect_name());
    while (accept_op(",")) n.targets.push_back(expect_name());
    if (!accept_name("in")) fail_at(peek().pos, "expected 'in' in for loop");
    n.expr = parse_or();
    if (accept_name("if")) n.filter = parse_or();
    if (at_name("recursive")) fail_at(peek().pos, "unsupported 'recursive' for loop");
    expect_block_end();
    std::string end;
    n.body = parse_body({"else", "endfor"}, end);
    if (end == "else") {
      expect_block_end();
      n.else_body = parse_body({"endfor"}, end);
    }
    expect_block_end();
    return n;
  }

  Node parse_set(size_t tag_pos) {
    Node n{Node::Kind::set, tag_pos};
    n.targets.push_back(expect_name());
    if (accept_op(".")) n.targets.push_back(expect_name());
    if (!at_op("=")) fail_at(peek().pos, "unsupported 'set' form (block set or tuple assignment)");
    next();
    n.expr = parse_expr();
    expect_block_end();
    return n;
  }

  ExprPtr make(Expr::Kind kind, size_t pos) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->pos = pos;
    return e;
  }
  ExprPtr make_binary(const std::string& op, size_t pos, ExprPtr a, ExprPtr b) {
    auto e = make(Expr::Kind::binary, pos);
    e->name = op;
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return e;
  }

  ExprPtr parse_expr() {
    ExprPtr value = parse_or();
    while (at_name("if")) {
      size_t pos = next().pos;
      auto e = make(Expr::Kind::cond, pos);
      e->args.push_back(std::move(value));
      e->args.push_back(parse_or());
      e->args.push_back(accept_name("else") ? parse_expr() : nullptr);
      value = std::move(e);
    }
    return value;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (at_name("or")) {
      size_t pos = next().pos;
      left = make_binary("or", pos, std::move(left), parse_and());
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (at_name("and")) {
      size_t pos = next().pos;
      left = make_binary("and", pos, std::move(left), parse_not());
    }
    return left;
  }

  ExprPtr parse_not() {
    if (at_name("not")) {
      auto e = make(Expr::Kind::unary, next().pos);
      e->name = "not";
      e->args.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
    ExprPtr left = parse_math1();
    while (true) {
      const Token& t = peek();
      std::string op;
      if (t.type == Tok::op && (t.text == "==" || t.text == "!=" || t.text == "<" ||
                                t.text == ">" || t.text == "<=" || t.text == ">=")) {
        op = t.text;
        next();
      } else if (at_name("in")) {
        op = "in";
        next();
      } else if (at_name("not") && peek(1).type == Tok::name && peek(1).text == "in") {
        op = "not in";
        next();
        next();
      } else {
        return left;
      }
      left = make_binary(op, t.pos, std::move(left), parse_math1());
    }
  }

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (at_op("+") || at_op("-")) {
      const Token& t = next();
      left = make_binary(t.text, t.pos, std::move(left), parse_concat());
    }
    return left;
  }

  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (at_op("~")) {
      size_t pos = next().pos;
      left = make_binary("~", pos, std::move(left), parse_math2());
    }
    return left;
  }

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (at_op("*") || at_op("/") || at_op("//") || at_op("%")) {
      const Token& t = next();
      left = make_binary(t.text, t.pos, std::move(left), parse_pow());
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary();
    while (at_op("**")) {
      size_t pos = next().pos;
      left = make_binary("**", pos, std::move(left), parse_unary());
    }
    return left;
  }

  // As jinja2: `-x | f` is `(-x) | f`; the operand of a unary minus takes no filters itself.
  ExprPtr parse_unary(bool with_filters = true) {
    ExprPtr e;
    if (at_op("-") || at_op("+")) {
      const Token& t = next();
      e = make(Expr::Kind::unary, t.pos);
      e->name = t.text;
      e->args.push_back(parse_unary(false));
    } else {
      e = parse_postfix(parse_primary());
    }
    return with_filters ? parse_filters(std::move(e)) : std::move(e);
  }

  ExprPtr parse_primary() {
    const Token& t = peek();
    switch (t.type) {
      case Tok::name: {
        next();
        auto e = make(Expr::Kind::literal, t.pos);
        if (t.text == "true" || t.text == "True")
          e->value = Value::boolean(true);
        else if (t.text == "false" || t.text == "False")
          e->value = Value::boolean(false);
        else if (t.text == "none" || t.text == "None")
          e->value = Value::none();
        else {
          e->kind = Expr::Kind::name;
          e->name = t.text;
        }
        return e;
      }
      case Tok::string: {
        auto e = make(Expr::Kind::literal, t.pos);
        std::string s;
        while (peek().type == Tok::string) s += next().text;
        e->value = Value::string(std::move(s));
        return e;
      }
      case Tok::integer:
        next();
        {
          auto e = make(Expr::Kind::literal, t.pos);
          e->value = Value::integer(t.ival);
          return e;
        }
      case Tok::number:
        next();
        {
          auto e = make(Expr::Kind::literal, t.pos);
          e->value = Value::number(t.fval);
          return e;
        }
      case Tok::op:
        if (t.text == "(") {
          next();
          auto e = make(Expr::Kind::list, t.pos);
          e->name = "tuple";
          if (accept_op(")")) return e;
          ExprPtr first = parse_expr();
          if (!at_op(",")) {
            expect_op(")");
            return first;
          }
          e->args.push_back(std::move(first));
          while (accept_op(",")) {
            if (at_op(")")) break;
            e->args.push_back(parse_expr());
          }
          expect_op(")");
          return e;
        }
        if (t.text == "[") {
          next();
          auto e = make(Expr::Kind::list, t.pos);
          while (!at_op("]")) {
            e->args.push_back(parse_expr());
            if (!accept_op(",")) break;
          }
          expect_op("]");
          return e;
        }
        if (t.text == "{") {
          next();
          auto e = make(Expr::Kind::dict, t.pos);
          while (!at_op("}")) {
            e->args.push_back(parse_expr());
            expect_op(":");
            e->args.push_back(parse_expr());
            if (!accept_op(",")) break;
          }
          expect_op("}");
          return e;
        }
        break;
      default:
        break;
    }
    fail_at(t.pos, fmt::format("unexpected {}", describe(t)));
  }

  void parse_call_args(Expr& e) {
    expect_op("(");
    while (!at_op(")")) {
      if (peek().type == Tok::name && peek(1).type == Tok::op && peek(1).text == "=") {
        std::string key = next().text;
        next();
        e.kwargs.emplace_back(std::move(key), parse_expr());
      } else {
        if (!e.kwargs.empty()) fail_at(peek().pos, "positional argument after keyword argument");
        e.args.push_back(parse_expr());
      }
      if (!accept_op(",")) break;
    }
    expect_op(")");
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      if (at_op(".")) {
        size_t pos = next().pos;
        auto a = make(Expr::Kind::attr, pos);
        if (peek().type == Tok::integer)
          a->name = next().text;
        else
          a->name = expect_name();
        a->args.push_back(std::move(e));
        e = std::move(a);
      } else if (at_op("[")) {
        size_t pos = next().pos;
        ExprPtr parts[3];
        bool is_slice = false;
        for (int k = 0; k < 3; ++k) {
          if (!at_op(":") && !at_op("]")) parts[k] = parse_expr();
          if (k < 2 && accept_op(":")) {
            is_slice = true;
            continue;
          }
          break;
        }
        expect_op("]");
        auto s = make(is_slice ? Expr::Kind::slice : Expr::Kind::item, pos);
        s->args.push_back(std::move(e));
        if (is_slice) {
          for (auto& p : parts) s->args.push_back(std::move(p));
        } else {
          if (!parts[0]) fail_at(pos, "empty subscript");
          s->args.push_back(std::move(parts[0]));
        }
        e = std::move(s);
      } else if (at_op("(")) {
        auto c = make(Expr::Kind::call, peek().pos);
        c->args.push_back(std::move(e));
        parse_call_args(*c);
        e = std::move(c);
      } else {
        return e;
      }
    }
  }

  ExprPtr parse_filters(ExprPtr e) {
    while (true) {
      if (at_op("|")) {
        next();
        auto f = make(Expr::Kind::filter, peek().pos);
        f->name = expect_name();
        f->args.push_back(std::move(e));
        if (at_op("(")) parse_call_args(*f);
        e = std::move(f);
      } else if (at_name("is")) {
        next();
        auto t = make(Expr::Kind::test, peek().pos);
        t->negated = accept_name("not");
        t->name = expect_name();
        t->args.push_back(std::move(e));
        if (at_op("(")) {
          parse_call_args(*t);
        } else if (peek().type == Tok::string || peek().type == Tok::integer ||
                   peek().type == Tok::number) {
          t->args.push_back(parse_primary());
        }
        e = std::move(t);
      } else {
        return e;
      }
    }
  }

  const std::string& src_;
  std::vector<Token> toks_;
  size_t i_ = 0;
};

}  // namespace

std::string describe_pos(const std::string& source, size_t pos) {
  size_t line = 1, col = 1;
  for (size_t k = 0; k < pos && k < source.size(); ++k) {
    if (source[k] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return fmt::format("line {}, column {}", line, col);
}

Body parse_template(const std::string& source) {
  Parser parser(source, lex_template(source));
  return parser.parse_all();
}

}  // namespace nf::jinja
