// Chat templates: the fixtures rendered by transformers (scripts/make_chat_fixtures.py) must be
// reproduced byte for byte, plus unit tests of each construct of the Jinja subset.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>

#include "common/status.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace nf {
namespace {

using nlohmann::json;

std::string fixture_dir() {
  return std::string(NANOFLOW_SOURCE_DIR) + "/tests/fixtures/chat_templates";
}

json load_fixture(const std::string& name) {
  std::ifstream in(fixture_dir() + "/" + name + ".json");
  EXPECT_TRUE(in.good()) << name;
  std::stringstream ss;
  ss << in.rdbuf();
  return json::parse(ss.str());
}

// Renders every case of a fixture with `tmpl`; returns the number of cases checked.
int check_fixture(const json& fx, const ChatTemplate& tmpl) {
  int n = 0;
  for (const auto& c : fx["cases"]) {
    ChatTemplateOptions opts;
    opts.bos_token = fx["bos_token"];
    opts.eos_token = fx["eos_token"];
    opts.extra = c.contains("extra") ? c["extra"] : fx["extra"];
    opts.add_generation_prompt = c.value("add_generation_prompt", true);
    SCOPED_TRACE(c["messages"].dump());
    if (c.contains("error")) {
      try {
        tmpl.render(c["messages"], opts);
        ADD_FAILURE() << "expected an error containing " << c["error"];
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(c["error"].get<std::string>()), std::string::npos)
            << e.what();
      }
    } else {
      EXPECT_EQ(tmpl.render(c["messages"], opts), c["expected"].get<std::string>());
    }
    ++n;
  }
  return n;
}

class ChatFixture : public ::testing::TestWithParam<std::string> {};

TEST_P(ChatFixture, MatchesTransformers) {
  json fx = load_fixture(GetParam());
  ChatTemplate tmpl(fx["template"].get<std::string>());
  EXPECT_GE(check_fixture(fx, tmpl), 10);
}

INSTANTIATE_TEST_SUITE_P(Templates, ChatFixture,
                         ::testing::Values("smollm2", "llama2", "llama3", "llama3_1", "qwen2",
                                           "qwen2_5", "qwen3"));

// Small templates for each construct, rendered by transformers' environment: same output, or an
// nf::Error where Jinja raised.
TEST(JinjaSnippets, MatchTransformers) {
  json snippets = load_fixture("jinja_snippets");
  ASSERT_GE(snippets.size(), 60u);
  for (const auto& s : snippets) {
    const std::string src = s["template"];
    SCOPED_TRACE(src);
    json vars = s["vars"];
    json messages = vars["messages"];
    vars.erase("messages");
    ChatTemplateOptions opts;
    opts.add_generation_prompt = false;
    opts.extra = vars;
    if (s.contains("error")) {
      EXPECT_THROW(ChatTemplate(src).render(messages, opts), Error);
    } else {
      try {
        EXPECT_EQ(ChatTemplate(src).render(messages, opts), s["expected"].get<std::string>());
      } catch (const Error& e) {
        ADD_FAILURE() << e.what();
      }
    }
  }
}

// Every prefix of every snippet and real template either renders or throws nf::Error (never
// crashes or throws anything else).
TEST(JinjaSnippets, TruncatedTemplatesFailCleanly) {
  std::vector<std::string> sources;
  for (const auto& s : load_fixture("jinja_snippets")) sources.push_back(s["template"]);
  for (const char* name : {"llama3_1", "qwen2_5", "qwen3"})
    sources.push_back(load_fixture(name)["template"]);
  json messages = json::array({{{"role", "user"}, {"content", "hi"}}});
  int rendered = 0, failed = 0;
  for (const auto& src : sources) {
    for (size_t n = 0; n <= src.size(); ++n) {
      try {
        ChatTemplate(src.substr(0, n)).render(messages, ChatTemplateOptions{});
        ++rendered;
      } catch (const Error&) {
        ++failed;
      }
    }
  }
  EXPECT_GT(rendered, 0);
  EXPECT_GT(failed, 0);
}

