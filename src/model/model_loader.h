// load_model: a model spec to a validated config and weight source.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"
#include "model/model_config.h"
#include "model/weight_source.h"

namespace nf {

// Sampling defaults a Hugging Face directory ships in generation_config.json.
struct GenerationDefaults {
  std::vector<int32_t> eos_token_ids;
  std::optional<float> temperature, top_p;
  std::optional<int> top_k;
};

struct LoadedModel {
  ModelConfig config;
  std::unique_ptr<WeightSource> weights;
  GenerationDefaults generation;
  std::string path;
  std::string format;  // gguf | hf | dummy
};

// spec: a .gguf file; a Hugging Face directory (config.json, *.safetensors with or without
// model.safetensors.index.json, optional generation_config.json); dummy:<preset>; or
// dummy:<config.json, or a directory holding one> (random weights, see open_dummy_weights).
// Every tensor the model needs is checked (present, exact shape, convertible dtype) before this
// returns, so a bad file fails here with one line naming the file and the tensor or key.
// Tensors the model does not use (rotary_emb.inv_freq, a tied model's lm_head.weight) are
// ignored. When config.json has no eos_token_id, config.eos_token_ids come from
// generation_config.json.
Result<LoadedModel> load_model(const std::string& spec);

}  // namespace nf
