// The evaluator. Design note on scoping (as Jinja): the template's top level is one frame;
// every for loop pushes a frame, fresh for each iteration, so `set` inside a loop writes to
// that frame and is gone at the next iteration and after `endfor`. `if` blocks do not make frames.
// Namespaces are reference values, so `set ns.x` inside a loop is seen outside it.
#include "tokenizer/jinja_eval.h"

#include <cmath>
#include <ctime>

#include "common/status.h"

namespace nf::jinja {
namespace {

enum class Flow { normal, break_loop, continue_loop };

class Evaluator {
 public:
  Evaluator(const std::string& source, const Vars& globals) : src_(source) {
    frames_.push_back(globals);
  }

  std::string run(const Body& body) {
    exec(body);
    return std::move(out_);
  }

 private:
  [[noreturn]] void fail_at(size_t pos, const std::string& what) {
    fail("chat template error: {} at {}", what, describe_pos(src_, pos));
  }

  Value lookup(const std::string& name) const {
    for (auto it = frames_.rbegin(); it != frames_.rend(); ++it) {
      auto f = it->find(name);
      if (f != it->end()) return f->second;
    }
    return Value();
  }

  Flow exec(const Body& body) {
    for (const Node& n : body) {
      Flow f = exec(n);
      if (f != Flow::normal) return f;
    }
    return Flow::normal;
  }

  Flow exec(const Node& n) {
    switch (n.kind) {
      case Node::Kind::text:
        out_ += n.text;
        return Flow::normal;
      case Node::Kind::output:
        out_ += to_str(eval(*n.expr));
        return Flow::normal;
      case Node::Kind::if_block:
        for (const auto& [cond, body] : n.branches) {
          if (!cond || eval(*cond).truthy()) return exec(body);
        }
        return Flow::normal;
      case Node::Kind::for_block:
        exec_for(n);
        return Flow::normal;
      case Node::Kind::set:
        exec_set(n);
        return Flow::normal;
      case Node::Kind::break_loop:
        return Flow::break_loop;
      case Node::Kind::continue_loop:
        return Flow::continue_loop;
      case Node::Kind::block:
        return exec(n.body);
    }
    return Flow::normal;
  }

  void exec_set(const Node& n) {
    Value v = eval(*n.expr);
    if (n.targets.size() == 1) {
      frames_.back()[n.targets[0]] = std::move(v);
      return;
    }
    Value ns = lookup(n.targets[0]);
    if (ns.kind != Value::Kind::ns) {
      fail_at(n.pos,
              fmt::format("cannot assign attribute '{}' on {} '{}' (only namespace() objects)",
                          n.targets[1], kind_name(ns.kind), n.targets[0]));
    }
    for (auto& [k, val] : *ns.dict) {
      if (k == n.targets[1]) {
        val = std::move(v);
        return;
      }
    }
    ns.dict->emplace_back(n.targets[1], std::move(v));
  }

  List iterate(const Value& v, size_t pos) {
    switch (v.kind) {
      case Value::Kind::list:
      case Value::Kind::dict:
      case Value::Kind::string:
      case Value::Kind::undefined:
        return as_list(v);
      default:
        fail_at(pos, fmt::format("cannot iterate over a {}", kind_name(v.kind)));
    }
  }


  void bind_targets(const Node& n, const Value& item) {
    auto& frame = frames_.back();
    if (n.targets.size() == 1) {
      frame[n.targets[0]] = item;
      return;
    }
    if (!item.is_list() || item.list->size() != n.targets.size()) {
      fail_at(n.pos, fmt::format("cannot unpack {} into {} loop variables", to_repr(item),
                                 n.targets.size()));
    }
    for (size_t k = 0; k < n.targets.size(); ++k) frame[n.targets[k]] = (*item.list)[k];
  }

  void exec_for(const Node& n) {
    List items = iterate(eval(*n.expr), n.expr->pos);
    frames_.emplace_back();
    if (n.filter) {
      List kept;
      for (const Value& item : items) {
        bind_targets(n, item);
        if (eval(*n.filter).truthy()) kept.push_back(item);
      }
      items = std::move(kept);
    }
    const auto len = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < len; ++k) {
      frames_.back().clear();
      bind_targets(n, items[k]);
      Dict loop{{"index", Value::integer(k + 1)},
                {"index0", Value::integer(k)},
                {"revindex", Value::integer(len - k)},
                {"revindex0", Value::integer(len - k - 1)},
                {"first", Value::boolean(k == 0)},
                {"last", Value::boolean(k == len - 1)},
                {"length", Value::integer(len)},
                {"previtem", k > 0 ? items[k - 1] : Value()},
                {"nextitem", k + 1 < len ? items[k + 1] : Value()}};
      frames_.back()["loop"] = Value::make_dict(std::move(loop));
      if (exec(n.body) == Flow::break_loop) break;
    }
    frames_.pop_back();
    if (items.empty()) exec(n.else_body);
  }

