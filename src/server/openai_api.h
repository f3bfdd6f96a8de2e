// The OpenAI schema: request bodies of /v1/completions and /v1/chat/completions to prompts and
// SamplingParams, and engine outputs to response objects and SSE chunks.
#pragma once

#include <nanoflow/request_output.h>
#include <nanoflow/sampling_params.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace nf {
class ChatTemplate;
class Tokenizer;
}  // namespace nf

namespace nf::server {

// An OpenAI-style error: {"error": {"message", "type", "param", "code"}} with an HTTP status.
struct ApiError {
  int status = 400;
  std::string message;
  std::string param;  // "" -> null
  std::string code;   // "" -> null
  std::string type() const;
  std::string body() const;
};

struct ApiContext {
  const nf::Tokenizer* tokenizer = nullptr;         // null for dummy models
  const nf::ChatTemplate* chat_template = nullptr;  // null: chat is refused
  std::string chat_template_error;                  // why chat_template is null
  std::string model_name;
  int64_t max_context = 0;
};

// One parsed generation request.
struct GenSpec {
  bool chat = false;
  bool stream = false;
  bool include_usage = false;     // stream_options.include_usage
  bool return_token_ids = false;  // vLLM extension
  bool want_logprobs = false;     // completions: logprobs given; chat: logprobs = true
  std::string id;                 // "cmpl-..." / "chatcmpl-..."
  int64_t created = 0;
  std::vector<std::vector<int32_t>> prompts;  // one per prompt (completions may have several)
  nanoflow::SamplingParams params;
};

// Throws ApiError. Validates types and ranges, tokenizes or renders the chat template, and
// checks the context length.
GenSpec parse_generation(const nlohmann::json& body, bool chat, const ApiContext& ctx);

// The non-streaming response; choices[i] holds everything choice i generated.
nlohmann::json completion_response(const GenSpec& spec,
                                   const std::vector<nanoflow::RequestOutput>& choices,
                                   const ApiContext& ctx);
// One SSE event ("data: {...}\n\n") for a delta of choice `index`; `first` marks the choice's
// first chunk (chat adds the assistant role; return_token_ids adds prompt_token_ids).
std::string stream_chunk(const GenSpec& spec, int index, const nanoflow::RequestOutput& delta,
                         bool first, const ApiContext& ctx);
// Streaming sends one token per chunk: splits a delta with several tokens (the engine or the
// dispatcher may batch them) into one delta per token. The delta's text is dealt out in order:
// token i's piece ends where the byte lengths of tokens 0..i end (Tokenizer::token_bytes; 0 for
// special tokens), moved back to a UTF-8 character boundary, so the bytes of an incomplete
// character go with the token that completes it; the last token takes the rest (e.g. text held
// back earlier for a stop string and released now). The pieces concatenate to the delta's text
// exactly; logprobs go with their token; finish_reason only with the last.
std::vector<nanoflow::RequestOutput> split_delta(nanoflow::RequestOutput&& delta,
                                                 const ApiContext& ctx);
// The final usage event (stream_options.include_usage).
std::string stream_usage_chunk(const GenSpec& spec,
                               const std::vector<nanoflow::RequestOutput>& choices,
                               const ApiContext& ctx);
nlohmann::json models_response(const ApiContext& ctx);

std::string json_dump(const nlohmann::json& j);

}  // namespace nf::server
