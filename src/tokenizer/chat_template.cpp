#include "tokenizer/chat_template.h"

#include "common/status.h"
#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_eval.h"

namespace nf {

namespace {

// Jinja's lexer: newlines normalised to "\n" and, without keep_trailing_newline, one trailing
// newline removed.
std::string normalize_source(std::string src) {
  std::string out;
  out.reserve(src.size());
  for (size_t k = 0; k < src.size(); ++k) {
    if (src[k] == '\r') {
      out += '\n';
      if (k + 1 < src.size() && src[k + 1] == '\n') ++k;
    } else {
      out += src[k];
    }
  }
  if (!out.empty() && out.back() == '\n') out.pop_back();
  return out;
}

}  // namespace

ChatTemplate::ChatTemplate(std::string source) : source_(normalize_source(std::move(source))) {
  body_ = std::make_unique<jinja::Body>(jinja::parse_template(source_));
  jinja::check_supported(*body_, source_);
}

ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

std::string ChatTemplate::render(const nlohmann::json& messages,
                                 const ChatTemplateOptions& opts) const {
  if (!messages.is_array()) fail("chat template: messages must be a JSON array");
  if (!opts.extra.is_object()) fail("chat template: extra variables must be a JSON object");
  jinja::Vars vars;
  vars["messages"] = jinja::Value::from_json(messages);
  vars["add_generation_prompt"] = jinja::Value::boolean(opts.add_generation_prompt);
  vars["bos_token"] = jinja::Value::string(opts.bos_token);
  vars["eos_token"] = jinja::Value::string(opts.eos_token);
  for (auto it = opts.extra.begin(); it != opts.extra.end(); ++it)
    vars[it.key()] = jinja::Value::from_json(it.value());
  return jinja::render_template(*body_, source_, vars);
}

}  // namespace nf