  CallArgs eval_args(const Expr& e, size_t first) {
    CallArgs a;
    for (size_t k = first; k < e.args.size(); ++k) a.args.push_back(eval(*e.args[k]));
    for (const auto& [key, ex] : e.kwargs) a.kwargs.emplace_back(key, eval(*ex));
    return a;
  }

  Value eval(const Expr& e) {
    switch (e.kind) {
      case Expr::Kind::literal:
        return e.value;
      case Expr::Kind::name:
        return lookup(e.name);
      case Expr::Kind::list: {
        List items;
        for (const auto& a : e.args) items.push_back(eval(*a));
        Value v = Value::make_list(std::move(items));
        v.tuple = e.name == "tuple";
        return v;
      }
      case Expr::Kind::dict: {
        Dict items;
        for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
          Value key = eval(*e.args[k]);
          if (!key.is_string()) fail_at(e.args[k]->pos, "dict keys must be strings");
          Value val = eval(*e.args[k + 1]);
          bool replaced = false;
          for (auto& kv : items) {
            if (kv.first == key.s) {
              kv.second = val;
              replaced = true;
            }
          }
          if (!replaced) items.emplace_back(key.s, std::move(val));
        }
        return Value::make_dict(std::move(items));
      }
      case Expr::Kind::attr: {
        Value obj = eval(*e.args[0]);
        if (obj.is_undefined())
          fail_at(e.pos, fmt::format("attribute '{}' of an undefined value", e.name));
        if (const Value* v = obj.find(e.name)) return *v;
        if (obj.is_list() && !e.name.empty() &&
            std::isdigit(static_cast<unsigned char>(e.name[0]))) {
          return subscript(obj, Value::integer(std::stoll(e.name)));
        }
        return Value();
      }
      case Expr::Kind::item: {
        Value obj = eval(*e.args[0]);
        Value key = eval(*e.args[1]);
        if (obj.is_undefined())
          fail_at(e.pos, fmt::format("subscript {} of an undefined value", to_repr(key)));
        return guarded(e, [&] { return subscript(obj, key); });
      }
      case Expr::Kind::slice: {
        Value obj = eval(*e.args[0]);
        Value parts[3];
        const Value* ptrs[3] = {nullptr, nullptr, nullptr};
        for (int k = 0; k < 3; ++k) {
          if (e.args[k + 1]) {
            parts[k] = eval(*e.args[k + 1]);
            ptrs[k] = &parts[k];
          }
        }
        return guarded(e, [&] { return slice_value(obj, ptrs[0], ptrs[1], ptrs[2]); });
      }
      case Expr::Kind::call:
        return eval_call(e);
      case Expr::Kind::filter: {
        Value input = eval(*e.args[0]);
        CallArgs args = eval_args(e, 1);
        return guarded(
            e, [&] { return apply_filter(e.name, input, args); }, "filter '" + e.name + "'");
      }
      case Expr::Kind::test: {
        Value input = eval(*e.args[0]);
        CallArgs args = eval_args(e, 1);
        bool r = guarded(
            e, [&] { return apply_test(e.name, input, args); }, "test '" + e.name + "'");
        return Value::boolean(r != e.negated);
      }
      case Expr::Kind::unary: {
        Value v = eval(*e.args[0]);
        if (e.name == "not") return Value::boolean(!v.truthy());
        if (v.kind == Value::Kind::number) return Value::number(e.name == "-" ? -v.f : v.f);
        if (v.is_numeric()) return Value::integer(e.name == "-" ? -v.as_double() : v.as_double());
        fail_at(e.pos,
                fmt::format("bad operand type for unary '{}': {}", e.name, kind_name(v.kind)));
      }
      case Expr::Kind::binary:
        return eval_binary(e);
      case Expr::Kind::cond:
        if (eval(*e.args[1]).truthy()) return eval(*e.args[0]);
        return e.args[2] ? eval(*e.args[2]) : Value();
    }
    return Value();
  }

  template <typename Fn>
  auto guarded(const Expr& e, Fn&& fn, const std::string& what = "") -> decltype(fn()) {
    try {
      return fn();
    } catch (const Error& err) {
      if (what.empty()) fail_at(e.pos, err.what());
      fail_at(e.pos, fmt::format("{}: {}", what, err.what()));
    }
  }

