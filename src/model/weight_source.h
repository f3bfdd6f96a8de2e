// Model weights addressed by their canonical Hugging Face tensor names, whatever the file:
//   model.embed_tokens.weight                       [vocab, hidden]
//   model.layers.{i}.input_layernorm.weight         [hidden]
//   model.layers.{i}.self_attn.q_proj.weight        [heads * head_dim, hidden]
//   model.layers.{i}.self_attn.{k,v}_proj.weight    [kv_heads * head_dim, hidden]
//   model.layers.{i}.self_attn.{q,k,v}_proj.bias    [rows of the weight] (Qwen2)
//   model.layers.{i}.self_attn.o_proj.weight        [hidden, heads * head_dim]
//   model.layers.{i}.post_attention_layernorm.weight [hidden]
//   model.layers.{i}.mlp.{gate,up}_proj.weight      [intermediate, hidden]
//   model.layers.{i}.mlp.down_proj.weight           [hidden, intermediate]
//   model.norm.weight                               [hidden]
//   lm_head.weight (untied only)                    [vocab, hidden]
// Shapes are in Hugging Face order ([out_features, in_features], row-major), and read_f32
// returns exactly the Hugging Face tensor (GGUF Q/K rows of llama files are un-permuted).
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
  // The calls below throw nf::Error naming the file and tensor when `name` is missing.
  virtual std::vector<int64_t> shape(const std::string& name) const = 0;
  virtual std::string dtype_name(const std::string& name) const = 0;
  // Throws nf::Error naming the file, the tensor and its dtype when read_f32 cannot convert it.
  virtual void check_readable(const std::string& name) const = 0;
  // Converts or dequantizes the tensor into dst (exactly numel floats). Throws nf::Error.
  virtual void read_f32(const std::string& name, std::span<float> dst) const = 0;
  // Rows [row_begin, row_end) of the tensor seen as [shape[0], numel / shape[0]] (a
  // tensor-parallel rank's share of the output features), into dst (exactly that many rows).
  // The default reads the whole tensor and copies the rows; safetensors and dummy weights read
  // only the rows. Throws nf::Error for a range outside the tensor.
  virtual void read_rows_f32(const std::string& name, int64_t row_begin, int64_t row_end,
                             std::span<float> dst) const;
  // The file or directory, for messages.
  virtual std::string describe() const = 0;
  // "<file>: tensor '<name as stored in that file>'", the prefix of a message about one tensor.
  virtual std::string tensor_label(const std::string& name) const;
};

struct TensorSpec {
  std::string name;
  std::vector<int64_t> shape;
};

// For read_rows_f32: the row width of `name` seen as [shape[0], numel / shape[0]], after checking
// that [row_begin, row_end) is inside it and that dst_size is exactly those rows.
int64_t checked_row_width(const WeightSource& w, const std::string& name, int64_t row_begin,
                          int64_t row_end, size_t dst_size);

// Every tensor the model needs, with its shape, in file order (embedding, layers, norm, head).
std::vector<TensorSpec> expected_tensors(const ModelConfig& c);
int64_t tensor_numel(const std::vector<int64_t>& shape);
std::string shape_str(const std::vector<int64_t>& shape);  // "[64, 32]"

// Safetensors: `path` is a model.safetensors file, or a directory with model.safetensors, the
// shards named by model.safetensors.index.json, or else every *.safetensors file in it.
std::unique_ptr<WeightSource> open_safetensors(const std::string& path);
// GGUF tensors under their Hugging Face names (Q/K rows of llama files un-permuted).
std::unique_ptr<WeightSource> open_gguf_weights(std::shared_ptr<const GgufFile> gguf,
                                                const ModelConfig& c);
// Deterministic random weights, generated per tensor on demand from (seed, tensor name);
// nothing is held in memory, so the 70B preset costs nothing until a tensor is read.
std::unique_ptr<WeightSource> open_dummy_weights(const ModelConfig& c, const std::string& name,
                                                 uint64_t seed = 0);

}  // namespace nf
