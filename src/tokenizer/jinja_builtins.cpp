// Built-in filters, tests and methods of the Jinja subset, with Python / transformers semantics
// (tojson is transformers' json.dumps(ensure_ascii=False) override, not Jinja's HTML-safe one).
#include <algorithm>
#include <cctype>

#include "common/status.h"
#include "tokenizer/jinja_eval.h"

namespace nf::jinja {
namespace {

bool is_py_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string strip(const std::string& s, const Value* chars, bool left, bool right) {
  auto strip_char = [&](char c) {
    if (chars != nullptr && chars->is_string()) return chars->s.find(c) != std::string::npos;
    return is_py_space(c);
  };
  size_t b = 0, e = s.size();
  if (left)
    while (b < e && strip_char(s[b])) ++b;
  if (right)
    while (e > b && strip_char(s[e - 1])) --e;
  return s.substr(b, e - b);
}

std::string map_ascii(std::string s, int (*fn)(int)) {
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x80)
      c = static_cast<char>(fn(static_cast<unsigned char>(c)));
  }
  return s;
}

bool is_alpha(char c) {
  return std::isalpha(static_cast<unsigned char>(c)) || static_cast<unsigned char>(c) >= 0x80;
}

// Python str.title(): a letter after a non-letter is upper-cased, other letters lower-cased.
std::string title(const std::string& s) {
  std::string out = s;
  bool prev_alpha = false;
  for (char& c : out) {
    if (static_cast<unsigned char>(c) < 0x80 && std::isalpha(static_cast<unsigned char>(c))) {
      c = static_cast<char>(prev_alpha ? std::tolower(c) : std::toupper(c));
    }
    prev_alpha = is_alpha(c);
  }
  return out;
}

std::string capitalize(const std::string& s) {
  std::string out = map_ascii(s, [](int c) { return std::tolower(c); });
  if (!out.empty()) out[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(out[0])));
  return out;
}

size_t utf8_length(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

Value split(const std::string& s, const Value* sep, const Value* maxsplit_v) {
  int64_t maxsplit =
      maxsplit_v != nullptr && maxsplit_v->kind == Value::Kind::integer ? maxsplit_v->i : -1;
  List parts;
  if (sep == nullptr || sep->is_none()) {
    size_t k = 0;
    while (true) {
      while (k < s.size() && is_py_space(s[k])) ++k;
      if (k >= s.size()) break;
      if (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit) {
        size_t e = s.size();
        while (e > k && is_py_space(s[e - 1])) --e;
        parts.push_back(Value::string(s.substr(k, e - k)));
        break;
      }
      size_t b = k;
      while (k < s.size() && !is_py_space(s[k])) ++k;
      parts.push_back(Value::string(s.substr(b, k - b)));
    }
    return Value::make_list(std::move(parts));
  }
  if (!sep->is_string() || sep->s.empty()) fail("split() separator must be a non-empty string");
  size_t b = 0;
  while (true) {
    size_t f = s.find(sep->s, b);
    if (f == std::string::npos || (maxsplit >= 0 && static_cast<int64_t>(parts.size()) == maxsplit))
      break;
    parts.push_back(Value::string(s.substr(b, f - b)));
    b = f + sep->s.size();
  }
  parts.push_back(Value::string(s.substr(b)));
  return Value::make_list(std::move(parts));
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to,
                        int64_t count) {
  if (from.empty()) return s;
  std::string out;
  size_t b = 0;
  int64_t done = 0;
  while (count < 0 || done < count) {
    size_t f = s.find(from, b);
    if (f == std::string::npos) break;
    out += s.substr(b, f - b) + to;
    b = f + from.size();
    ++done;
  }
  return out + s.substr(b);
}

Value items_of(const Value& v) {
  if (!v.is_mapping()) fail("items() needs a mapping, got {}", kind_name(v.kind));
  List items;
  for (const auto& [k, val] : *v.dict) {
    items.push_back(Value::make_list({Value::string(k), val}));
    items.back().tuple = true;
  }
  return Value::make_list(std::move(items));
}

int64_t length_of(const Value& v) {
  switch (v.kind) {
    case Value::Kind::string:
      return static_cast<int64_t>(utf8_length(v.s));
    case Value::Kind::list:
      return static_cast<int64_t>(v.list->size());
    case Value::Kind::dict:
    case Value::Kind::ns:
      return static_cast<int64_t>(v.dict->size());
    case Value::Kind::undefined:
      return 0;
    default:
      fail("object of type {} has no length", kind_name(v.kind));
  }
}


const char* const kFilters[] = {
    "trim",    "length", "count",   "tojson",     "upper",      "lower",  "default",    "d",
    "first",   "last",   "join",    "items",      "list",       "string", "capitalize", "title",
    "replace", "reject", "select",  "selectattr", "rejectattr", "map",    "int",        "float",
    "abs",     "unique", "reverse", "safe",       "e",          "escape"};
const char* const kTests[] = {"defined",  "undefined", "none",   "string",  "mapping",
                              "iterable", "sequence",  "number", "integer", "float",
                              "boolean",  "true",      "false",  "equalto", "eq",
                              "ne",       "sameas",    "odd",    "even",    "in"};

}  // namespace