TEST(ChatTemplateGguf, SmolLM2TemplateFromGgufMatchesFixture) {
  std::string path = std::string(NANOFLOW_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "missing " << path;
  auto tok = Tokenizer::load(path);
  json fx = load_fixture("smollm2");
  ASSERT_EQ(tok->chat_template(), fx["template"].get<std::string>());
  ChatTemplate tmpl(tok->chat_template());
  EXPECT_EQ(check_fixture(fx, tmpl), 10);
}

// Renders `src` with `vars` as extra variables (no generation prompt, no special tokens).
std::string run(const std::string& src, json vars = json::object(), json messages = json::array()) {
  ChatTemplateOptions opts;
  opts.add_generation_prompt = false;
  opts.extra = std::move(vars);
  return ChatTemplate(src).render(messages, opts);
}

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(Jinja, OutputAndLiterals) {
  EXPECT_EQ(run("a{{ 1 }}b{{ 'x' }}{{ \"y\" }}"), "a1bxy");
  EXPECT_EQ(run("{{ true }} {{ False }} {{ none }} {{ None }} {{ 1.5 }} {{ 2.0 }}"),
            "True False None None 1.5 2.0");
  EXPECT_EQ(run("{{ [1, 'a', none] }} {{ {'k': 'v', 'n': 1} }}"),
            "[1, 'a', None] {'k': 'v', 'n': 1}");
  EXPECT_EQ(run(R"({{ 'a\nb\t\'q\' \"d\" \\ \u00e9' }})"), "a\nb\t'q' \"d\" \\ \xc3\xa9");
  EXPECT_EQ(run("{{ 'ab' 'cd' }}"), "abcd");
  EXPECT_EQ(run("{# comment #}x{# another\nline #}y"), "xy");
}

TEST(Jinja, Operators) {
  EXPECT_EQ(run("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -1 % "
                "3 }} {{ 7 / 2 }}"),
            "7 9 3 -4 1 2 3.5");
  EXPECT_EQ(
      run("{{ 2 ** 10 }} {{ 'a' ~ 1 ~ none }} {{ 'ab' + 'cd' }} {{ [1] + [2] }} {{ 'ab' * 2 }}"),
      "1024 a1None abcd [1, 2] abab");
  EXPECT_EQ(
      run("{{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ 1 < 2 }} {{ 'b' >= 'a' }} {{ [1,2] == [1,2] }}"),
      "True True True True True");
  EXPECT_EQ(run("{{ 'a' in 'cat' }} {{ 3 in [1,2] }} {{ 'k' in {'k': 1} }} {{ 'z' not in 'abc' }}"),
            "True False True True");
  EXPECT_EQ(run("{{ 1 and 'x' }} {{ 0 or 'y' }} {{ not 0 }} {{ not 1 == 2 }} {{ 'a' if false else "
                "'b' }}"),
            "x y True True b");
  EXPECT_EQ(run("[{{ 'a' if false }}]"), "[]");
}

TEST(Jinja, NumbersRenderAsPython) {
  EXPECT_EQ(run("{{ 1e3 }} {{ 0.1 + 0.2 }} {{ 10 / 4 }} {{ -3 }} {{ 1e20 }} {{ 0.00001 }} {{ "
                "123.456 }} {{ 1 / 3 }}"),
            "1000.0 0.30000000000000004 2.5 -3 1e+20 1e-05 123.456 0.3333333333333333");
}

TEST(Jinja, FilterBindsTighterThanPlus) {
  EXPECT_EQ(run("{{ 'x' + '  y  ' | trim + 'z' }}"), "xyz");
  EXPECT_EQ(run("{{ not x is defined }}"), "True");
}

TEST(Jinja, IfElifElse) {
  const char* t = "{% if n == 1 %}one{% elif n == 2 %}two{% else %}many{% endif %}";
  EXPECT_EQ(run(t, {{"n", 1}}), "one");
  EXPECT_EQ(run(t, {{"n", 2}}), "two");
  EXPECT_EQ(run(t, {{"n", 5}}), "many");
}

TEST(Jinja, ForLoopVariables) {
  EXPECT_EQ(run("{% for x in xs %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last "
                "}}{{ loop.length }}"
                "{{ x }};{% endfor %}",
                {{"xs", {"a", "b"}}}),
            "10TrueFalse2a;21FalseTrue2b;");
  EXPECT_EQ(
      run("{% for k, v in d | items %}{{ k }}={{ v }},{% endfor %}", {{"d", {{"a", 1}, {"b", 2}}}}),
      "a=1,b=2,");
  EXPECT_EQ(run("{% for k, v in d.items() %}{{ k }}={{ v }},{% endfor %}", {{"d", {{"a", 1}}}}),
            "a=1,");
  EXPECT_EQ(run("{% for x in [] %}x{% else %}empty{% endfor %}"), "empty");
  EXPECT_EQ(run("{% for x in [1,2,3,4] if x is even %}{{ x }}{% endfor %}"), "24");
  EXPECT_EQ(run("{% for x in [1,2,3,4] %}{% if x == 2 %}{% continue %}{% endif %}{% if x == 4 %}{% "
                "break %}"
                "{% endif %}{{ x }}{% endfor %}"),
            "13");
  EXPECT_EQ(run("{% for c in 'h\xc3\xa9' %}[{{ c }}]{% endfor %}"), "[h][\xc3\xa9]");
}

TEST(Jinja, SetScoping) {
  EXPECT_EQ(
      run("{% set x = 1 %}{% for i in [1,2] %}{% set x = i * 10 %}{{ x }},{% endfor %}{{ x }}"),
      "10,20,1");
  EXPECT_EQ(run("{% set ns = namespace(x=1, y='a') %}{% for i in [1,2] %}{% set ns.x = ns.x + i "
                "%}{% endfor %}"
                "{{ ns.x }}{{ ns.y }}"),
            "4a");
  EXPECT_EQ(run("{% if true %}{% set x = 5 %}{% endif %}{{ x }}"), "5");
  // Each iteration starts with a fresh scope.
  EXPECT_EQ(
      run("{% for i in [1,2] %}{% if i == 2 %}[{{ y }}]{% endif %}{% set y = i %}{% endfor %}"),
      "[]");
  EXPECT_EQ(run("{% set messages = messages[1:] %}{{ messages | length }}", json::object(),
                json::array({json{{"role", "system"}}, json{{"role", "user"}}})),
            "1");
  EXPECT_NE(error_of([] { run("{% set x = 1 %}{% set x.y = 2 %}"); }).find("namespace"),
            std::string::npos);
}

TEST(Jinja, WhitespaceControl) {
  EXPECT_EQ(run("a  {{- 'b' -}}  \n c"), "abc");
  EXPECT_EQ(run("a \n {%- if true -%} \n b {%- endif %}"), "ab");
  EXPECT_EQ(run("a {#- c -#} b"), "ab");
}

TEST(Jinja, TrimAndLstripBlocks) {
  // trim_blocks: the newline after a block tag goes; lstrip_blocks: indentation before it goes.
  EXPECT_EQ(run("{% if true %}\n  yes\n{% endif %}\nend"), "  yes\nend");
  EXPECT_EQ(run("<\n    {% if true %}\nx\n    {% endif %}\n>"), "<\nx\n>");
  // Neither applies to {{ }}.
  EXPECT_EQ(run("  {{ 'v' }}\nz"), "  v\nz");
  // lstrip only when the tag is alone after whitespace on its line.
  EXPECT_EQ(run("a  {% if true %}b{% endif %}"), "a  b");
  // {%+ disables lstrip; comments are trimmed too.
  EXPECT_EQ(run("  {%+ if true %}x{% endif %}"), "  x");
  EXPECT_EQ(run("  {# c #}\nx"), "x");
  // The template's single trailing newline is dropped (keep_trailing_newline=False).
  EXPECT_EQ(run("x\n"), "x");
  EXPECT_EQ(run("x\n\n"), "x\n");
}

TEST(Jinja, SubscriptsAndAttributes) {
  json vars = {{"xs", {1, 2, 3, 4}}, {"d", {{"k", "v"}, {"n", {{"m", 7}}}}}, {"s", "hello"}};
  EXPECT_EQ(run("{{ xs[0] }}{{ xs[-1] }}{{ xs[1:] }}{{ xs[:2] }}{{ xs[::2] }}{{ xs[::-1] }}", vars),
            "14[2, 3, 4][1, 2][1, 3][4, 3, 2, 1]");
  EXPECT_EQ(run("{{ d['k'] }}{{ d.k }}{{ d.n.m }}{{ d['n']['m'] }}[{{ d.missing }}]{{ s[1:3] }}{{ "
                "s[0] }}",
                vars),
            "vv77[]elh");
}

TEST(Jinja, Tests) {
  json vars = {{"s", "x"}, {"d", json::object()}, {"l", json::array()}, {"z", nullptr}, {"i", 3}};
  EXPECT_EQ(
      run("{{ s is defined }}{{ q is undefined }}{{ z is none }}{{ s is string }}{{ d is mapping }}"
          "{{ l is iterable }}{{ s is iterable }}{{ i is iterable }}{{ z is not none }}{{ i is "
          "number }}",
          vars),
      "TrueTrueTrueTrueTrueTrueTrueFalseFalseTrue");
  EXPECT_EQ(run("{{ 'a' is equalto 'a' }}{{ 3 is odd }}", vars), "TrueTrue");
}

TEST(Jinja, Filters) {
  json vars = {{"xs", {"a", "b", "c"}}, {"d", {{"b", 1}, {"a", "x\"y"}}}};
  EXPECT_EQ(run("[{{ '  a b \n' | trim }}]{{ xs | length }}{{ 'h\xc3\xa9' | length }}{{ 'aB' | "
                "upper }}{{ 'aB' | lower }}",
                vars),
            "[a b]32ABab");
  EXPECT_EQ(run("{{ xs | first }}{{ xs | last }}{{ xs | join(', ') }}{{ xs | join }}", vars),
            "aca, b, cabc");
  EXPECT_EQ(
      run("{{ q | default('dflt') }}{{ '' | default('e') }}{{ '' | default('e', true) }}", vars),
      "dflte");
  EXPECT_EQ(run("{{ d | tojson }}", vars), R"({"a": "x\"y", "b": 1})");
  EXPECT_EQ(run("{{ [1, {'z': none, 'a': [true, 1.5]}, 'é\n'] | tojson }}"),
            "[1, {\"z\": null, \"a\": [true, 1.5]}, \"\xc3\xa9\\n\"]");
  EXPECT_EQ(run("{{ {'a': [1], 'b': {}} | tojson(indent=2) }}"),
            "{\n  \"a\": [\n    1\n  ],\n  \"b\": {}\n}");
  EXPECT_EQ(
      run("{{ xs | reject('equalto', 'b') | join }}{{ xs | select('in', ['c']) | list }}", vars),
      "ac['c']");
  EXPECT_EQ(run("{{ [{'n': 'p'}, {'n': 'q'}] | map(attribute='n') | join('+') }}"), "p+q");
}

