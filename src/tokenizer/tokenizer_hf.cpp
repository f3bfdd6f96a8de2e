// Tokenizer::from_hf_dir: a Hugging Face tokenizer.json (the `tokenizers` library's format) plus
// tokenizer_config.json, special_tokens_map.json, generation_config.json and
// chat_template.jinja when present. Supported: model BPE; normalizers NFC, Prepend, Replace
// (string patterns) and Sequence; pre-tokenizers Split, ByteLevel, Digits, Metaspace and
// Sequence; post-processors TemplateProcessing, ByteLevel, RobertaProcessing, BertProcessing and
// Sequence; decoders ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace and Sequence.
// Anything else is a clear nf::Error rather than a silently different tokenization.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "common/json_file.h"
#include "common/status.h"
#include "common/strings.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_core.h"
#include "tokenizer/unicode.h"

namespace nf {

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

json read_json(const fs::path& p) {
  return read_json_file(p.string());
}

json read_json_if_exists(const fs::path& p) {
  std::error_code ec;
  if (!fs::exists(p, ec)) return json::object();
  json j = read_json(p);
  if (!j.is_object()) fail("{}: expected a JSON object", p.string());
  return j;
}

bool get_bool(const json& j, const char* key, bool dflt) {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? dflt : it->get<bool>();
}

std::string get_string(const json& j, const char* key, const std::string& dflt = "") {
  auto it = j.find(key);
  return it == j.end() || it->is_null() ? dflt : it->get<std::string>();
}

// The token text of a tokenizer_config.json / special_tokens_map.json entry: "text" or
// {"content": "text", ...}; nullopt when absent or null.
std::optional<std::string> special_token_text(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content")) return (*it)["content"].get<std::string>();
  return std::nullopt;
}

// A Split/Replace "pattern": {"String": s} or {"Regex": r}.
struct Pattern {
  std::string text;
  bool regex = false;
};
Pattern parse_pattern(const json& p, const std::string& where) {
  if (p.contains("String")) return {p["String"].get<std::string>(), false};
  if (p.contains("Regex")) return {p["Regex"].get<std::string>(), true};
  fail("{}.pattern: expected {{\"String\": ...}} or {{\"Regex\": ...}}", where);
}

PreTokenizerStep step_of(PreTokenizerStep::Kind kind) {
  PreTokenizerStep s;
  s.kind = kind;
  return s;
}

// Builds the TokenizerCore from the parsed files. `src` prefixes every error message.
class HfBuilder {
 public:
  HfBuilder(TokenizerCore& core, std::string src) : c_(core), src_(std::move(src)) {}

  void normalizer(const json& n, const std::string& where) {
    if (n.is_null()) return;
    const std::string type = get_string(n, "type");
    if (type == "Sequence") {
      const json& list = n.at("normalizers");
      for (size_t i = 0; i < list.size(); ++i) {
        normalizer(list[i], fmt::format("{}.normalizers[{}]", where, i));
      }
    } else if (type == "NFC") {
      c_.normalizers.push_back({NormalizerStep::Kind::kNfc, "", ""});
    } else if (type == "Prepend") {
      c_.normalizers.push_back({NormalizerStep::Kind::kPrepend, "", n.at("prepend")});
    } else if (type == "Replace") {
      const Pattern p = parse_pattern(n.at("pattern"), src_ + ": " + where);
      if (p.regex) fail("{}: {}: Replace with a Regex pattern is not supported", src_, where);
      c_.normalizers.push_back({NormalizerStep::Kind::kReplace, p.text, n.at("content")});
    } else {
      fail(
          "{}: {}.type '{}' is not a supported normalizer (supported: Sequence, NFC, Prepend, "
          "Replace)",
          src_, where, type);
    }
  }

