#include "fuzz_targets.h"

#include <nanoflow/engine.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>

#include "../unit/model_test_files.h"
#include "common/json_file.h"
#include "common/status.h"
#include "model/model_loader.h"
#include "server/openai_api.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace nf::fuzz {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const fs::path kModels = fs::path(NANOFLOW_SOURCE_DIR) / "tests/fixtures/models";

int64_t g_accepted[5] = {};
void accept(Target t) {
  ++g_accepted[static_cast<int>(t)];
}

// A scratch directory of this process (targets that read files write their input there).
const fs::path& scratch() {
  static const fs::path d = [] {
    const fs::path p = fs::temp_directory_path() / ("nf_fuzz_" + std::to_string(::getpid()));
    fs::create_directories(p);
    return p;
  }();
  return d;
}

// ---- request bodies --------------------------------------------------------------------------

// The server's request path on llama3-tiny (which has a chat template): parse, validate,
// tokenize or render the template, submit to an engine, run a step or two, format the answer.
struct RequestState {
  std::unique_ptr<nanoflow::Engine> engine;
  std::unique_ptr<ChatTemplate> chat;
  server::ApiContext ctx;

  RequestState() {
    nanoflow::EngineConfig c;
    c.model = (kModels / "llama3-tiny").string();
    c.num_kv_blocks = 64;
    c.max_batch_tokens = 64;
    c.threads = 1;
    engine = nanoflow::Engine::create(c);
    ctx.tokenizer = engine->tokenizer();
    chat = std::make_unique<ChatTemplate>(ctx.tokenizer->chat_template());
    ctx.chat_template = chat.get();
    ctx.model_name = "m";
    ctx.max_context = engine->model_config().max_position_embeddings;
  }
};

void run_request(std::string_view data) {
  static RequestState st;
  json body;
  try {
    body = parse_json(data);
  } catch (const JsonError&) {
    return;
  }
  if (!body.is_object()) return;
  for (bool chat : {false, true}) {
    server::GenSpec spec;
    try {
      spec = server::parse_generation(body, chat, st.ctx);
    } catch (const server::ApiError&) {
      continue;
    } catch (const Error&) {
      continue;
    }
    // Bounded work per input: a few prompts, a couple of tokens each.
    spec.params.max_tokens = std::min(spec.params.max_tokens, 2);
    spec.params.min_tokens = std::min(spec.params.min_tokens, spec.params.max_tokens);
    spec.params.n = std::min(spec.params.n, 2);
    if (spec.prompts.size() > 3) spec.prompts.resize(3);
    std::vector<nanoflow::GenerateRequest> reqs;
    for (const auto& p : spec.prompts) reqs.push_back({p, spec.params});
    std::vector<nanoflow::RequestOutput> outs;
    try {
      outs = st.engine->generate(reqs);
    } catch (const Error&) {
      continue;
    }
    for (const auto& o : outs) NF_CHECK(o.finished() && o.error.empty(), "fuzz: {}", o.error);
    accept(Target::kRequest);
    (void)server::json_dump(server::completion_response(spec, outs, st.ctx));
    for (size_t i = 0; i < outs.size(); ++i) {
      auto copy = outs[i];
      for (const auto& piece : server::split_delta(std::move(copy), st.ctx))
        (void)server::stream_chunk(spec, static_cast<int>(i), piece, i == 0, st.ctx);
    }
  }
}

// ---- model files -----------------------------------------------------------------------------

void run_gguf(std::string_view data) {
  const fs::path p = scratch() / "fuzz.gguf";
  testing::write_bytes(p, std::string(data));
  if (load_model(p.string()).ok()) accept(Target::kGguf);  // a Result: errors are values
  try {
    auto tok = Tokenizer::load(p.string());
    auto ids = tok->encode("Hello world <s> 123", {});
    (void)tok->decode(ids);
  } catch (const Error&) {
  }
}

void run_safetensors(std::string_view data) {
  const fs::path dir = scratch() / "st";
  static const bool made = [&] {
    fs::create_directories(dir);
    std::ofstream(dir / "config.json") << testing::tiny_llama_config().dump();
    return true;
  }();
  (void)made;
  testing::write_bytes(dir / "model.safetensors", std::string(data));
  if (load_model(dir.string()).ok()) accept(Target::kSafetensors);
}