  Value eval_call(const Expr& e) {
    const Expr& callee = *e.args[0];
    if (callee.kind == Expr::Kind::attr) {
      Value obj = eval(*callee.args[0]);
      CallArgs args = eval_args(e, 1);
      bool found = false;
      Value r = guarded(
          e, [&] { return call_method(obj, callee.name, args, found); },
          "method '" + callee.name + "'");
      if (!found)
        fail_at(callee.pos,
                fmt::format("unsupported method '{}' on {}", callee.name, kind_name(obj.kind)));
      return r;
    }
    if (callee.kind != Expr::Kind::name)
      fail_at(e.pos, "only named functions and methods can be called");
    CallArgs args = eval_args(e, 1);
    const std::string& fn = callee.name;
    if (fn == "raise_exception") {
      throw Error(args.args.empty() ? std::string("raise_exception() called")
                                    : to_str(args.args[0]));
    }
    if (fn == "namespace" || fn == "dict") {
      Dict items;
      if (!args.args.empty()) {
        if (!args.args[0].is_mapping()) fail_at(e.pos, fmt::format("{}() takes a mapping", fn));
        items = *args.args[0].dict;
      }
      for (auto& kv : args.kwargs) {
        bool replaced = false;
        for (auto& it : items) {
          if (it.first == kv.first) {
            it.second = kv.second;
            replaced = true;
          }
        }
        if (!replaced) items.push_back(kv);
      }
      return fn == "dict" ? Value::make_dict(std::move(items))
                          : Value::make_namespace(std::move(items));
    }
    if (fn == "strftime_now") {
      if (args.args.empty() || !args.args[0].is_string())
        fail_at(e.pos, "strftime_now() takes a format string");
      std::time_t now = std::time(nullptr);
      std::tm tm{};
      localtime_r(&now, &tm);
      char buf[256];
      size_t n = std::strftime(buf, sizeof buf, args.args[0].s.c_str(), &tm);
      return Value::string(std::string(buf, n));
    }
    if (fn == "range") {
      int64_t start = 0, stop = 0, step = 1;
      auto as_int = [&](const Value& v) {
        if (v.kind != Value::Kind::integer) fail_at(e.pos, "range() takes integers");
        return v.i;
      };
      if (args.args.size() == 1)
        stop = as_int(args.args[0]);
      else if (args.args.size() >= 2) {
        start = as_int(args.args[0]);
        stop = as_int(args.args[1]);
      }
      if (args.args.size() >= 3) step = as_int(args.args[2]);
      if (step == 0 || args.args.empty()) fail_at(e.pos, "bad range() arguments");
      List items;
      for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step)
        items.push_back(Value::integer(k));
      return Value::make_list(std::move(items));
    }
    Value v = lookup(fn);
    if (v.is_undefined())
      fail_at(callee.pos, fmt::format("unsupported or undefined function '{}'", fn));
    fail_at(callee.pos, fmt::format("'{}' is a {} and cannot be called", fn, kind_name(v.kind)));
  }

  Value eval_binary(const Expr& e) {
    const std::string& op = e.name;
    if (op == "and") {
      Value a = eval(*e.args[0]);
      return a.truthy() ? eval(*e.args[1]) : a;
    }
    if (op == "or") {
      Value a = eval(*e.args[0]);
      return a.truthy() ? a : eval(*e.args[1]);
    }
    Value a = eval(*e.args[0]);
    Value b = eval(*e.args[1]);
    if (op == "==") return Value::boolean(values_equal(a, b));
    if (op == "!=") return Value::boolean(!values_equal(a, b));
    if (op == "~") return Value::string(to_str(a) + to_str(b));
    if (op == "in" || op == "not in") {
      bool r = guarded(e, [&] { return contains(b, a); });
      return Value::boolean(op == "in" ? r : !r);
    }
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      int c = 0;
      if (a.is_numeric() && b.is_numeric())
        c = a.as_double() < b.as_double() ? -1 : a.as_double() > b.as_double();
      else if (a.is_string() && b.is_string())
        c = a.s.compare(b.s) < 0 ? -1 : a.s.compare(b.s) > 0;
      else
        fail_at(e.pos, fmt::format("'{}' not supported between {} and {}", op, kind_name(a.kind),
                                   kind_name(b.kind)));
      if (op == "<") return Value::boolean(c < 0);
      if (op == ">") return Value::boolean(c > 0);
      if (op == "<=") return Value::boolean(c <= 0);
      return Value::boolean(c >= 0);
    }
    if (op == "+") {
      if (a.is_string() && b.is_string()) return Value::string(a.s + b.s);
      if (a.is_list() && b.is_list()) {
        List items = *a.list;
        items.insert(items.end(), b.list->begin(), b.list->end());
        return Value::make_list(std::move(items));
      }
    }
    if (a.is_numeric() && b.is_numeric()) return arithmetic(e, a, b);
    if (op == "*" && a.is_string() && b.kind == Value::Kind::integer) {
      std::string s;
      for (int64_t k = 0; k < b.i; ++k) s += a.s;
      return Value::string(std::move(s));
    }
    fail_at(e.pos, fmt::format("unsupported operand types for '{}': {} and {}", op,
                               kind_name(a.kind), kind_name(b.kind)));
  }

  Value arithmetic(const Expr& e, const Value& a, const Value& b) {
    const std::string& op = e.name;
    bool ints = a.kind != Value::Kind::number && b.kind != Value::Kind::number;
    double x = a.as_double(), y = b.as_double();
    if (op == "/") {
      if (y == 0) fail_at(e.pos, "division by zero");
      return Value::number(x / y);
    }
    if (ints) {
      int64_t p = a.kind == Value::Kind::boolean ? a.b : a.i,
              q = b.kind == Value::Kind::boolean ? b.b : b.i;
      if (op == "+") return Value::integer(p + q);
      if (op == "-") return Value::integer(p - q);
      if (op == "*") return Value::integer(p * q);
      if (op == "**") return Value::integer(static_cast<int64_t>(std::pow(p, q)));
      if (q == 0) fail_at(e.pos, "division by zero");
      int64_t m = p % q;
      if (m != 0 && ((m < 0) != (q < 0))) m += q;
      if (op == "%") return Value::integer(m);
      return Value::integer((p - m) / q);
    }
    if (op == "+") return Value::number(x + y);
    if (op == "-") return Value::number(x - y);
    if (op == "*") return Value::number(x * y);
    if (op == "**") return Value::number(std::pow(x, y));
    if (y == 0) fail_at(e.pos, "division by zero");
    if (op == "%") return Value::number(x - std::floor(x / y) * y);
    return Value::number(std::floor(x / y));
  }

  static bool contains(const Value& hay, const Value& needle) {
    switch (hay.kind) {
      case Value::Kind::string:
        if (!needle.is_string()) fail("'in <string>' requires a string on the left");
        return hay.s.find(needle.s) != std::string::npos;
      case Value::Kind::list:
        for (const Value& v : *hay.list) {
          if (values_equal(v, needle)) return true;
        }
        return false;
      case Value::Kind::dict:
      case Value::Kind::ns:
        return needle.is_string() && hay.find(needle.s) != nullptr;
      case Value::Kind::undefined:
        return false;
      default:
        fail("argument of type {} is not iterable", kind_name(hay.kind));
    }
  }

  const std::string& src_;
  std::vector<Vars> frames_;
  std::string out_;
};