TEST(Jinja, Methods) {
  EXPECT_EQ(run("[{{ '  x  '.strip() }}][{{ 'xxaxx'.strip('x') }}]{{ 'abc'.startswith('ab') }}{{ "
                "'abc'.endswith('bc') }}"),
            "[x][a]TrueTrue");
  EXPECT_EQ(run("{{ ' a  b '.split() }}{{ 'a,b,,c'.split(',') }}{{ 'a,b,c'.split(',', 1) }}"),
            "['a', 'b']['a', 'b', '', 'c']['a', 'b,c']");
  EXPECT_EQ(run("{{ 'aB'.upper() }}{{ 'aB'.lower() }}{{ 'hello wORLD x1y'.title() }}"),
            "ABabHello World X1Y");
  json vars = {{"d", {{"a", 1}, {"b", 2}}}};
  EXPECT_EQ(run("{{ d.items() | length }}{{ d.keys() | list }}{{ d.get('a') }}{{ d.get('z', 9) "
                "}}{{ d.get('z') }}",
                vars),
            "2['a', 'b']19None");
}

TEST(Jinja, UndefinedIsFalsyAndEmpty) {
  EXPECT_EQ(run("[{{ nothing }}]{% if nothing %}x{% else %}y{% endif %}{{ nothing is defined }}"),
            "[]yFalse");
  EXPECT_EQ(run("{{ d.missing is defined }}[{{ d.missing }}][{{ d['missing'] }}]",
                {{"d", json::object()}}),
            "False[][]");
  // As Jinja's Undefined: reading an attribute of an undefined value is an error.
  std::string e = error_of([] { run("{{ nothing.attr }}"); });
  EXPECT_NE(e.find("attribute 'attr' of an undefined value at line 1, column 11"),
            std::string::npos)
      << e;
}

