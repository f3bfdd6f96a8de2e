// Chat templates: renders a model's own Jinja2 chat template (tokenizer_config.json
// `chat_template` or GGUF `tokenizer.chat_template`) for OpenAI-style messages, exactly as
// transformers' apply_chat_template does (ImmutableSandboxedEnvironment with trim_blocks and
// lstrip_blocks, the template's trailing newline dropped, raise_exception / strftime_now and
// transformers' tojson).
//
// Supported Jinja: {{ }}, {% if/elif/else %}, {% for %} (loop.*, tuple targets, `if` filter,
// else, break/continue), {% set %} (names and namespace attributes), {% generation %},
// comments, whitespace control, literals, lists, dicts, arithmetic / comparison / logic / `in` /
// `~` operators, subscripts and slices, attributes, filters (trim length count tojson upper
// lower capitalize title default first last join items list unique reverse replace select
// reject selectattr rejectattr map int float abs string), tests (defined undefined none string
// mapping iterable sequence number integer float boolean true false equalto eq ne sameas odd
// even in), string / dict methods and namespace() dict() range() raise_exception()
// strftime_now(). Not supported (a compile error naming the tag or filter): macros, call
// blocks, block set, include/extends/import, filter blocks, raw, `recursive` loops.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace nf {

namespace jinja {
struct Node;
}

struct ChatTemplateOptions {
  bool add_generation_prompt = true;
  std::string bos_token, eos_token;  // exposed to the template as variables
  // Other variables (e.g. tools = null, date_string); they override the ones above.
  nlohmann::json extra = nlohmann::json::object();
};

// Compiles once; render() is const and thread-safe. The constructor throws nf::Error naming the
// construct and its line and column on a syntax error or an unsupported feature.
class ChatTemplate {
 public:
  explicit ChatTemplate(std::string source);
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  // messages: [{"role": "...", "content": "..." | [{"type":"text","text":...}, ...]}, ...].
  // Throws nf::Error on a runtime error, and with the template's own message when it calls
  // raise_exception().
  std::string render(const nlohmann::json& messages, const ChatTemplateOptions& opts) const;

  const std::string& source() const { return source_; }

 private:
  std::string source_;  // normalised: "\r\n" -> "\n", one trailing newline dropped
  std::unique_ptr<std::vector<jinja::Node>> body_;
};

}  // namespace nf
