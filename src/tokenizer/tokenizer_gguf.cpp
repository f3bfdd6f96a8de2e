// Tokenizer::from_gguf: the tokenizer.ggml.* metadata of a GGUF file, with llama.cpp's semantics
// ("llama": SentencePiece BPE by score with byte fallback; "gpt2": byte-level BPE with the
// pre-tokenizer regexes named by tokenizer.ggml.pre).
#include <algorithm>
#include <array>
#include <string_view>

#include "common/status.h"
#include "common/strings.h"
#include "model/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_core.h"
#include "tokenizer/unicode.h"

namespace nf {

namespace {

// tokenizer.ggml.token_type values.
enum GgufTokenType : int64_t {
  kTypeUndefined = 0,
  kTypeNormal = 1,
  kTypeUnknown = 2,
  kTypeControl = 3,
  kTypeUserDefined = 4,
  kTypeUnused = 5,
  kTypeByte = 6,
};

constexpr std::string_view kSpmSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space

// Control tokens that end a turn in common chat formats; like llama.cpp, they count as EOS even
// when the file names another eos_token_id.
constexpr std::array<std::string_view, 8> kEndOfTurnTexts = {
    "<|eot_id|>",    "<|eom_id|>",    "<|im_end|>",      "<|end|>",
    "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>"};

std::optional<int32_t> token_id_key(const GgufFile& g, const std::string& key, int32_t n) {
  auto v = g.get_int(key);
  if (!v) return std::nullopt;
  if (*v < 0 || *v >= n)
    fail("{}: {} = {} is outside the vocabulary [0, {})", g.path(), key, *v, n);
  return static_cast<int32_t>(*v);
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const GgufFile& g) {
  const std::string& src = g.path();
  auto core = std::make_unique<TokenizerCore>();
  core->source = src;
  const auto model = g.get_string("tokenizer.ggml.model");
  if (!model) fail("{}: tokenizer.ggml.model is missing (the file has no tokenizer)", src);
  if (*model != "llama" && *model != "gpt2") {
    fail("{}: tokenizer.ggml.model '{}' is not supported (supported: llama, gpt2)", src, *model);
  }
  const bool spm = *model == "llama";
  const auto* tokens = g.get_string_array("tokenizer.ggml.tokens");
  if (!tokens || tokens->empty()) fail("{}: tokenizer.ggml.tokens is missing or empty", src);
  const int32_t n = static_cast<int32_t>(tokens->size());
  const auto* types = g.get_int_array("tokenizer.ggml.token_type");
  if (types && types->size() != tokens->size()) {
    fail("{}: tokenizer.ggml.token_type has {} entries for {} tokens", src, types->size(), n);
  }
  auto type_of = [&](int32_t id) { return types ? (*types)[id] : int64_t{kTypeNormal}; };

  core->special.assign(n, 0);
  core->pieces.resize(n);
  for (int32_t id = 0; id < n; ++id) {
    const int64_t t = type_of(id);
    core->vocab.set(id, (*tokens)[id], t == kTypeNormal || t == kTypeUndefined);
    core->special[id] = t == kTypeControl || t == kTypeUnknown || t == kTypeUnused;
  }
  core->vocab.index_bytes();

  // Added tokens: control and unknown tokens are special (matched only when parsing special
  // tokens); user-defined tokens are always matched, as llama.cpp does.
  for (int32_t id = 0; id < n; ++id) {
    const int64_t t = type_of(id);
    if (t != kTypeControl && t != kTypeUnknown && t != kTypeUserDefined) continue;
    AddedToken a;
    a.id = id;
    a.content = (*tokens)[id];
    a.special = t != kTypeUserDefined;
    core->raw_tokens.add(a);
  }

  for (int32_t id = 0; id < n; ++id) {
    const int64_t t = type_of(id);
    const std::string& text = (*tokens)[id];
    if (t == kTypeNormal || t == kTypeUndefined) {
      core->pieces[id] =
          spm ? replace_all(text, kSpmSpace, " ") : byte_level_decode(text).value_or(text);
    } else {
      core->pieces[id] = text;
    }
  }
  for (int b = 0; b < 256; ++b) {
    const int32_t id = core->vocab.byte_token(static_cast<uint8_t>(b));
    if (id >= 0 && type_of(id) == kTypeByte)
      core->pieces[id] = std::string(1, static_cast<char>(b));
  }

  const auto unk = token_id_key(g, "tokenizer.ggml.unknown_token_id", n);
  std::string pre = "default";
  if (spm) {
    const auto* scores = g.get_float_array("tokenizer.ggml.scores");
    if (!scores || scores->size() != tokens->size()) {
      fail("{}: tokenizer.ggml.scores is missing or does not have one score per token", src);
    }
    core->model = SubwordModel::kSpm;
    core->spm = SpmModel(std::vector<float>(scores->begin(), scores->end()), unk);
    const bool add_space_prefix = g.get_bool("tokenizer.ggml.add_space_prefix").value_or(true);
    if (add_space_prefix) {
      core->normalizers.push_back({NormalizerStep::Kind::kPrepend, "", std::string(kSpmSpace)});
    }
    core->normalizers.push_back({NormalizerStep::Kind::kReplace, " ", std::string(kSpmSpace)});
    core->strip_leading_space = add_space_prefix;
  } else {
    pre = g.get_string("tokenizer.ggml.pre").value_or("default");
    auto pt = gguf_pre_tokenizer(pre);
    if (!pt) {
      fail(
          "{}: tokenizer.ggml.pre '{}' is not supported (supported: default, gpt-2, starcoder, "
          "refact, smollm, llama-bpe, llama3, qwen2)",
          src, pre);
    }
    core->pre_tokenizer = std::move(*pt);
    BpeOptions opts;
    opts.ignore_merges = pre == "llama-bpe" || pre == "llama3";
    core->bpe = BpeModel(opts);
    const auto* merges = g.get_string_array("tokenizer.ggml.merges");
    if (!merges) fail("{}: tokenizer.ggml.merges is missing (needed by a gpt2 tokenizer)", src);
    for (size_t i = 0; i < merges->size(); ++i) {
      const std::string& m = (*merges)[i];
      const size_t sp = m.find(' ', 1);
      if (sp == std::string::npos)
        fail("{}: tokenizer.ggml.merges[{}] '{}' has no space", src, i, m);
      // A merge whose parts are not tokens cannot apply to token ids; llama.cpp ignores it too.
      core->bpe.add_merge(core->vocab, std::string_view(m).substr(0, sp),
                          std::string_view(m).substr(sp + 1));
    }
  }

  core->bos_id = token_id_key(g, "tokenizer.ggml.bos_token_id", n);
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                          "tokenizer.ggml.eom_token_id"}) {
    if (auto id = token_id_key(g, key, n)) core->eos_ids.push_back(*id);
  }
  for (int32_t id = 0; id < n; ++id) {
    if (type_of(id) != kTypeControl) continue;
    for (std::string_view t : kEndOfTurnTexts) {
      if ((*tokens)[id] == t &&
          std::find(core->eos_ids.begin(), core->eos_ids.end(), id) == core->eos_ids.end()) {
        core->eos_ids.push_back(id);
      }
    }
  }

  const bool llama3 = pre == "llama-bpe" || pre == "llama3";
  const bool add_bos = g.get_bool("tokenizer.ggml.add_bos_token").value_or(spm || llama3);
  const bool add_eos = g.get_bool("tokenizer.ggml.add_eos_token").value_or(false);
  if (add_bos && core->bos_id) core->special_prefix.push_back(*core->bos_id);
  if (add_eos) {
    if (auto eos = token_id_key(g, "tokenizer.ggml.eos_token_id", n)) {
      core->special_suffix.push_back(*eos);
    }
  }
  core->chat_template = g.get_string("tokenizer.chat_template").value_or("");
  return std::make_unique<Tokenizer>(std::move(core));
}

}  // namespace nf