void check_expr(const Expr* e, const std::string& source) {
  if (e == nullptr) return;
  if (e->kind == Expr::Kind::filter && !filter_supported(e->name)) {
    fail("chat template: unsupported filter '{}' at {}", e->name, describe_pos(source, e->pos));
  }
  if (e->kind == Expr::Kind::test && !test_supported(e->name)) {
    fail("chat template: unsupported test '{}' at {}", e->name, describe_pos(source, e->pos));
  }
  for (const auto& a : e->args) check_expr(a.get(), source);
  for (const auto& kv : e->kwargs) check_expr(kv.second.get(), source);
}

}  // namespace

void check_supported(const Body& body, const std::string& source) {
  for (const Node& n : body) {
    check_expr(n.expr.get(), source);
    check_expr(n.filter.get(), source);
    for (const auto& [cond, b] : n.branches) {
      check_expr(cond.get(), source);
      check_supported(b, source);
    }
    check_supported(n.body, source);
    check_supported(n.else_body, source);
  }
}

const Value* CallArgs::kwarg(const std::string& name) const {
  for (const auto& [k, v] : kwargs) {
    if (k == name) return &v;
  }
  return nullptr;
}

const Value* CallArgs::get(size_t index, const std::string& name) const {
  if (index < args.size()) return &args[index];
  return kwarg(name);
}

std::string render_template(const Body& body, const std::string& source, const Vars& globals) {
  Evaluator ev(source, globals);
  return ev.run(body);
}

}  // namespace nf::jinja