TEST(Jinja, RaiseExceptionAndStrftime) {
  EXPECT_EQ(error_of([] { run("{{ raise_exception('bad roles') }}"); }), "bad roles");
  std::string year = run("{{ strftime_now('%Y') }}");
  EXPECT_EQ(year.size(), 4u);
  EXPECT_EQ(year.substr(0, 2), "20");
}

TEST(Jinja, ContentParts) {
  json messages =
      json::array({{{"role", "user"},
                    {"content", json::array({{{"type", "text"}, {"text", "hi"}},
                                             {{"type", "text"}, {"text", " there"}}})}}});
  EXPECT_EQ(run("{% for m in messages %}{% if m.content is string %}{{ m.content }}{% else %}"
                "{% for p in m.content %}{% if p.type == 'text' %}{{ p.text }}{% endif %}{% endfor "
                "%}{% endif %}"
                "{% endfor %}",
                json::object(), messages),
            "hi there");
}

TEST(Jinja, ErrorsNamePosition) {
  std::string e = error_of([] { ChatTemplate("ab\n{% if x %}oops"); });
  EXPECT_NE(e.find("endif"), std::string::npos) << e;
  e = error_of([] { ChatTemplate("x\n  {% macro m() %}{% endmacro %}"); });
  EXPECT_NE(e.find("unsupported tag 'macro'"), std::string::npos) << e;
  EXPECT_NE(e.find("line 2, column 6"), std::string::npos) << e;
  e = error_of([] { ChatTemplate("a{% endfor %}"); });
  EXPECT_NE(e.find("unexpected '{% endfor %}' at line 1, column 5"), std::string::npos) << e;
  e = error_of([] { ChatTemplate("{{ x | nosuchfilter }}"); });
  EXPECT_NE(e.find("unsupported filter 'nosuchfilter'"), std::string::npos) << e;
  EXPECT_NE(e.find("line 1, column 8"), std::string::npos) << e;
  e = error_of([] { ChatTemplate("{{ 1 + }}"); });
  EXPECT_NE(e.find("line 1, column 8"), std::string::npos) << e;
  e = error_of([] { ChatTemplate("{{ 'abc }}"); });
  EXPECT_NE(e.find("unterminated string"), std::string::npos) << e;
  e = error_of([] { run("{{ 'a' + 1 }}"); });
  EXPECT_NE(e.find("'+'"), std::string::npos) << e;
  EXPECT_NE(e.find("line 1, column 8"), std::string::npos) << e;
  e = error_of([] { run("{{ nope(1) }}"); });
  EXPECT_NE(e.find("'nope'"), std::string::npos) << e;
}

TEST(Jinja, RenderFromManyThreads) {
  json fx = load_fixture("llama3_1");
  const ChatTemplate tmpl(fx["template"].get<std::string>());
  std::vector<std::thread> threads;
  std::atomic<int> mismatches{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int rep = 0; rep < 20; ++rep) {
        for (const auto& c : fx["cases"]) {
          ChatTemplateOptions opts;
          opts.bos_token = fx["bos_token"];
          opts.eos_token = fx["eos_token"];
          opts.extra = c.contains("extra") ? c["extra"] : fx["extra"];
          opts.add_generation_prompt = c.value("add_generation_prompt", true);
          if (tmpl.render(c["messages"], opts) != c["expected"].get<std::string>()) ++mismatches;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(Jinja, RenderIsConstAndReusable) {
  ChatTemplate t("{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}");
  ChatTemplateOptions opts;
  json a = json::array({{{"role", "user"}, {"content", "x"}}});
  EXPECT_EQ(t.render(a, opts), "user:x;");
  EXPECT_EQ(t.render(a, opts), "user:x;");
}

}  // namespace
}  // namespace nf