List as_list(const Value& v) {
  if (v.is_list()) return *v.list;
  if (v.is_mapping()) {
    List keys;
    for (const auto& kv : *v.dict) keys.push_back(Value::string(kv.first));
    return keys;
  }
  if (v.is_undefined()) return {};
  if (v.is_string()) {
    List chars;
    for (size_t k = 0; k < v.s.size();) {
      size_t len = 1;
      unsigned char c = static_cast<unsigned char>(v.s[k]);
      if (c >= 0xF0)
        len = 4;
      else if (c >= 0xE0)
        len = 3;
      else if (c >= 0xC0)
        len = 2;
      chars.push_back(Value::string(v.s.substr(k, len)));
      k += len;
    }
    return chars;
  }
  fail("{} is not iterable", kind_name(v.kind));
}

bool filter_supported(const std::string& name) {
  return std::find(std::begin(kFilters), std::end(kFilters), name) != std::end(kFilters);
}

bool test_supported(const std::string& name) {
  return std::find(std::begin(kTests), std::end(kTests), name) != std::end(kTests);
}

bool apply_test(const std::string& name, const Value& v, const CallArgs& args) {
  using K = Value::Kind;
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "string") return v.is_string();
  if (name == "mapping") return v.is_mapping();
  // Jinja's Undefined is iterable (as an empty sequence).
  if (name == "iterable" || name == "sequence")
    return v.is_list() || v.is_mapping() || v.is_string() || v.is_undefined();
  if (name == "number") return v.is_numeric();
  if (name == "integer") return v.kind == K::integer;
  if (name == "float") return v.kind == K::number;
  if (name == "boolean") return v.kind == K::boolean;
  if (name == "true") return v.kind == K::boolean && v.b;
  if (name == "false") return v.kind == K::boolean && !v.b;
  if (name == "odd" || name == "even") {
    if (v.kind != K::integer) fail("needs an integer");
    return ((v.i % 2) != 0) == (name == "odd");
  }
  if (args.args.empty()) fail("missing argument");
  const Value& other = args.args[0];
  if (name == "equalto" || name == "eq" || name == "sameas") return values_equal(v, other);
  if (name == "ne") return !values_equal(v, other);
  if (name == "in") {
    if (other.is_list()) {
      for (const Value& x : *other.list)
        if (values_equal(x, v)) return true;
      return false;
    }
    if (other.is_string() && v.is_string()) return other.s.find(v.s) != std::string::npos;
    if (other.is_mapping() && v.is_string()) return other.find(v.s) != nullptr;
    return false;
  }
  fail("unsupported test");
}

static CallArgs shift_args(const CallArgs& args, size_t n) {
  CallArgs rest;
  rest.args.assign(args.args.begin() + static_cast<std::ptrdiff_t>(std::min(n, args.args.size())),
                   args.args.end());
  rest.kwargs = args.kwargs;
  return rest;
}

