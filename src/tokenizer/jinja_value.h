// Values of the Jinja subset used by chat templates (see chat_template.h). Python semantics:
// truthiness, equality, str() and json.dumps() follow what transformers' Jinja environment does.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace nf::jinja {

struct Value;
using List = std::vector<Value>;
// Insertion-ordered, string keys only (as Python dicts built by templates).
using Dict = std::vector<std::pair<std::string, Value>>;

struct Value {
  enum class Kind { undefined, none, boolean, integer, number, string, list, dict, ns };

  Kind kind = Kind::undefined;
  bool b = false;
  int64_t i = 0;
  double f = 0.0;
  std::string s;
  bool tuple = false;          // a list that prints as a Python tuple
  std::shared_ptr<List> list;  // immutable once built (sandboxed templates cannot mutate lists)
  std::shared_ptr<Dict> dict;  // for Kind::ns this is shared and mutable through `set ns.x`

  static Value none() { return make(Kind::none); }
  static Value boolean(bool v) {
    Value r = make(Kind::boolean);
    r.b = v;
    return r;
  }
  static Value integer(int64_t v) {
    Value r = make(Kind::integer);
    r.i = v;
    return r;
  }
  static Value number(double v) {
    Value r = make(Kind::number);
    r.f = v;
    return r;
  }
  static Value string(std::string v) {
    Value r = make(Kind::string);
    r.s = std::move(v);
    return r;
  }
  static Value make_list(List v);
  static Value make_dict(Dict v);
  static Value make_namespace(Dict v);
  static Value from_json(const nlohmann::json& j);

  bool is_undefined() const { return kind == Kind::undefined; }
  bool is_none() const { return kind == Kind::none; }
  bool is_string() const { return kind == Kind::string; }
  bool is_list() const { return kind == Kind::list; }
  bool is_mapping() const { return kind == Kind::dict || kind == Kind::ns; }
  bool is_numeric() const {
    return kind == Kind::integer || kind == Kind::number || kind == Kind::boolean;
  }
  double as_double() const {
    return kind == Kind::number ? f : static_cast<double>(kind == Kind::boolean ? b : i);
  }

  // Python truthiness (undefined is false).
  bool truthy() const;
  // Looks a key up in a dict or namespace; nullptr when absent.
  const Value* find(const std::string& key) const;

 private:
  static Value make(Kind k) {
    Value r;
    r.kind = k;
    return r;
  }
};

const char* kind_name(Value::Kind k);
// Python ==.
bool values_equal(const Value& a, const Value& b);
// str(v) as Jinja renders it: undefined -> "", None -> "None", True -> "True", lists as repr.
std::string to_str(const Value& v);
// repr(v) (strings quoted) as Python prints inside containers.
std::string to_repr(const Value& v);
// json.dumps(v, ensure_ascii=False, indent=indent) (indent < 0: no indent), optionally sort_keys.
std::string to_json(const Value& v, int indent, bool sort_keys);
// Python's repr of a float ("1.0", "0.1", "1e+20").
std::string float_repr(double d);

}  // namespace nf::jinja
