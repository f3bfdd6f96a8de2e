#include "tokenizer/tokenizer.h"

#include <filesystem>

#include "common/status.h"
#include "model/gguf.h"
#include "tokenizer/tokenizer_core.h"
#include "tokenizer/unicode.h"

namespace nf {

Tokenizer::Tokenizer(std::unique_ptr<TokenizerCore> core) : core_(std::move(core)) {
  NF_CHECK(core_ != nullptr, "null tokenizer core");
  NF_CHECK(static_cast<int32_t>(core_->pieces.size()) == core_->vocab.size() &&
               core_->special.size() == core_->pieces.size(),
           "{}: decode tables do not cover the vocabulary", core_->source);
}

Tokenizer::~Tokenizer() = default;

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_directory(p, ec)) return from_hf_dir(path);
  if (!fs::exists(p, ec)) fail("{}: no such file or directory", path);
  if (p.filename() == "tokenizer.json") {
    return from_hf_dir(p.has_parent_path() ? p.parent_path().string() : ".");
  }
  if (p.extension() == ".gguf") {
    auto gguf = GgufFile::open(path);
    return from_gguf(*gguf);
  }
  fail(
      "{}: not a tokenizer source (expected a .gguf file, a model directory with "
      "tokenizer.json, or a tokenizer.json path)",
      path);
}

// ---- encoding ----

std::vector<int32_t> Tokenizer::encode(std::string_view text, const EncodeOptions& opts) const {
  std::string sanitized;
  if (!utf8_is_valid(text)) {
    sanitized = utf8_sanitize(text);
    text = sanitized;
  }
  std::vector<int32_t> out;
  if (opts.add_special) out = core_->special_prefix;
  std::vector<TextSegment> segments;
  core_->raw_tokens.split(text, opts.parse_special, segments);
  for (const TextSegment& s : segments) {
    if (s.id >= 0) {
      out.push_back(s.id);
    } else {
      encode_segment(text.substr(s.begin, s.end - s.begin), s.begin == 0, out);
    }
  }
  if (opts.add_special) {
    out.insert(out.end(), core_->special_suffix.begin(), core_->special_suffix.end());
  }
  return out;
}

// One segment of text between raw-matched added tokens: normalize it, then cut out the added
// tokens that match normalized text. first: the segment starts the input.
void Tokenizer::encode_segment(std::string_view text, bool first, std::vector<int32_t>& out) const {
  const std::string norm = normalize(core_->normalizers, text);
  if (core_->normalized_tokens.empty()) {
    encode_words(norm, first, out);
    return;
  }
  std::vector<TextSegment> segments;
  core_->normalized_tokens.split(norm, /*parse_special=*/true, segments);
  for (const TextSegment& s : segments) {
    if (s.id >= 0) {
      out.push_back(s.id);
    } else {
      encode_words(std::string_view(norm).substr(s.begin, s.end - s.begin), first && s.begin == 0,
                   out);
    }
  }
}

// Bounded work per input (as tiktoken does): text is cut inside any run of whitespace or of
// non-whitespace longer than kMaxRunChars characters, and each slice is pre-tokenized on its own,
// so that neither the regexes nor BPE ever see a pathological run (10 MB of spaces hit PCRE2's
// match limit). Text without such a run is one slice: its tokens do not change.
static constexpr size_t kMaxRunChars = 25000;

static std::vector<std::string_view> run_slices(std::string_view text) {
  std::vector<std::string_view> slices;
  auto is_space = [](unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); };
  size_t start = 0, run = 0;
  bool space = !text.empty() && is_space(static_cast<unsigned char>(text[0]));
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if ((c & 0xC0) == 0x80) continue;  // inside a character
    const bool sp = is_space(c);
    if (sp != space) {
      space = sp;
      run = 1;
    } else if (++run > kMaxRunChars) {
      slices.push_back(text.substr(start, i - start));
      start = i;
      run = 1;
    }
  }
  slices.push_back(text.substr(start));
  return slices;
}

void Tokenizer::encode_words(std::string_view text, bool first, std::vector<int32_t>& out) const {
  if (text.size() > kMaxRunChars) {
    const std::vector<std::string_view> slices = run_slices(text);
    if (slices.size() > 1) {
      for (size_t i = 0; i < slices.size(); ++i) encode_slice(slices[i], first && i == 0, out);
      return;
    }
  }
  encode_slice(text, first, out);
}

void Tokenizer::encode_slice(std::string_view text, bool first, std::vector<int32_t>& out) const {
  for (const std::string& word : core_->pre_tokenizer.run(text, first)) {
    if (core_->model == SubwordModel::kSpm) {
      core_->spm.encode(core_->vocab, word, out);
    } else {
      core_->bpe.encode(core_->vocab, word, out);
    }
  }
}

// ---- decoding ----

void Tokenizer::check_id(int32_t id) const {
  if (id < 0 || id >= vocab_size()) {
    fail("{}: token id {} is outside the vocabulary [0, {})", core_->source, id, vocab_size());
  }
}

const std::string& Tokenizer::token_bytes(int32_t id) const {
  check_id(id);
  return core_->pieces[id];
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  std::string bytes;
  for (int32_t id : ids) {
    check_id(id);
    if (skip_special && core_->special[id]) continue;
    bytes.append(core_->pieces[id]);
  }
  if (core_->strip_leading_space && !bytes.empty() && bytes[0] == ' ') bytes.erase(0, 1);
  return utf8_is_valid(bytes) ? bytes : utf8_sanitize(bytes);
}

// ---- accessors ----

int32_t Tokenizer::vocab_size() const {
  return core_->vocab.size();
}
std::optional<int32_t> Tokenizer::bos_id() const {
  return core_->bos_id;
}
std::vector<int32_t> Tokenizer::eos_ids() const {
  return core_->eos_ids;
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && core_->special[id] != 0;
}

const std::string& Tokenizer::chat_template() const {
  return core_->chat_template;
}

std::string Tokenizer::token_text(int32_t id) const {
  check_id(id);
  return core_->vocab.text(id);
}

std::optional<int32_t> Tokenizer::token_id(std::string_view text) const {
  return core_->vocab.find(text);
}

// ---- incremental detokenizer ----
//
// The decoded text is a pure function of the concatenated piece bytes (minus an optional leading
// space), so streaming only has to hold back the tail of the byte stream that is a well-formed
// but incomplete UTF-8 sequence; complete characters and ill-formed subparts (as U+FFFD) are
// final as soon as they are seen, exactly as utf8_sanitize() would treat them in the whole text.

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tok, bool skip_special)
    : tok_(tok), skip_special_(skip_special) {}

std::string IncrementalDetokenizer::push(int32_t id) {
  const std::string& piece = tok_.token_bytes(id);
  if (skip_special_ && tok_.is_special(id)) return {};
  std::string_view bytes = piece;
  if (!started_ && !bytes.empty()) {
    started_ = true;
    if (tok_.core_->strip_leading_space && bytes[0] == ' ') bytes.remove_prefix(1);
  }
  pending_.append(bytes);
  std::string out;
  size_t i = 0;
  while (i < pending_.size()) {
    const Utf8Step st = utf8_step(pending_, i);
    if (st.status == Utf8Status::kIncomplete) break;
    if (st.status == Utf8Status::kOk) {
      out.append(pending_, i, st.len);
    } else {
      out.append(kReplacementChar);
    }
    i += st.len;
  }
  pending_.erase(0, i);
  return out;
}

std::string IncrementalDetokenizer::finish() {
  std::string out = utf8_sanitize(pending_);
  pending_.clear();
  return out;
}

}  // namespace nf