Value apply_filter(const std::string& name, const Value& v, const CallArgs& args) {
  if (name == "trim") {
    if (!v.is_string()) return Value::string(strip(to_str(v), args.get(0, "chars"), true, true));
    return Value::string(strip(v.s, args.get(0, "chars"), true, true));
  }
  if (name == "length" || name == "count") return Value::integer(length_of(v));
  if (name == "tojson") {
    const Value* indent = args.get(0, "indent");
    const Value* sort_keys = args.kwarg("sort_keys");
    int ind = indent != nullptr && indent->kind == Value::Kind::integer
                  ? static_cast<int>(indent->i)
                  : -1;
    return Value::string(to_json(v, ind, sort_keys != nullptr && sort_keys->truthy()));
  }
  if (name == "upper")
    return Value::string(map_ascii(to_str(v), [](int c) { return std::toupper(c); }));
  if (name == "lower")
    return Value::string(map_ascii(to_str(v), [](int c) { return std::tolower(c); }));
  if (name == "capitalize") return Value::string(capitalize(to_str(v)));
  if (name == "title") return Value::string(title(to_str(v)));
  if (name == "string") return Value::string(to_str(v));
  if (name == "safe" || name == "e" || name == "escape") return v;
  if (name == "default" || name == "d") {
    const Value* fallback = args.get(0, "default_value");
    const Value* boolean = args.get(1, "boolean");
    bool use_fallback = (boolean != nullptr && boolean->truthy()) ? !v.truthy() : v.is_undefined();
    if (!use_fallback) return v;
    return fallback != nullptr ? *fallback : Value::string("");
  }
  if (name == "first" || name == "last") {
    List items = as_list(v);
    if (items.empty()) return Value();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "join") {
    const Value* sep = args.get(0, "d");
    const Value* attribute = args.get(1, "attribute");
    std::string out;
    bool first = true;
    for (const Value& item : as_list(v)) {
      if (!first) out += sep != nullptr ? to_str(*sep) : "";
      first = false;
      if (attribute != nullptr) {
        const Value* a = item.find(to_str(*attribute));
        out += a != nullptr ? to_str(*a) : "";
      } else {
        out += to_str(item);
      }
    }
    return Value::string(std::move(out));
  }
  if (name == "items") return v.is_undefined() ? Value::make_list({}) : items_of(v);
  if (name == "list") return Value::make_list(as_list(v));
  if (name == "unique") {
    List out;
    for (const Value& item : as_list(v)) {
      if (std::none_of(out.begin(), out.end(),
                       [&](const Value& o) { return values_equal(o, item); }))
        out.push_back(item);
    }
    return Value::make_list(std::move(out));
  }
  if (name == "reverse") {
    if (v.is_string()) fail("reverse of a string is not supported");
    List items = as_list(v);
    std::reverse(items.begin(), items.end());
    return Value::make_list(std::move(items));
  }
  if (name == "replace") {
    const Value* from = args.get(0, "old");
    const Value* to = args.get(1, "new");
    const Value* count = args.get(2, "count");
    if (from == nullptr || to == nullptr) fail("replace needs two arguments");
    return Value::string(
        replace_all(to_str(v), to_str(*from), to_str(*to),
                    count != nullptr && count->kind == Value::Kind::integer ? count->i : -1));
  }
  if (name == "int") {
    if (v.kind == Value::Kind::integer) return v;
    if (v.is_numeric()) return Value::integer(static_cast<int64_t>(v.as_double()));
    if (v.is_string()) {
      try {
        return Value::integer(std::stoll(strip(v.s, nullptr, true, true)));
      } catch (...) {
      }
    }
    return Value::integer(0);
  }
  if (name == "float") {
    if (v.is_numeric()) return Value::number(v.as_double());
    if (v.is_string()) {
      try {
        return Value::number(std::stod(v.s));
      } catch (...) {
      }
    }
    return Value::number(0.0);
  }
  if (name == "abs") {
    if (v.kind == Value::Kind::number) return Value::number(v.f < 0 ? -v.f : v.f);
    if (v.kind == Value::Kind::integer) return Value::integer(v.i < 0 ? -v.i : v.i);
    fail("abs needs a number");
  }
  if (name == "select" || name == "reject") {
    if (args.args.empty()) fail("needs a test name");
    std::string test = to_str(args.args[0]);
    if (!test_supported(test)) fail("unsupported test '{}'", test);
    CallArgs rest = shift_args(args, 1);
    List out;
    for (const Value& item : as_list(v)) {
      if (apply_test(test, item, rest) == (name == "select")) out.push_back(item);
    }
    return Value::make_list(std::move(out));
  }
  if (name == "selectattr" || name == "rejectattr") {
    if (args.args.empty()) fail("needs an attribute name");
    std::string attr = to_str(args.args[0]);
    std::string test = args.args.size() > 1 ? to_str(args.args[1]) : "";
    if (!test.empty() && !test_supported(test)) fail("unsupported test '{}'", test);
    CallArgs rest = shift_args(args, 2);
    List out;
    for (const Value& item : as_list(v)) {
      const Value* a = item.find(attr);
      Value av = a != nullptr ? *a : Value();
      bool ok = test.empty() ? av.truthy() : apply_test(test, av, rest);
      if (ok == (name == "selectattr")) out.push_back(item);
    }
    return Value::make_list(std::move(out));
  }
  if (name == "map") {
    const Value* attribute = args.kwarg("attribute");
    List out;
    for (const Value& item : as_list(v)) {
      if (attribute != nullptr) {
        const Value* a = item.find(to_str(*attribute));
        const Value* dflt = args.kwarg("default");
        out.push_back(a != nullptr ? *a : (dflt != nullptr ? *dflt : Value()));
      } else {
        if (args.args.empty()) fail("map needs a filter name or attribute=");
        std::string filter = to_str(args.args[0]);
        if (!filter_supported(filter) || filter == "map") fail("unsupported filter '{}'", filter);
        out.push_back(apply_filter(filter, item, shift_args(args, 1)));
      }
    }
    return Value::make_list(std::move(out));
  }
  fail("unsupported filter");
}

