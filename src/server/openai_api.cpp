#include "server/openai_api.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <random>

#include "common/status.h"
#include "engine/sampling_json.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace nf::server {

using nlohmann::json;

namespace {

[[noreturn]] void bad(std::string param, std::string message, int status = 400,
                      std::string code = "") {
  throw ApiError{status, std::move(message), std::move(param), std::move(code)};
}

std::string new_id(const char* prefix) {
  static std::atomic<uint64_t> counter{0};
  static const uint64_t salt = std::random_device{}();
  return fmt::format("{}-{:016x}{:08x}", prefix, salt, counter.fetch_add(1));
}

bool get_bool(const json& body, const char* key) {
  if (!body.contains(key) || body[key].is_null()) return false;
  if (!body[key].is_boolean()) bad(key, fmt::format("'{}' must be true or false", key));
  return body[key].get<bool>();
}

std::vector<int32_t> token_list(const json& a, const std::string& param) {
  std::vector<int32_t> ids;
  for (const auto& x : a) {
    if (!x.is_number_integer())
      bad(param,
          "expected a string, a list of strings, a list of token ids or a list of lists of token "
          "ids");
    const int64_t v = x.get<int64_t>();
    if (v < 0 || v > INT32_MAX) bad(param, fmt::format("token id {} is out of range", v));
    ids.push_back(static_cast<int32_t>(v));
  }
  if (ids.empty()) bad(param, "a token-id prompt must not be empty");
  return ids;
}

std::vector<int32_t> encode_prompt(const std::string& text, bool add_special, const ApiContext& ctx,
                                   const std::string& param) {
  if (!ctx.tokenizer) bad(param, "this model has no tokenizer; send token ids");
  nf::EncodeOptions opts;
  opts.add_special = add_special;
  auto ids = ctx.tokenizer->encode(text, opts);
  if (ids.empty()) bad(param, "the prompt is empty");
  return ids;
}

std::vector<std::vector<int32_t>> completion_prompts(const json& body, const ApiContext& ctx) {
  if (!body.contains("prompt") || body["prompt"].is_null()) bad("prompt", "'prompt' is required");
  const json& p = body["prompt"];
  std::vector<std::vector<int32_t>> out;
  if (p.is_string()) {
    out.push_back(encode_prompt(p.get<std::string>(), true, ctx, "prompt"));
  } else if (p.is_array() && !p.empty() && p[0].is_string()) {
    for (const auto& s : p) {
      if (!s.is_string()) bad("prompt", "expected a list of strings");
      out.push_back(encode_prompt(s.get<std::string>(), true, ctx, "prompt"));
    }
  } else if (p.is_array() && !p.empty() && p[0].is_array()) {
    for (const auto& s : p) {
      if (!s.is_array()) bad("prompt", "expected a list of lists of token ids");
      out.push_back(token_list(s, "prompt"));
    }
  } else if (p.is_array() && !p.empty()) {
    out.push_back(token_list(p, "prompt"));
  } else {
    bad("prompt",
        "expected a string, a list of strings, a list of token ids or a list of lists of token "
        "ids");
  }
  if (out.size() > 1024) bad("prompt", "at most 1024 prompts per request");
  return out;
}

std::vector<int32_t> chat_prompt(const json& body, const ApiContext& ctx) {
  if (!body.contains("messages")) bad("messages", "'messages' is required");
  const json& in = body["messages"];
  if (!in.is_array() || in.empty()) bad("messages", "'messages' must be a non-empty list");
  // What the templates see, as the OpenAI API defines it and vLLM renders it: a list of text
  // parts becomes their text joined by newlines; a null or missing content (an assistant
  // message with tool_calls) becomes "" so that templates that concatenate it still render.
  json msgs = json::array();
  for (const auto& m : in) {
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      bad("messages", "each message must be an object with a string 'role'");
    json out = m;
    const auto c = m.find("content");
    if (c == m.end() || c->is_null()) {
      out["content"] = "";
    } else if (c->is_array()) {
      std::string text;
      for (const auto& part : *c) {
        if (!part.is_object() || part.value("type", json()) != "text" || !part.contains("text") ||
            !part["text"].is_string())
          bad("messages",
              "a content part must be {\"type\": \"text\", \"text\": \"...\"}; this model "
              "takes text only");
        if (!text.empty()) text += "\n";
        text += part["text"].get<std::string>();
      }
      out["content"] = std::move(text);
    } else if (!c->is_string()) {
      bad("messages", "a message's 'content' must be a string or a list of content parts");
    }
    msgs.push_back(std::move(out));
  }
  if (!ctx.chat_template)
    bad("messages",
        fmt::format("chat is not available for this model: {}", ctx.chat_template_error), 400,
        "chat_template_unavailable");
  nf::ChatTemplateOptions opts;
  opts.add_generation_prompt = true;
  if (body.contains("add_generation_prompt") && body["add_generation_prompt"].is_boolean())
    opts.add_generation_prompt = body["add_generation_prompt"].get<bool>();
  if (ctx.tokenizer) {
    if (auto bos = ctx.tokenizer->bos_id()) opts.bos_token = ctx.tokenizer->token_text(*bos);
    const auto eos = ctx.tokenizer->eos_ids();
    if (!eos.empty()) opts.eos_token = ctx.tokenizer->token_text(eos[0]);
  }
  std::string text;
  try {
    text = ctx.chat_template->render(msgs, opts);
  } catch (const nf::Error& e) {
    bad("messages", fmt::format("the chat template failed: {}", e.what()));
  }
  return encode_prompt(text, false, ctx, "messages");
}

// The parameter named in a sampling_params_from_json message ("request: field 'x': ...").
std::string param_of(const std::string& msg) {
  const auto a = msg.find("field '");
  if (a == std::string::npos) return "";
  const auto b = msg.find('\'', a + 7);
  return b == std::string::npos ? "" : msg.substr(a + 7, b - a - 7);
}

std::string token_string(const ApiContext& ctx, int32_t id) {
  if (!ctx.tokenizer) return fmt::format("token_id:{}", id);
  try {
    const int32_t one[1] = {id};
    return ctx.tokenizer->decode(one, false);
  } catch (const nf::Error&) {
    return fmt::format("token_id:{}", id);
  }
}

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

// Logprobs of a run of tokens in the schema of the endpoint; null when not asked for.
json logprobs_json(const GenSpec& spec, const nanoflow::RequestOutput& o, const ApiContext& ctx,
                   size_t text_offset) {
  if (!spec.want_logprobs) return nullptr;
  const size_t n = o.token_ids.size();
  if (spec.chat) {
    json content = json::array();
    for (size_t i = 0; i < n; ++i) {
      const std::string t = token_string(ctx, o.token_ids[i]);
      json top = json::array();
      if (i < o.top_logprobs.size())
        for (const auto& [id, lp] : o.top_logprobs[i]) {
          const std::string s = token_string(ctx, id);
          top.push_back({{"token", s}, {"logprob", lp}, {"bytes", bytes_of(s)}});
        }
      content.push_back({{"token", t},
                         {"logprob", i < o.token_logprobs.size() ? o.token_logprobs[i] : 0.0f},
                         {"bytes", bytes_of(t)},
                         {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  json tokens = json::array(), lps = json::array(), tops = json::array(), offsets = json::array();
  size_t off = text_offset;
  for (size_t i = 0; i < n; ++i) {
    const std::string t = token_string(ctx, o.token_ids[i]);
    tokens.push_back(t);
    lps.push_back(i < o.token_logprobs.size() ? o.token_logprobs[i] : 0.0f);
    json top = json::object();
    if (i < o.top_logprobs.size())
      for (const auto& [id, lp] : o.top_logprobs[i]) top[token_string(ctx, id)] = lp;
    tops.push_back(top);
    offsets.push_back(off);
    off += t.size();
  }
  return {{"tokens", tokens},
          {"token_logprobs", lps},
          {"top_logprobs", tops},
          {"text_offset", offsets}};
}

json finish_json(const nanoflow::RequestOutput& o) {
  if (!o.finished()) return nullptr;
  return nanoflow::finish_reason_name(o.finish_reason);
}

// prompt_tokens_details.cached_tokens (as OpenAI and vLLM report it): each prompt's tokens
// served from the prefix cache or the offload tiers, taken from its first choice (the n
// choices of a prompt share it; choice i belongs to prompt i / n).
json usage_json(const GenSpec& spec, const std::vector<nanoflow::RequestOutput>& choices) {
  int64_t prompt = 0, completion = 0, cached = 0;
  for (const auto& p : spec.prompts) prompt += static_cast<int64_t>(p.size());
  for (const auto& c : choices) completion += static_cast<int64_t>(c.token_ids.size());
  const size_t n = static_cast<size_t>(std::max(1, spec.params.n));
  for (size_t i = 0; i < choices.size(); i += n) cached += choices[i].cached_prompt_tokens;
  return {{"prompt_tokens", prompt},
          {"completion_tokens", completion},
          {"total_tokens", prompt + completion},
          {"prompt_tokens_details", {{"cached_tokens", cached}}}};
}

}  // namespace

std::string ApiError::type() const {
  if (status == 401) return "authentication_error";
  if (status == 404) return "not_found_error";
  if (status == 503) return "service_unavailable";
  if (status >= 500) return "server_error";
  return "invalid_request_error";
}

std::string ApiError::body() const {
  json e = {{"message", message}, {"type", type()}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) e["param"] = param;
  if (!code.empty()) e["code"] = code;
  return json_dump({{"error", e}});
}

std::string json_dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

GenSpec parse_generation(const json& body, bool chat, const ApiContext& ctx) {
  GenSpec spec;
  spec.chat = chat;
  spec.id = new_id(chat ? "chatcmpl" : "cmpl");
  spec.created = std::chrono::duration_cast<std::chrono::seconds>(
                     std::chrono::system_clock::now().time_since_epoch())
                     .count();
  if (body.contains("model") && !body["model"].is_null()) {
    if (!body["model"].is_string()) bad("model", "'model' must be a string");
    if (body["model"].get<std::string>() != ctx.model_name)
      bad("model", fmt::format("The model `{}` does not exist.", body["model"].get<std::string>()),
          404, "model_not_found");
  }
  spec.stream = get_bool(body, "stream");
  spec.return_token_ids = get_bool(body, "return_token_ids");
  if (body.contains("stream_options") && !body["stream_options"].is_null()) {
    const json& so = body["stream_options"];
    if (!so.is_object()) bad("stream_options", "'stream_options' must be an object");
    if (!spec.stream) bad("stream_options", "'stream_options' is only allowed with stream = true");
    spec.include_usage = get_bool(so, "include_usage");
  }
  if (get_bool(body, "echo")) bad("echo", "'echo' is not supported");
  if (body.contains("best_of") && !body["best_of"].is_null() &&
      body["best_of"] != body.value("n", json(1)))
    bad("best_of", "'best_of' is not supported");

  // The sampling fields alone (never a copy of the whole body), adjusted for the chat schema.
  json sp = json::object();
  for (const char* k : {"max_tokens", "min_tokens", "temperature", "top_p", "top_k", "min_p", "n",
                        "logprobs", "presence_penalty", "frequency_penalty", "repetition_penalty",
                        "seed", "ignore_eos", "stop", "stop_token_ids", "logit_bias"})
    if (auto it = body.find(k); it != body.end()) sp[k] = *it;
  if (chat) {
    const bool lp = get_bool(body, "logprobs");
    int top = 0;
    if (body.contains("top_logprobs") && !body["top_logprobs"].is_null()) {
      const json& t = body["top_logprobs"];
      if (!t.is_number_integer()) bad("top_logprobs", "'top_logprobs' must be an integer");
      try {
        top = static_cast<int>(nf::json_integer(t, 0, 20, "top_logprobs"));
      } catch (const nf::Error&) {
        bad("top_logprobs", fmt::format("'top_logprobs' must be in [0, 20], got {}", t.dump()));
      }
      if (!lp && top > 0) bad("top_logprobs", "'top_logprobs' needs logprobs = true");
    }
    spec.want_logprobs = lp;
    sp["logprobs"] = top;
    if (body.contains("max_completion_tokens") && !body["max_completion_tokens"].is_null())
      sp["max_tokens"] = body["max_completion_tokens"];
  } else {
    spec.want_logprobs = body.contains("logprobs") && !body["logprobs"].is_null();
  }
  try {
    spec.params = nf::sampling_params_from_json(sp, "request");
  } catch (const nf::Error& e) {
    std::string msg = e.what();
    if (msg.rfind("request: ", 0) == 0) msg = msg.substr(9);
    const std::string param = param_of(msg);
    bad(chat && param == "logprobs" ? "top_logprobs" : param, msg);
  }
  const bool has_max = sp.contains("max_tokens") && !sp["max_tokens"].is_null();
  spec.prompts = chat ? std::vector<std::vector<int32_t>>{chat_prompt(body, ctx)}
                      : completion_prompts(body, ctx);
  const char* prompt_param = chat ? "messages" : "prompt";
  for (const auto& p : spec.prompts) {
    const auto len = static_cast<int64_t>(p.size());
    if (len >= ctx.max_context)
      bad(prompt_param, fmt::format("This model's maximum context length is {} tokens. However, "
                                    "your prompt has {} tokens.",
                                    ctx.max_context, len));
    if (!has_max && chat) {
      spec.params.max_tokens = static_cast<int>(ctx.max_context - len);
    } else if (len + spec.params.max_tokens > ctx.max_context) {
      bad("max_tokens",
          fmt::format(
              "This model's maximum context length is {} tokens. However, you requested {} tokens "
              "({} in the prompt, {} in the completion).",
              ctx.max_context, len + spec.params.max_tokens, len, spec.params.max_tokens));
    }
  }
  return spec;
}

json completion_response(const GenSpec& spec, const std::vector<nanoflow::RequestOutput>& choices,
                         const ApiContext& ctx) {
  json cs = json::array();
  const int n = spec.params.n;
  for (size_t i = 0; i < choices.size(); ++i) {
    const auto& o = choices[i];
    json c = {{"index", i},
              {"finish_reason", finish_json(o)},
              {"logprobs", logprobs_json(spec, o, ctx, 0)}};
    if (spec.chat)
      c["message"] = {{"role", "assistant"}, {"content", o.text}};
    else
      c["text"] = o.text;
    if (spec.return_token_ids) {
      c["prompt_token_ids"] = spec.prompts[i / static_cast<size_t>(n)];
      c["token_ids"] = o.token_ids;
    }
    cs.push_back(std::move(c));
  }
  return {{"id", spec.id},           {"object", spec.chat ? "chat.completion" : "text_completion"},
          {"created", spec.created}, {"model", ctx.model_name},
          {"choices", cs},           {"usage", usage_json(spec, choices)}};
}

std::string stream_chunk(const GenSpec& spec, int index, const nanoflow::RequestOutput& delta,
                         bool first, const ApiContext& ctx) {
  json c = {{"index", index},
            {"finish_reason", finish_json(delta)},
            {"logprobs", logprobs_json(spec, delta, ctx, 0)}};
  if (spec.chat) {
    json d = json::object();
    if (first) d["role"] = "assistant";
    if (!delta.text.empty() || first) d["content"] = delta.text;
    c["delta"] = d;
  } else {
    c["text"] = delta.text;
  }
  if (spec.return_token_ids) {
    if (first) c["prompt_token_ids"] = spec.prompts[static_cast<size_t>(index / spec.params.n)];
    c["token_ids"] = delta.token_ids;
  }
  json j = {{"id", spec.id},
            {"object", spec.chat ? "chat.completion.chunk" : "text_completion"},
            {"created", spec.created},
            {"model", ctx.model_name},
            {"choices", json::array({c})}};
  if (spec.include_usage) j["usage"] = nullptr;
  return "data: " + json_dump(j) + "\n\n";
}

std::vector<nanoflow::RequestOutput> split_delta(nanoflow::RequestOutput&& delta,
                                                 const ApiContext& ctx) {
  std::vector<nanoflow::RequestOutput> out;
  const size_t k = delta.token_ids.size();
  if (k <= 1) {
    out.push_back(std::move(delta));
    return out;
  }
  const std::string& text = delta.text;
  size_t pos = 0, end = 0;
  out.resize(k);
  for (size_t i = 0; i < k; ++i) {
    auto& p = out[i];
    p.id = delta.id;
    p.index = delta.index;
    p.prompt_tokens = delta.prompt_tokens;
    p.cached_prompt_tokens = delta.cached_prompt_tokens;
    p.completion_tokens = delta.completion_tokens - static_cast<int>(k - 1 - i);
    p.token_ids.push_back(delta.token_ids[i]);
    if (i < delta.token_logprobs.size()) p.token_logprobs.push_back(delta.token_logprobs[i]);
    if (i < delta.top_logprobs.size()) p.top_logprobs.push_back(std::move(delta.top_logprobs[i]));
    if (i + 1 == k) {
      p.text = text.substr(pos);
      p.finish_reason = delta.finish_reason;
      break;
    }
    if (ctx.tokenizer) {
      try {
        // Special tokens are not streamed (skip_special).
        if (!ctx.tokenizer->is_special(delta.token_ids[i]))
          end += ctx.tokenizer->token_bytes(delta.token_ids[i]).size();
      } catch (const nf::Error&) {
      }
    }
    size_t cut = std::min(end, text.size());
    while (cut > pos && cut < text.size() && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80)
      --cut;
    if (cut > pos) {
      p.text = text.substr(pos, cut - pos);
      pos = cut;
    }
  }
  return out;
}

std::string stream_usage_chunk(const GenSpec& spec,
                               const std::vector<nanoflow::RequestOutput>& choices,
                               const ApiContext& ctx) {
  json j = {{"id", spec.id},
            {"object", spec.chat ? "chat.completion.chunk" : "text_completion"},
            {"created", spec.created},
            {"model", ctx.model_name},
            {"choices", json::array()},
            {"usage", usage_json(spec, choices)}};
  return "data: " + json_dump(j) + "\n\n";
}

json models_response(const ApiContext& ctx) {
  const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  return {{"object", "list"},
          {"data", json::array({{{"id", ctx.model_name},
                                 {"object", "model"},
                                 {"created", now},
                                 {"owned_by", "nanoflow"},
                                 {"max_model_len", ctx.max_context}}})}};
}

}  // namespace nf::server
