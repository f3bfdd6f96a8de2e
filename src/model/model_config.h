// Model hyper-parameters, from a Hugging Face config.json (transformers 4 and 5 styles), GGUF
// metadata, or a named preset; and the RoPE frequencies they imply.
#pragma once

#include <cstdint>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace nf {

class GgufFile;

enum class ModelArch { Llama, Qwen2, Qwen3 };

struct RopeConfig {
  // default | linear | llama3 | freq_factors (a GGUF file's rope_freqs.weight, which is how
  // llama.cpp stores Llama-3.1 scaling)
  std::string type = "default";
  double theta = 10000;
  double factor = 1;                             // linear, llama3
  double low_freq_factor = 1;                    // llama3
  double high_freq_factor = 4;                   // llama3
  int64_t original_max_position_embeddings = 0;  // llama3
  std::vector<float>
      freq_factors;  // [head_dim / 2] freq_factors only: inv_freq[i] is divided by it
};

struct ModelConfig {
  ModelArch arch = ModelArch::Llama;
  std::string arch_name = "LlamaForCausalLM";  // LlamaForCausalLM | Qwen2ForCausalLM | Qwen3ForCausalLM
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-5;
  RopeConfig rope;
  bool tie_word_embeddings = false;
  bool qkv_bias = false;  // Qwen2 (or Llama / Qwen3 with attention_bias)
  // Qwen3: RMSNorm over each query and key head (q_norm, k_norm: [head_dim]) before RoPE.
  bool qk_norm = false;
  std::optional<int32_t> bos_token_id;
  std::vector<int32_t> eos_token_ids;
  std::string dtype;  // torch_dtype / dtype of config.json, or the GGUF file type; informational
};

// `source` names the file in error messages. Throws nf::Error naming the file and the key.
ModelConfig parse_hf_config(const nlohmann::json& j, const std::string& source);
ModelConfig config_from_gguf(const GgufFile& g);
// llama3-8b, llama3-70b, llama2-7b, qwen2-7b, qwen3-8b, smollm2-135m.
ModelConfig preset_config(const std::string& name);
std::vector<std::string> preset_names();
// Checks sizes are positive and consistent; throws nf::Error naming `source` and the key.
void validate_config(const ModelConfig& c, const std::string& source);

// One tensor-parallel rank's shapes when whole heads and equal FFN shares are split over n GPUs:
// heads, KV heads and the intermediate size over n, vocab_size the rank's block of vocabulary
// rows, ceil(vocab / n). Throws nf::Error naming the counts when n does not divide all three.
// Header-only: the CUDA library, which links before the model code, uses it.
inline ModelConfig tensor_parallel_shard(const ModelConfig& c, int n) {
  if (n < 1 || c.num_heads % n != 0 || c.num_kv_heads % n != 0 || c.intermediate_size % n != 0) {
    fail(
        "--tensor-parallel-size {}: the model has {} attention heads, {} KV heads and an "
        "intermediate size of {}; the CUDA backend splits whole heads and equal FFN shares "
        "across ranks, so all three must be divisible by {}",
        n, c.num_heads, c.num_kv_heads, c.intermediate_size, n);
  }
  ModelConfig s = c;
  s.num_heads /= n;
  s.num_kv_heads /= n;
  s.intermediate_size /= n;
  s.vocab_size = (c.vocab_size + n - 1) / n;
  return s;
}

// head_dim / 2 inverse frequencies with the configured scaling (as transformers computes them).
std::vector<float> rope_inv_freq(const RopeConfig& rope, int64_t head_dim);

}  // namespace nf