void use_tokenizer(const Tokenizer& tok, std::string_view text) {
  for (bool special : {false, true}) {
    EncodeOptions o;
    o.add_special = special;
    o.parse_special = special;
    const auto ids = tok.encode(text, o);
    const std::string back = tok.decode(ids, false);
    IncrementalDetokenizer d(tok, !special);
    std::string streamed;
    for (int32_t id : ids) streamed += d.push(id);
    streamed += d.finish();
    if (!special) NF_CHECK(streamed == tok.decode(ids, true), "fuzz: streamed text differs");
  }
}

void run_tokenizer_json(std::string_view data) {
  const fs::path dir = scratch() / "tj";
  static const bool made = [&] {
    fs::create_directories(dir);
    fs::copy_file(kModels / "llama3-tiny/tokenizer_config.json", dir / "tokenizer_config.json",
                  fs::copy_options::overwrite_existing);
    return true;
  }();
  (void)made;
  testing::write_bytes(dir / "tokenizer.json", std::string(data));
  std::unique_ptr<Tokenizer> tok;
  try {
    tok = Tokenizer::load(dir.string());
  } catch (const Error&) {
    return;
  }
  accept(Target::kTokenizerJson);
  for (std::string_view text : {"Hello, world!", "  spaces\n\n\ttabs ", "日本語 émoji 🙂",
                                "<|begin_of_text|>x", "aaaaaaaaab"}) {
    try {
      use_tokenizer(*tok, text);
    } catch (const Error&) {
    }
  }
}

// ---- text --------------------------------------------------------------------------------------

void run_text(std::string_view data) {
  static const std::vector<std::unique_ptr<Tokenizer>> toks = [] {
    std::vector<std::unique_ptr<Tokenizer>> t;
    for (const char* m : {"llama3-tiny", "qwen2-tiny", "llama2-tiny"})
      t.push_back(Tokenizer::load((kModels / m).string()));
    return t;
  }();
  for (const auto& tok : toks) {
    use_tokenizer(*tok, data);  // text must always encode: any throw is a bug
    accept(Target::kText);
    // The same bytes as token ids: unknown ids are nf::Error, never a crash.
    std::vector<int32_t> ids;
    for (size_t i = 0; i + 4 <= data.size() && ids.size() < 64; i += 4) {
      int32_t id;
      std::memcpy(&id, data.data() + i, 4);
      ids.push_back(id % (tok->vocab_size() + 8));
    }
    try {
      (void)tok->decode(ids);
    } catch (const Error&) {
    }
  }
}

}  // namespace

int64_t accepted(Target t) {
  return g_accepted[static_cast<int>(t)];
}

const char* target_name(Target t) {
  switch (t) {
    case Target::kRequest:
      return "request";
    case Target::kGguf:
      return "gguf";
    case Target::kSafetensors:
      return "safetensors";
    case Target::kTokenizerJson:
      return "tokenizer_json";
    case Target::kText:
      return "text";
  }
  return "?";
}

std::vector<Target> all_targets() {
  return {Target::kRequest, Target::kGguf, Target::kSafetensors, Target::kTokenizerJson,
          Target::kText};
}

void run_target(Target t, std::string_view data) {
  switch (t) {
    case Target::kRequest:
      return run_request(data);
    case Target::kGguf:
      return run_gguf(data);
    case Target::kSafetensors:
      return run_safetensors(data);
    case Target::kTokenizerJson:
      return run_tokenizer_json(data);
    case Target::kText:
      return run_text(data);
  }
}

