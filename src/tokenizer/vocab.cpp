#include "tokenizer/vocab.h"

#include <fmt/format.h>

#include "common/status.h"

namespace nf {

void Vocab::set(int32_t id, std::string text, bool model_token) {
  NF_CHECK(id >= 0, "negative token id {}", id);
  if (id >= size()) {
    tokens_.resize(id + 1);
    model_token_.resize(id + 1, 0);
  } else if (tokens_[id] != text) {
    auto old = ids_.find(tokens_[id]);
    if (old != ids_.end() && old->second == id) ids_.erase(old);
  }
  tokens_[id] = text;
  model_token_[id] = model_token ? 1 : 0;
  // A repeated text maps to a model token before any other, then to the lowest id.
  auto [it, inserted] = ids_.try_emplace(std::move(text), id);
  if (!inserted && it->second != id) {
    const bool old_model = model_token_[it->second] != 0;
    if ((model_token && !old_model) || (model_token == old_model && id < it->second)) {
      it->second = id;
    }
  }
}

std::optional<int32_t> Vocab::find(std::string_view text) const {
  auto it = ids_.find(text);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

std::optional<int32_t> Vocab::find_model(std::string_view text) const {
  auto it = ids_.find(text);
  if (it == ids_.end() || !model_token_[it->second]) return std::nullopt;
  return it->second;
}

void Vocab::index_bytes() {
  for (int b = 0; b < 256; ++b) {
    auto id = find(fmt::format("<0x{:02X}>", b));
    byte_tokens_[b] = id ? *id : -1;
  }
}

}  // namespace nf