  void pre_tokenizer(const json& p, const std::string& where) {
    if (p.is_null()) return;
    const std::string type = get_string(p, "type");
    PreTokenizer& pt = c_.pre_tokenizer;
    if (type == "Sequence") {
      const json& list = p.at("pretokenizers");
      for (size_t i = 0; i < list.size(); ++i) {
        pre_tokenizer(list[i], fmt::format("{}.pretokenizers[{}]", where, i));
      }
    } else if (type == "Split") {
      const Pattern pat = parse_pattern(p.at("pattern"), src_ + ": " + where);
      split(pat.text, behavior(get_string(p, "behavior"), where), get_bool(p, "invert", false),
            !pat.regex, where);
    } else if (type == "ByteLevel") {
      if (get_bool(p, "add_prefix_space", false)) {
        pt.add(step_of(PreTokenizerStep::Kind::kPrefixSpace));
      }
      if (get_bool(p, "use_regex", true)) {
        split(kGpt2Pattern, SplitBehavior::kIsolated, false, false, where);
      }
      pt.add(step_of(PreTokenizerStep::Kind::kByteMap));
      byte_level_ = true;
    } else if (type == "Digits") {
      split(get_bool(p, "individual_digits", false) ? R"(\p{N})" : R"(\p{N}+)",
            SplitBehavior::kIsolated, false, false, where);
    } else if (type == "Metaspace") {
      PreTokenizerStep step;
      step.kind = PreTokenizerStep::Kind::kMetaspace;
      step.replacement = get_string(p, "replacement", "\xE2\x96\x81");
      step.prepend = prepend_scheme(p, where);
      pt.add(std::move(step));
      if (get_bool(p, "split", true)) {
        split(get_string(p, "replacement", "\xE2\x96\x81"), SplitBehavior::kMergedWithNext, false,
              true, where);
      }
    } else {
      fail(
          "{}: {}.type '{}' is not a supported pre-tokenizer (supported: Sequence, Split, "
          "ByteLevel, Digits, Metaspace)",
          src_, where, type);
    }
  }

  void post_processor(const json& p, const std::string& where) {
    if (p.is_null()) return;
    const std::string type = get_string(p, "type");
    if (type == "Sequence") {
      const json& list = p.at("processors");
      for (size_t i = 0; i < list.size(); ++i) {
        post_processor(list[i], fmt::format("{}.processors[{}]", where, i));
      }
    } else if (type == "ByteLevel") {
      // Only adjusts offsets.
    } else if (type == "TemplateProcessing") {
      const json& single = p.at("single");
      const json& specials = p.value("special_tokens", json::object());
      bool seen_sequence = false;
      for (const json& item : single) {
        if (item.contains("Sequence")) {
          seen_sequence = true;
          continue;
        }
        const std::string name = item.at("SpecialToken").at("id").get<std::string>();
        std::vector<int32_t> ids;
        if (specials.contains(name)) {
          ids = specials[name].at("ids").get<std::vector<int32_t>>();
        } else if (auto id = c_.vocab.find(name)) {
          ids = {*id};
        } else {
          fail("{}: {}.single names special token '{}' that is not in the vocabulary", src_, where,
               name);
        }
        auto& dst = seen_sequence ? c_.special_suffix : c_.special_prefix;
        dst.insert(dst.end(), ids.begin(), ids.end());
      }
    } else if (type == "RobertaProcessing" || type == "BertProcessing") {
      c_.special_prefix.push_back(p.at("cls").at(1).get<int32_t>());
      c_.special_suffix.push_back(p.at("sep").at(1).get<int32_t>());
    } else {
      fail("{}: {}.type '{}' is not a supported post-processor", src_, where, type);
    }
    has_post_processor_ = true;
  }