std::vector<std::string> seed_corpus(Target t) {
  using namespace testing;
  switch (t) {
    case Target::kRequest:
      return {
          R"({"prompt": "Hello", "max_tokens": 2, "temperature": 0})",
          R"({"prompt": [1, 2, 3], "max_tokens": 2, "logprobs": 3, "stop": ["x"], "n": 2})",
          R"({"prompt": ["a", "b"], "top_p": 0.5, "top_k": 5, "seed": 7, "logit_bias": {"5": 10}})",
          R"({"prompt": [[1, 2], [3]], "min_tokens": 1, "stop_token_ids": [4], "ignore_eos": true})",
          R"({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "logprobs": true, "top_logprobs": 2})",
          R"({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": [{"type": "text", "text": "x"}]}], "stream": true, "stream_options": {"include_usage": true}})",
          R"({"messages": [{"role": "assistant", "content": null, "tool_calls": []}, {"role": "user", "content": "y"}], "max_completion_tokens": 1, "presence_penalty": 1, "frequency_penalty": -1, "repetition_penalty": 1.3})",
      };
    case Target::kGguf: {
      const ModelConfig c = parse_hf_config(tiny_llama_config(), "config.json");
      json wide = tiny_llama_config();
      wide["intermediate_size"] = 64;  // rows of 32-value blocks for the quantized types
      const ModelConfig q = parse_hf_config(wide, "config.json");
      return {tiny_gguf(c, tiny_tensors(c), GgmlType::F16, 64).bytes(),
              tiny_gguf(q, tiny_tensors(q), GgmlType::Q4_1, 60).bytes(),
              tiny_gguf(q, tiny_tensors(q), GgmlType::Q8_0).bytes()};
    }
    case Target::kSafetensors: {
      const ModelConfig c = parse_hf_config(tiny_llama_config(), "config.json");
      return {safetensors_bytes(tiny_tensors(c))};
    }
    case Target::kTokenizerJson:
      return {read_bytes(kModels / "llama3-tiny/tokenizer.json"),
              read_bytes(kModels / "qwen2-tiny/tokenizer.json"),
              read_bytes(kModels / "llama2-tiny/tokenizer.json")};
    case Target::kText:
      return {"Hello, world! How are you?",
              "  \n\n\t  x",
              "日本語のテキスト",
              "🙂🙃 é è",
              "<|begin_of_text|><|im_start|>user\nhi<|im_end|>",
              "123456789 0.5e10",
              std::string(2000, ' ') + "x",
              "\xff\xfe invalid \xc3"};
  }
  return {};
}

std::vector<std::string> dictionary(Target t) {
  switch (t) {
    case Target::kRequest:
      return {"[",
              "]",
              "{",
              "}",
              ",",
              ":",
              "\"",
              "1e400",
              "-1e999",
              "4294967301",
              "18446744073709551615",
              "-1",
              "null",
              "true",
              "0.0",
              "\"\\u0000\"",
              "\"\\ud800\"",
              "\"prompt\"",
              "\"messages\"",
              "\"n\"",
              "\"max_tokens\"",
              "\"min_tokens\"",
              "\"logit_bias\"",
              "\"stop_token_ids\"",
              "\"top_logprobs\"",
              "\"content\"",
              "\"role\"",
              "\"tool_calls\"",
              "\"stream\"",
              "\"logprobs\"",
              "[[[[[[[[",
              "\"\xff\""};
    case Target::kGguf:
    case Target::kSafetensors:
      return {std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8),
              std::string(8, '\0'),
              std::string("\x08\x00\x00\x00", 4),
              std::string("\x09\x00\x00\x00", 4),
              "\"dtype\"",
              "\"F8_E4M3\"",
              "\"shape\"",
              "\"data_offsets\"",
              "[[[[[[",
              "1e400",
              "GGUF",
              "tokenizer.ggml.tokens"};
    case Target::kTokenizerJson:
      return {"\"Regex\"",     "(a+)+$",        "\\\\p{L}",   "\"Split\"",
              "\"ByteLevel\"", "\"Metaspace\"", "\"merges\"", "\"vocab\"",
              "[[[[[",         "null",          "-1",         "4294967297",
              "\"\""};
    case Target::kText:
      return {" ",
              "\n",
              "\t",
              "<|begin_of_text|>",
              "<|im_end|>",
              "<s>",
              "\xf0\x9f\x99\x82",
              "\xe2\x80\x8b",
              "\xc3",
              "\xed\xa0\x80",
              std::string(1, '\0')};
  }
  return {};
}

}  // namespace nf::fuzz
