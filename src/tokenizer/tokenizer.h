// Text <-> token ids for the model families we serve: byte-level BPE (GPT-2, Llama-3, Qwen2,
// StarCoder, SmolLM) and SentencePiece BPE with byte fallback (Llama-2, Phi-3), loaded from GGUF
// metadata or a Hugging Face tokenizer.json directory. Encoding matches Hugging Face tokenizers
// (and llama.cpp for GGUF files); see docs in tokenizer_core.h for the pipeline.
// A Tokenizer is immutable after loading; all const methods are safe to call from many threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace nf {

class GgufFile;
struct TokenizerCore;

struct EncodeOptions {
  bool add_special = false;   // add BOS/EOS as the model's config says (add_bos_token etc. / HF
                              // post_processor)
  bool parse_special = true;  // recognize added/special token texts (e.g. "<|im_end|>") inside
                              // the text, as HF does by default
};

class Tokenizer {
 public:
  // From the tokenizer.ggml.* keys. Throws nf::Error naming the file and key.
  static std::unique_ptr<Tokenizer> from_gguf(const GgufFile& gguf);
  // From tokenizer.json + tokenizer_config.json (+ special_tokens_map.json,
  // generation_config.json, chat_template.jinja when present). Throws nf::Error.
  static std::unique_ptr<Tokenizer> from_hf_dir(const std::string& dir);
  // Loads from a model spec: a .gguf path, a HF directory, or a tokenizer.json path.
  // Throws nf::Error.
  static std::unique_ptr<Tokenizer> load(const std::string& path);

  explicit Tokenizer(std::unique_ptr<TokenizerCore> core);
  ~Tokenizer();

  // Invalid UTF-8 in text is encoded as U+FFFD.
  std::vector<int32_t> encode(std::string_view text, const EncodeOptions& opts = {}) const;
  // Throws nf::Error for an id outside [0, vocab_size()).
  std::string decode(std::span<const int32_t> ids, bool skip_special = true) const;
  int32_t vocab_size() const;
  std::optional<int32_t> bos_id() const;
  std::vector<int32_t> eos_ids() const;  // eos token(s), e.g. <|eot_id|> and <|end_of_text|>
  bool is_special(int32_t id) const;     // control/special tokens
  // "" when none (GGUF tokenizer.chat_template or tokenizer_config.json chat_template).
  const std::string& chat_template() const;
  std::string token_text(int32_t id) const;  // the vocabulary string as stored
  std::optional<int32_t> token_id(std::string_view text) const;
  // The raw bytes id contributes to decoded text (possibly an incomplete UTF-8 sequence, e.g.
  // for a <0xE4> byte token). Throws nf::Error for an unknown id.
  const std::string& token_bytes(int32_t id) const;

 private:
  friend class IncrementalDetokenizer;
  void encode_segment(std::string_view text, bool first, std::vector<int32_t>& out) const;
  void encode_words(std::string_view text, bool first, std::vector<int32_t>& out) const;
  void encode_slice(std::string_view text, bool first, std::vector<int32_t>& out) const;
  void check_id(int32_t id) const;

  std::unique_ptr<const TokenizerCore> core_;
};

// Streams text for generated tokens without ever emitting a broken UTF-8 sequence: bytes of an
// incomplete character are held back until the character completes.
class IncrementalDetokenizer {
 public:
  explicit IncrementalDetokenizer(const Tokenizer& tok, bool skip_special = true);
  std::string push(int32_t id);  // newly completed text
  std::string finish();          // whatever is held back, invalid bytes as U+FFFD
  // concatenation of all push() results + finish() equals tok.decode(all ids, skip_special)

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  bool started_ = false;  // some byte has been seen (the leading-space strip is decided)
  std::string pending_;   // [< 4 bytes] an incomplete UTF-8 sequence held back
};

}  // namespace nf