  // The per-token steps of the decoder chain are applied to every id's text once, here; what
  // acts on the whole output (a Strip after Fuse, Metaspace's first-token prefix) becomes
  // strip_leading_space.
  // Without a decoder the token texts are concatenated (the tokenizers library would join them
  // with spaces, which no LLM tokenizer relies on).
  void decoder(const json& d, const std::string& where) {
    if (d.is_null()) return;
    const std::string type = get_string(d, "type");
    if (type == "Sequence") {
      const json& list = d.at("decoders");
      for (size_t i = 0; i < list.size(); ++i) {
        decoder(list[i], fmt::format("{}.decoders[{}]", where, i));
      }
    } else if (type == "ByteLevel") {
      // A token with a character outside the byte-level alphabet is kept as it is.
      for_each_piece([](std::string& p, int32_t) {
        if (auto bytes = byte_level_decode(p)) p = std::move(*bytes);
      });
    } else if (type == "Replace") {
      const Pattern pat = parse_pattern(d.at("pattern"), src_ + ": " + where);
      if (pat.regex) fail("{}: {}: Replace with a Regex pattern is not supported", src_, where);
      const std::string content = d.at("content");
      for_each_piece([&](std::string& p, int32_t) { p = replace_all(p, pat.text, content); });
    } else if (type == "ByteFallback") {
      for (int b = 0; b < 256; ++b) {
        const int32_t id = c_.vocab.byte_token(static_cast<uint8_t>(b));
        if (id >= 0) c_.pieces[id] = std::string(1, static_cast<char>(b));
      }
    } else if (type == "Fuse") {
      fused_ = true;
    } else if (type == "Strip") {
      const std::string content = get_string(d, "content", " ");
      const int start = d.value("start", 0), stop = d.value("stop", 0);
      if (fused_) {
        if (content != " " || start > 1 || stop != 0) {
          fail("{}: {}: Strip after Fuse is supported only as (content ' ', start <= 1, stop 0)",
               src_, where);
        }
        c_.strip_leading_space = c_.strip_leading_space || start == 1;
      } else {
        for_each_piece([&](std::string& p, int32_t) {
          for (int i = 0; i < start && p.starts_with(content); ++i) p.erase(0, content.size());
          for (int i = 0; i < stop && p.ends_with(content); ++i) {
            p.erase(p.size() - content.size());
          }
        });
      }
    } else if (type == "Metaspace") {
      const std::string rep = get_string(d, "replacement", "\xE2\x96\x81");
      for_each_piece([&](std::string& p, int32_t) { p = replace_all(p, rep, " "); });
      if (prepend_scheme(d, where) != PrependScheme::kNever) c_.strip_leading_space = true;
    } else {
      fail(
          "{}: {}.type '{}' is not a supported decoder (supported: Sequence, ByteLevel, Replace, "
          "ByteFallback, Fuse, Strip, Metaspace)",
          src_, where, type);
    }
  }

  bool byte_level() const { return byte_level_; }
  bool has_post_processor() const { return has_post_processor_; }

 private:
  void split(const std::string& pattern, SplitBehavior b, bool invert, bool literal,
             const std::string& where) {
    try {
      c_.pre_tokenizer.add_split(pattern, b, invert, literal);
    } catch (const Error& e) {
      fail("{}: {}: {}", src_, where, e.what());
    }
  }

  SplitBehavior behavior(const std::string& name, const std::string& where) {
    if (name == "Isolated") return SplitBehavior::kIsolated;
    if (name == "Removed") return SplitBehavior::kRemoved;
    if (name == "MergedWithPrevious") return SplitBehavior::kMergedWithPrevious;
    if (name == "MergedWithNext") return SplitBehavior::kMergedWithNext;
    if (name == "Contiguous") return SplitBehavior::kContiguous;
    fail("{}: {}.behavior '{}' is not a known split behavior", src_, where, name);
  }

  PrependScheme prepend_scheme(const json& j, const std::string& where) {
    if (j.contains("prepend_scheme")) {
      const std::string s = j["prepend_scheme"];
      if (s == "always") return PrependScheme::kAlways;
      if (s == "first") return PrependScheme::kFirst;
      if (s == "never") return PrependScheme::kNever;
      fail("{}: {}.prepend_scheme '{}' is not known", src_, where, s);
    }
    return get_bool(j, "add_prefix_space", true) ? PrependScheme::kAlways : PrependScheme::kNever;
  }

  template <typename Fn>
  void for_each_piece(Fn fn) {
    for (int32_t id = 0; id < static_cast<int32_t>(c_.pieces.size()); ++id) fn(c_.pieces[id], id);
  }

