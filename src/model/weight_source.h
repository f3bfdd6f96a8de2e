// Model weights addressed by their canonical Hugging Face tensor names, whatever the file:
//   model.embed_tokens.weight                       [vocab, hidden]
//   model.layers.{i}.input_layernorm.weight         [hidden]
//   model.layers.{i}.self_attn.{q,k,v}_proj.weight  [heads * head_dim | kv_heads * head_dim, hidden]
//   model.layers.{i}.self_attn.{q,k,v}_proj.bias    (Qwen2)
//   model.layers.{i}.self_attn.o_proj.weight        [hidden, heads * head_dim]
//   model.layers.{i}.post_attention_layernorm.weight
//   model.layers.{i}.mlp.{gate,up}_proj.weight      [intermediate, hidden]
//   model.layers.{i}.mlp.down_proj.weight           [hidden, intermediate]
//   model.norm.weight, lm_head.weight (untied only) [vocab, hidden]
// Shapes are in Hugging Face order ([out_features, in_features]).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/model_config.h"

namespace nf {

class GgufFile;

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual bool has(const std::string& name) const = 0;
  virtual std::vector<int64_t> shape(const std::string& name) const = 0;
  virtual std::string dtype_name(const std::string& name) const = 0;
  // Whether read_f32 can convert this tensor's dtype.
  virtual bool can_read(const std::string& name) const = 0;
  // Converts or dequantizes the tensor into dst (exactly numel floats). Throws nf::Error.
  virtual void read_f32(const std::string& name, std::span<float> dst) const = 0;
  // The file or directory, for messages.
  virtual std::string describe() const = 0;
};

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// Every tensor the model needs, with its shape.
std::vector<TensorSpec> expected_tensors(const ModelConfig& c);

// Safetensors: `files` are the shards (one, or those named by model.safetensors.index.json).
std::unique_ptr<WeightSource> open_safetensors(const std::string& dir, const std::vector<std::string>& files);
// GGUF tensors under their Hugging Face names (Q/K rows of llama files un-permuted).
std::unique_ptr<WeightSource> open_gguf_weights(std::shared_ptr<const GgufFile> gguf, const ModelConfig& c);
// Deterministic random weights, generated per tensor on demand (nothing held in memory).
std::unique_ptr<WeightSource> open_dummy_weights(const ModelConfig& c, const std::string& name, uint64_t seed = 0);

}  // namespace nf