Value call_method(const Value& obj, const std::string& name, const CallArgs& args, bool& found) {
  found = true;
  if (obj.is_string()) {
    const std::string& s = obj.s;
    if (name == "strip") return Value::string(strip(s, args.get(0, "chars"), true, true));
    if (name == "lstrip") return Value::string(strip(s, args.get(0, "chars"), true, false));
    if (name == "rstrip") return Value::string(strip(s, args.get(0, "chars"), false, true));
    if (name == "upper") return Value::string(map_ascii(s, [](int c) { return std::toupper(c); }));
    if (name == "lower") return Value::string(map_ascii(s, [](int c) { return std::tolower(c); }));
    if (name == "title") return Value::string(title(s));
    if (name == "capitalize") return Value::string(capitalize(s));
    if (name == "split") return split(s, args.get(0, "sep"), args.get(1, "maxsplit"));
    if (name == "startswith" || name == "endswith") {
      const Value* p = args.get(0, "prefix");
      if (p == nullptr) fail("needs an argument");
      List options = p->is_list() ? *p->list : List{*p};
      for (const Value& o : options) {
        if (!o.is_string()) fail("needs a string");
        bool hit = name == "startswith" ? s.compare(0, o.s.size(), o.s) == 0
                                        : s.size() >= o.s.size() && s.compare(s.size() - o.s.size(),
                                                                              o.s.size(), o.s) == 0;
        if (hit) return Value::boolean(true);
      }
      return Value::boolean(false);
    }
    if (name == "replace") {
      const Value* count = args.get(2, "count");
      if (args.args.size() < 2) fail("needs two arguments");
      return Value::string(
          replace_all(s, to_str(args.args[0]), to_str(args.args[1]),
                      count != nullptr && count->kind == Value::Kind::integer ? count->i : -1));
    }
    if (name == "find") {
      if (args.args.empty()) fail("needs an argument");
      size_t f = s.find(to_str(args.args[0]));
      return Value::integer(f == std::string::npos ? -1 : static_cast<int64_t>(f));
    }
  }
  if (obj.is_mapping()) {
    if (name == "items") return items_of(obj);
    if (name == "keys" || name == "values") {
      List out;
      for (const auto& [k, v] : *obj.dict) out.push_back(name == "keys" ? Value::string(k) : v);
      return Value::make_list(std::move(out));
    }
    if (name == "get") {
      if (args.args.empty()) fail("needs a key");
      const Value* v = args.args[0].is_string() ? obj.find(args.args[0].s) : nullptr;
      if (v != nullptr) return *v;
      return args.args.size() > 1 ? args.args[1] : Value::none();
    }
  }
  found = false;
  return Value();
}

Value subscript(const Value& obj, const Value& key) {
  if (obj.is_mapping()) {
    if (!key.is_string()) return Value();
    const Value* v = obj.find(key.s);
    return v != nullptr ? *v : Value();
  }
  if ((obj.is_list() || obj.is_string()) && key.kind == Value::Kind::integer) {
    if (obj.is_list()) {
      auto n = static_cast<int64_t>(obj.list->size());
      int64_t k = key.i < 0 ? key.i + n : key.i;
      return k >= 0 && k < n ? (*obj.list)[static_cast<size_t>(k)] : Value();
    }
    List chars = as_list(obj);
    auto n = static_cast<int64_t>(chars.size());
    int64_t k = key.i < 0 ? key.i + n : key.i;
    return k >= 0 && k < n ? chars[static_cast<size_t>(k)] : Value();
  }
  if (obj.is_undefined()) return Value();
  fail("cannot subscript a {} with a {}", kind_name(obj.kind), kind_name(key.kind));
}

Value slice_value(const Value& obj, const Value* start_v, const Value* stop_v,
                  const Value* step_v) {
  if (!obj.is_list() && !obj.is_string()) fail("cannot slice a {}", kind_name(obj.kind));
  List items = as_list(obj);
  auto n = static_cast<int64_t>(items.size());
  auto get = [](const Value* v, int64_t dflt) {
    if (v == nullptr || v->is_none()) return dflt;
    if (v->kind != Value::Kind::integer) fail("slice indices must be integers");
    return v->i;
  };
  int64_t step = get(step_v, 1);
  if (step == 0) fail("slice step cannot be zero");
  auto clamp = [&](int64_t k) {
    if (k < 0) k += n;
    return step > 0 ? std::clamp<int64_t>(k, 0, n) : std::clamp<int64_t>(k, -1, n - 1);
  };
  int64_t start = start_v && !start_v->is_none() ? clamp(get(start_v, 0)) : (step > 0 ? 0 : n - 1);
  int64_t stop = stop_v && !stop_v->is_none() ? clamp(get(stop_v, 0)) : (step > 0 ? n : -1);
  List out;
  for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step)
    out.push_back(items[static_cast<size_t>(k)]);
  if (obj.is_string()) {
    std::string s;
    for (const Value& c : out) s += c.s;
    return Value::string(std::move(s));
  }
  return Value::make_list(std::move(out));
}

}  // namespace nf::jinja