  TokenizerCore& c_;
  std::string src_;
  bool byte_level_ = false;
  bool fused_ = false;
  bool has_post_processor_ = false;
};

// Token ids above this are a corrupt file, not a vocabulary (the largest real ones are ~256k).
constexpr int64_t kMaxTokenId = int64_t{1} << 24;

int32_t checked_id(int64_t id, const std::string& src, const char* where) {
  if (id < 0 || id >= kMaxTokenId) fail("{}: {} has token id {} out of range", src, where, id);
  return static_cast<int32_t>(id);
}

void load_model(TokenizerCore& c, const json& m, const std::string& src) {
  const std::string type = get_string(m, "type", "BPE");
  if (type != "BPE") {
    fail("{}: model.type '{}' is not supported (supported: BPE)", src, type);
  }
  if (!get_string(m, "continuing_subword_prefix").empty() ||
      !get_string(m, "end_of_word_suffix").empty()) {
    fail("{}: model.continuing_subword_prefix / end_of_word_suffix are not supported", src);
  }
  if (m.contains("dropout") && !m["dropout"].is_null() && m["dropout"].get<double>() != 0.0) {
    fail("{}: model.dropout is not supported", src);
  }
  for (const auto& [text, id] : m.at("vocab").items()) {
    c.vocab.set(checked_id(id.get<int64_t>(), src, "model.vocab"), text, true);
  }
}

void load_merges(TokenizerCore& c, const json& m, const std::string& src) {
  BpeOptions opts;
  opts.byte_fallback = get_bool(m, "byte_fallback", false);
  opts.fuse_unk = get_bool(m, "fuse_unk", false);
  opts.ignore_merges = get_bool(m, "ignore_merges", false);
  if (auto unk = special_token_text(m, "unk_token")) {
    opts.unk_id = c.vocab.find(*unk);
    if (!opts.unk_id) fail("{}: model.unk_token '{}' is not in the vocabulary", src, *unk);
  }
  c.bpe = BpeModel(opts);
  const json& merges = m.at("merges");
  for (size_t i = 0; i < merges.size(); ++i) {
    const json& mg = merges[i];
    std::string left, right;
    if (mg.is_string()) {
      const std::string s = mg.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos) {
        fail("{}: model.merges[{}] '{}' is not two tokens separated by one space", src, i, s);
      }
      left = s.substr(0, sp);
      right = s.substr(sp + 1);
    } else {
      if (!mg.is_array() || mg.size() != 2) fail("{}: model.merges[{}] is not a pair", src, i);
      left = mg[0].get<std::string>();
      right = mg[1].get<std::string>();
    }
    if (!c.bpe.add_merge(c.vocab, left, right)) {
      fail("{}: model.merges[{}] ('{}', '{}') uses a token that is not in model.vocab", src, i,
           left, right);
    }
  }
}

