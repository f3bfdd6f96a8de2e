// Evaluation of a parsed Jinja template (jinja_ast.h) and its built-in filters, tests, methods and
// functions.
#pragma once

#include <string>
#include <unordered_map>
#include <vector>

#include "tokenizer/jinja_ast.h"

namespace nf::jinja {

using Vars = std::unordered_map<std::string, Value>;

// Renders `body` with `globals` as the top-level variables. source is the template text, for
// error positions. Throws nf::Error on runtime errors (naming the construct and position) and
// with the message of raise_exception().
std::string render_template(const Body& body, const std::string& source, const Vars& globals);

// Whether a filter / test name is implemented (checked when a template is compiled).
bool filter_supported(const std::string& name);
bool test_supported(const std::string& name);
// Checks every filter and test in the tree; throws nf::Error naming the first unsupported one.
void check_supported(const Body& body, const std::string& source);

struct CallArgs {
  std::vector<Value> args;
  std::vector<std::pair<std::string, Value>> kwargs;
  const Value* kwarg(const std::string& name) const;
  // Positional `index` or keyword `name`; nullptr when neither was passed.
  const Value* get(size_t index, const std::string& name) const;
};

// The built-ins (jinja_builtins.cpp). Each throws nf::Error with a message (no position) on
// misuse; the evaluator adds the position.
Value apply_filter(const std::string& name, const Value& input, const CallArgs& args);
bool apply_test(const std::string& name, const Value& input, const CallArgs& args);
// Calls a method of a string or dict value; found = false when the method does not exist.
Value call_method(const Value& obj, const std::string& name, const CallArgs& args, bool& found);
// Python-style subscript: list[int], str[int], dict[key]; undefined when missing.
// The items a for loop or a list filter sees: a list's items, a dict's keys, a string's UTF-8
// characters, nothing for undefined. Throws nf::Error for other kinds.
List as_list(const Value& v);
Value subscript(const Value& obj, const Value& key);
Value slice_value(const Value& obj, const Value* start, const Value* stop, const Value* step);

}  // namespace nf::jinja