std::string read_text_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  if (!f) fail("{}: cannot open", p.string());
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string find_chat_template(const fs::path& dir, const json& cfg) {
  std::error_code ec;
  if (fs::exists(dir / "chat_template.jinja", ec))
    return read_text_file(dir / "chat_template.jinja");
  auto it = cfg.find("chat_template");
  if (it == cfg.end()) {
    const json j = read_json_if_exists(dir / "chat_template.json");
    it = j.find("chat_template");
    if (it == j.end() || !it->is_string()) return "";
    return it->get<std::string>();
  }
  if (it->is_string()) return it->get<std::string>();
  if (it->is_array()) {
    // Named templates: [{"name": "default", "template": "..."}, ...]; prefer "default".
    for (const json& t : *it) {
      if (get_string(t, "name") == "default") return get_string(t, "template");
    }
    if (!it->empty()) return get_string((*it)[0], "template");
  }
  return "";
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_hf_dir(const std::string& dir) {
  const fs::path d(dir);
  const fs::path tj_path = d / "tokenizer.json";
  std::error_code ec;
  if (!fs::exists(tj_path, ec)) {
    fail("{}: no tokenizer.json (only tokenizer.json tokenizers are supported)", dir);
  }
  const std::string src = tj_path.string();
  const json tj = read_json(tj_path);
  const json cfg = read_json_if_exists(d / "tokenizer_config.json");
  const json stm = read_json_if_exists(d / "special_tokens_map.json");
  const json gen = read_json_if_exists(d / "generation_config.json");

  auto core = std::make_unique<TokenizerCore>();
  TokenizerCore& c = *core;
  c.source = src;
  try {
    const json& model = tj.at("model");
    load_model(c, model, src);
    std::vector<AddedToken> added;
    for (const json& a : tj.value("added_tokens", json::array())) {
      AddedToken t;
      t.id = checked_id(a.at("id").get<int64_t>(), src, "added_tokens");
      t.content = a.at("content").get<std::string>();
      t.special = get_bool(a, "special", false);
      t.lstrip = get_bool(a, "lstrip", false);
      t.rstrip = get_bool(a, "rstrip", false);
      t.single_word = get_bool(a, "single_word", false);
      t.normalized = get_bool(a, "normalized", !t.special);
      // An added token that is also a model token keeps its model role.
      const bool in_model = t.id < c.vocab.size() && c.vocab.text(t.id) == t.content &&
                            c.vocab.find_model(t.content) == t.id;
      c.vocab.set(t.id, t.content, in_model);
      added.push_back(std::move(t));
    }
    c.vocab.index_bytes();
    load_merges(c, model, src);

    HfBuilder b(c, src);
    b.normalizer(tj.value("normalizer", json()), "normalizer");
    b.pre_tokenizer(tj.value("pre_tokenizer", json()), "pre_tokenizer");
    // Added tokens matched in normalized text are stored normalized, as the tokenizers library
    // does.
    for (AddedToken& t : added) {
      if (t.normalized) {
        t.content = normalize(c.normalizers, t.content);
        c.normalized_tokens.add(t);
      } else {
        c.raw_tokens.add(t);
      }
    }

    const int32_t n = c.vocab.size();
    c.pieces.resize(n);
    c.special.assign(n, 0);
    for (int32_t id = 0; id < n; ++id) c.pieces[id] = c.vocab.text(id);
    for (const AddedToken& t : added) c.special[t.id] = t.special ? 1 : 0;
    b.decoder(tj.value("decoder", json()), "decoder");
    b.post_processor(tj.value("post_processor", json()), "post_processor");

    // Special tokens named in the configs.
    auto config_token = [&](const char* key) -> std::optional<int32_t> {
      auto text = special_token_text(cfg, key);
      if (!text) text = special_token_text(stm, key);
      if (!text) return std::nullopt;
      auto id = c.vocab.find(*text);
      if (!id)
        fail("{}: {} '{}' is not in the vocabulary", (d / "tokenizer_config.json").string(), key,
             *text);
      return id;
    };
    c.bos_id = config_token("bos_token");
    if (auto eos = config_token("eos_token")) c.eos_ids.push_back(*eos);
    if (auto it = gen.find("eos_token_id"); it != gen.end() && !it->is_null()) {
      std::vector<int32_t> ids = it->is_array() ? it->get<std::vector<int32_t>>()
                                                : std::vector<int32_t>{it->get<int32_t>()};
      for (int32_t id : ids) {
        if (id >= 0 && id < n &&
            std::find(c.eos_ids.begin(), c.eos_ids.end(), id) == c.eos_ids.end()) {
          c.eos_ids.push_back(id);
        }
      }
    }
    if (!b.has_post_processor()) {
      if (get_bool(cfg, "add_bos_token", false) && c.bos_id) c.special_prefix.push_back(*c.bos_id);
      if (get_bool(cfg, "add_eos_token", false) && !c.eos_ids.empty()) {
        c.special_suffix.push_back(c.eos_ids.front());
      }
    }
    c.chat_template = find_chat_template(d, cfg);
  } catch (const json::exception& e) {
    fail("{}: unexpected JSON content in tokenizer.json or its config files: {}", dir, e.what());
  }
  return std::make_unique<Tokenizer>(std::move(core));
}

}  // namespace nf
