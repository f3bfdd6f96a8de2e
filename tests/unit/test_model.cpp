// ModelConfig parsing (config.json in both rope styles, presets), RoPE frequencies, dummy
// weights, and loading the tiny Hugging Face fixtures.
#include <algorithm>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numbers>

#include "common/status.h"
#include "model/model_config.h"
#include "model/model_loader.h"
#include "model/weight_source.h"

namespace nf {
namespace {

using nlohmann::json;

const std::string kModels = std::string(NANOFLOW_SOURCE_DIR) + "/tests/fixtures/models/";

json read_json(const std::string& path) {
  std::ifstream f(path);
  return json::parse(f);
}

// Runs fn, expecting nf::Error; returns its message.
template <typename Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

#define EXPECT_HAS(msg, part) EXPECT_NE((msg).find(part), std::string::npos) << (msg)

json minimal_llama() {
  return {{"architectures", {"LlamaForCausalLM"}},
          {"vocab_size", 100},
          {"hidden_size", 64},
          {"intermediate_size", 128},
          {"num_hidden_layers", 2},
          {"num_attention_heads", 4}};
}

TEST(ModelConfig, ParsesTransformers4RopeScaling) {
  const std::string path = kModels + "llama31-tiny/config.json";
  const ModelConfig c = parse_hf_config(read_json(path), path);
  EXPECT_EQ(c.arch, ModelArch::Llama);
  EXPECT_EQ(c.arch_name, "LlamaForCausalLM");
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.hidden_size, 128);
  EXPECT_EQ(c.intermediate_size, 192);
  EXPECT_EQ(c.num_layers, 2);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.max_position_embeddings, 1024);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.bos_token_id, 500);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{501, 508, 509}));
  EXPECT_EQ(c.dtype, "float32");
  EXPECT_EQ(c.rope.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope.theta, 500000);
  EXPECT_DOUBLE_EQ(c.rope.factor, 8);
  EXPECT_DOUBLE_EQ(c.rope.low_freq_factor, 1);
  EXPECT_DOUBLE_EQ(c.rope.high_freq_factor, 4);
  EXPECT_EQ(c.rope.original_max_position_embeddings, 64);
}

TEST(ModelConfig, ParsesTransformers5RopeParametersTheSame) {
  const std::string v4 = kModels + "llama31-tiny/config.json";
  const std::string v5 = kModels + "llama31-tiny/config.rope_parameters.json";
  const ModelConfig a = parse_hf_config(read_json(v4), v4);
  const ModelConfig b = parse_hf_config(read_json(v5), v5);
  EXPECT_EQ(b.rope.type, "llama3");
  EXPECT_DOUBLE_EQ(b.rope.theta, a.rope.theta);
  EXPECT_DOUBLE_EQ(b.rope.factor, a.rope.factor);
  EXPECT_DOUBLE_EQ(b.rope.low_freq_factor, a.rope.low_freq_factor);
  EXPECT_DOUBLE_EQ(b.rope.high_freq_factor, a.rope.high_freq_factor);
  EXPECT_EQ(b.rope.original_max_position_embeddings, a.rope.original_max_position_embeddings);
  EXPECT_EQ(rope_inv_freq(a.rope, a.head_dim), rope_inv_freq(b.rope, b.head_dim));

  // llama2-tiny: v5 default rope; llama3-tiny: v4 with rope_scaling null.
  const std::string l2 = kModels + "llama2-tiny/config.json";
  const ModelConfig c2 = parse_hf_config(read_json(l2), l2);
  EXPECT_EQ(c2.rope.type, "default");
  EXPECT_DOUBLE_EQ(c2.rope.theta, 10000);
  EXPECT_EQ(c2.eos_token_ids, (std::vector<int32_t>{2}));
  const std::string l3 = kModels + "llama3-tiny/config.json";
  const ModelConfig c3 = parse_hf_config(read_json(l3), l3);
  EXPECT_EQ(c3.rope.type, "default");
  EXPECT_DOUBLE_EQ(c3.rope.theta, 500000);
}

// Qwen3: q/k norm, no QKV bias, head_dim apart from hidden_size / heads (32, not 64 / 4).
TEST(ModelConfig, ParsesQwen3) {
  const std::string path = kModels + "qwen3-tiny/config.json";
  const ModelConfig c = parse_hf_config(read_json(path), path);
  EXPECT_EQ(c.arch, ModelArch::Qwen3);
  EXPECT_EQ(c.arch_name, "Qwen3ForCausalLM");
  EXPECT_TRUE(c.qk_norm);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.head_dim, 32);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_DOUBLE_EQ(c.rope.theta, 1e6);
  const auto names = expected_tensors(c);
  const auto has = [&](const std::string& n) {
    return std::any_of(names.begin(), names.end(), [&](const TensorSpec& t) { return t.name == n; });
  };
  EXPECT_TRUE(has("model.layers.2.self_attn.q_norm.weight"));
  EXPECT_TRUE(has("model.layers.0.self_attn.k_norm.weight"));
  EXPECT_FALSE(has("model.layers.0.self_attn.q_proj.bias"));
  // attention_bias turns the biases on; sliding windows are refused.
  json j = read_json(path);
  j["attention_bias"] = true;
  EXPECT_TRUE(parse_hf_config(j, path).qkv_bias);
  j["use_sliding_window"] = true;
  EXPECT_THROW(parse_hf_config(j, path), Error);
  const ModelConfig p = preset_config("qwen3-8b");
  EXPECT_EQ(p.arch, ModelArch::Qwen3);
  EXPECT_TRUE(p.qk_norm);
  EXPECT_EQ(p.num_layers, 36);
  EXPECT_EQ(p.head_dim, 128);
}

TEST(ModelConfig, ParsesQwen2) {
  const std::string path = kModels + "qwen2-tiny/config.json";
  const ModelConfig c = parse_hf_config(read_json(path), path);
  EXPECT_EQ(c.arch, ModelArch::Qwen2);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.head_dim, 16);  // implicit: 64 / 4
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_DOUBLE_EQ(c.rope.theta, 1e6);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{511, 509}));
}

TEST(ModelConfig, DefaultsAndInlineStyles) {
  json j = minimal_llama();
  ModelConfig c = parse_hf_config(j, "inline.json");
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.rope.type, "default");
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000);
  EXPECT_FALSE(c.bos_token_id.has_value());
  EXPECT_TRUE(c.eos_token_ids.empty());

  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  j["eos_token_id"] = 7;
  j["torch_dtype"] = "bfloat16";
  c = parse_hf_config(j, "inline.json");
  EXPECT_EQ(c.rope.type, "linear");
  EXPECT_DOUBLE_EQ(c.rope.factor, 2);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{7}));
  EXPECT_EQ(c.dtype, "bfloat16");

  json v5 = minimal_llama();
  v5["rope_parameters"] = {{"rope_type", "llama3"},   {"rope_theta", 500000.0},
                           {"factor", 32.0},          {"low_freq_factor", 1.0},
                           {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  c = parse_hf_config(v5, "inline.json");
  EXPECT_EQ(c.rope.type, "llama3");
  EXPECT_DOUBLE_EQ(c.rope.theta, 500000);
  EXPECT_DOUBLE_EQ(c.rope.factor, 32);
}

TEST(ModelConfig, ErrorsNameTheFileAndKey) {
  json j = minimal_llama();
  j["architectures"] = {"MistralForCausalLM"};
  std::string m = error_of([&] { parse_hf_config(j, "cfg/config.json"); });
  EXPECT_HAS(m, "cfg/config.json");
  EXPECT_HAS(m, "'architectures'");
  EXPECT_HAS(m, "MistralForCausalLM");

  j = minimal_llama();
  j.erase("architectures");
  EXPECT_HAS(error_of([&] { parse_hf_config(j, "c.json"); }), "'architectures'");

  j = minimal_llama();
  j.erase("vocab_size");
  m = error_of([&] { parse_hf_config(j, "c.json"); });
  EXPECT_HAS(m, "c.json: key 'vocab_size' is missing");

  j = minimal_llama();
  j["hidden_size"] = "big";
  EXPECT_HAS(error_of([&] { parse_hf_config(j, "c.json"); }), "'hidden_size'");

  for (const char* type : {"yarn", "dynamic", "longrope"}) {
    j = minimal_llama();
    j["rope_scaling"] = {{"rope_type", type}, {"factor", 4.0}};
    m = error_of([&] { parse_hf_config(j, "c.json"); });
    EXPECT_HAS(m, "'rope_scaling.rope_type'");
    EXPECT_HAS(m, type);
  }
  j = minimal_llama();
  j["rope_parameters"] = {{"rope_type", "yarn"}, {"factor", 4.0}, {"rope_theta", 1e6}};
  EXPECT_HAS(error_of([&] { parse_hf_config(j, "c.json"); }), "'rope_parameters.rope_type'");

  j = minimal_llama();
  j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 8.0}};
  EXPECT_HAS(error_of([&] { parse_hf_config(j, "c.json"); }), "original_max_position_embeddings");

  j = minimal_llama();
  j["num_key_value_heads"] = 3;
  EXPECT_HAS(error_of([&] { parse_hf_config(j, "c.json"); }), "'num_key_value_heads'");

  j = minimal_llama();
  j["head_dim"] = 15;
  EXPECT_HAS(error_of([&] { parse_hf_config(j, "c.json"); }), "'head_dim'");

  j = minimal_llama();
  j["num_hidden_layers"] = 0;
  EXPECT_HAS(error_of([&] { parse_hf_config(j, "c.json"); }),
             "'num_hidden_layers' must be positive");

  j = minimal_llama();
  j["hidden_act"] = "gelu";
  EXPECT_HAS(error_of([&] { parse_hf_config(j, "c.json"); }), "'hidden_act'");

  EXPECT_HAS(error_of([&] { parse_hf_config(json::array(), "c.json"); }), "c.json");
}

// A tensor-parallel rank's shapes (the CUDA backend's shards, and the optimum bench offline
// profiles): heads, KV heads and FFN over n, a ceil(vocab / n) block of the vocabulary; a count
// that n does not divide is an error naming it.
TEST(ModelConfig, TensorParallelShard) {
  const ModelConfig c = preset_config("llama3-70b");
  const ModelConfig s = tensor_parallel_shard(c, 8);
  EXPECT_EQ(s.num_heads, c.num_heads / 8);
  EXPECT_EQ(s.num_kv_heads, 1);
  EXPECT_EQ(s.intermediate_size, c.intermediate_size / 8);
  EXPECT_EQ(s.vocab_size, (c.vocab_size + 7) / 8);
  EXPECT_EQ(s.hidden_size, c.hidden_size);
  EXPECT_EQ(s.head_dim, c.head_dim);
  EXPECT_EQ(s.num_layers, c.num_layers);
  const ModelConfig one = tensor_parallel_shard(c, 1);
  EXPECT_EQ(one.num_heads, c.num_heads);
  EXPECT_EQ(one.vocab_size, c.vocab_size);
  try {
    tensor_parallel_shard(c, 16);  // 8 KV heads
    ADD_FAILURE() << "TP=16 with 8 KV heads was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("8 KV heads"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tensor_parallel_shard(preset_config("smollm2-135m"), 2), Error);  // 9 heads
  EXPECT_THROW(tensor_parallel_shard(c, 0), Error);
}

TEST(ModelConfig, Presets) {
  ModelConfig c = preset_config("llama3-8b");
  EXPECT_EQ(c.arch, ModelArch::Llama);
  EXPECT_EQ(c.vocab_size, 128256);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 14336);
  EXPECT_EQ(c.num_layers, 32);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_DOUBLE_EQ(c.rope.theta, 500000);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_FALSE(c.tie_word_embeddings);

  c = preset_config("llama3-70b");
  EXPECT_EQ(c.num_layers, 80);
  EXPECT_EQ(c.hidden_size, 8192);
  EXPECT_EQ(c.intermediate_size, 28672);
  EXPECT_EQ(c.num_heads, 64);
  EXPECT_EQ(c.num_kv_heads, 8);
  EXPECT_EQ(c.head_dim, 128);

  c = preset_config("llama2-7b");
  EXPECT_EQ(c.vocab_size, 32000);
  EXPECT_EQ(c.hidden_size, 4096);
  EXPECT_EQ(c.intermediate_size, 11008);
  EXPECT_EQ(c.num_layers, 32);
  EXPECT_EQ(c.num_heads, 32);
  EXPECT_EQ(c.num_kv_heads, 32);
  EXPECT_DOUBLE_EQ(c.rope.theta, 10000);
  EXPECT_EQ(c.max_position_embeddings, 4096);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);

  c = preset_config("qwen2-7b");
  EXPECT_EQ(c.arch, ModelArch::Qwen2);
  EXPECT_EQ(c.vocab_size, 152064);
  EXPECT_EQ(c.hidden_size, 3584);
  EXPECT_EQ(c.intermediate_size, 18944);
  EXPECT_EQ(c.num_layers, 28);
  EXPECT_EQ(c.num_heads, 28);
  EXPECT_EQ(c.num_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_DOUBLE_EQ(c.rope.theta, 1e6);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-6);
  EXPECT_EQ(c.max_position_embeddings, 32768);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.tie_word_embeddings);

  c = preset_config("smollm2-135m");
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.num_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_DOUBLE_EQ(c.rope.theta, 100000);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_TRUE(c.tie_word_embeddings);

  for (const auto& name : preset_names()) EXPECT_NO_THROW(preset_config(name)) << name;
  EXPECT_HAS(error_of([] { preset_config("gpt-5"); }), "gpt-5");
}

// Llama-3.1 scaling written out independently (double precision) from the formula.
std::vector<double> llama3_by_hand(double theta, int64_t d, double factor, double low, double high,
                                   double orig) {
  std::vector<double> out;
  for (int64_t i = 0; i < d / 2; ++i) {
    const double f = 1.0 / std::pow(theta, static_cast<double>(2 * i) / static_cast<double>(d));
    const double wavelen = 2 * std::numbers::pi / f;
    if (wavelen < orig / high) {
      out.push_back(f);
    } else if (wavelen > orig / low) {
      out.push_back(f / factor);
    } else {
      const double s = (orig / wavelen - low) / (high - low);
      out.push_back((1 - s) * f / factor + s * f);
    }
  }
  return out;
}

TEST(RopeInvFreq, DefaultAndLinear) {
  RopeConfig r;
  r.theta = 10000;
  auto f = rope_inv_freq(r, 64);
  ASSERT_EQ(f.size(), 32u);
  for (int i = 0; i < 32; ++i)
    EXPECT_NEAR(f[i], 1.0 / std::pow(10000.0, 2.0 * i / 64), 1e-6 * f[i]);
  r.type = "linear";
  r.factor = 4;
  auto g = rope_inv_freq(r, 64);
  for (int i = 0; i < 32; ++i) EXPECT_FLOAT_EQ(g[i], f[i] / 4);
}

TEST(RopeInvFreq, Llama3ScalingMatchesTheFormulaAndTransformers) {
  // The llama31-tiny fixture: head_dim 16, original context 64.
  const std::string path = kModels + "llama31-tiny/config.json";
  const ModelConfig c = parse_hf_config(read_json(path), path);
  const auto f = rope_inv_freq(c.rope, c.head_dim);
  const auto want = llama3_by_hand(500000, 16, 8, 1, 4, 64);
  ASSERT_EQ(f.size(), want.size());
  for (size_t i = 0; i < f.size(); ++i) EXPECT_NEAR(f[i], want[i], 1e-6 * want[i]) << i;
  // transformers 5.24 `_compute_llama3_parameters` on the same config (float32).
  const double hf[] = {1.0,
                       0.07940301299095154,
                       0.004700753837823868,
                       0.0009115831344388425,
                       0.00017677668074611574,
                       3.428102354519069e-05,
                       6.647869668086059e-06,
                       1.289173155782919e-06};
  for (size_t i = 0; i < 8; ++i) EXPECT_NEAR(f[i], hf[i], 2e-7 * hf[i]) << i;
  // 7 of 8 frequencies are changed: one in the smooth band, six divided by the factor.
  RopeConfig plain = c.rope;
  plain.type = "default";
  const auto p = rope_inv_freq(plain, c.head_dim);
  int divided = 0, smoothed = 0;
  for (size_t i = 0; i < 8; ++i) {
    if (std::fabs(f[i] - p[i] / 8) < 1e-6f * p[i])
      ++divided;
    else if (f[i] != p[i])
      ++smoothed;
  }
  EXPECT_EQ(divided, 6);
  EXPECT_EQ(smoothed, 1);

  // Llama-3.1-8B's real parameters.
  RopeConfig r;
  r.type = "llama3";
  r.theta = 500000;
  r.factor = 8;
  r.low_freq_factor = 1;
  r.high_freq_factor = 4;
  r.original_max_position_embeddings = 8192;
  const auto g = rope_inv_freq(r, 128);
  const auto want8b = llama3_by_hand(500000, 128, 8, 1, 4, 8192);
  for (size_t i = 0; i < g.size(); ++i) EXPECT_NEAR(g[i], want8b[i], 1e-6 * want8b[i]) << i;
  const std::pair<int, double> hf8b[] = {{0, 1.0},
                                         {10, 0.12868738174438477},
                                         {20, 0.016560440883040428},
                                         {30, 0.0013718936825171113},
                                         {40, 3.428102354519069e-05},
                                         {45, 1.2297638932068367e-05},
                                         {50, 4.411534519022098e-06},
                                         {63, 3.068925877869333e-07}};
  for (const auto& [i, v] : hf8b) EXPECT_NEAR(g[i], v, 2e-7 * v) << i;
}

TEST(RopeInvFreq, FreqFactorsDivide) {
  RopeConfig r;
  r.type = "freq_factors";
  r.theta = 10000;
  r.freq_factors = {1, 2, 4, 8};
  const auto f = rope_inv_freq(r, 8);
  RopeConfig plain;
  const auto p = rope_inv_freq(plain, 8);
  for (int i = 0; i < 4; ++i) EXPECT_FLOAT_EQ(f[i], p[i] / r.freq_factors[i]);
}

TEST(DummyWeights, PresetIsDeterministicFiniteAndScaled) {
  auto m = load_model("dummy:smollm2-135m");
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_EQ(m.value().format, "dummy");
  EXPECT_EQ(m.value().config.hidden_size, 576);
  EXPECT_EQ(m.value().config.num_layers, 30);
  const WeightSource& w = *m.value().weights;
  for (const auto& t : expected_tensors(m.value().config)) ASSERT_TRUE(w.has(t.name)) << t.name;
  EXPECT_FALSE(w.has("lm_head.weight"));  // tied

  const std::string q = "model.layers.3.self_attn.q_proj.weight";
  EXPECT_EQ(w.shape(q), (std::vector<int64_t>{576, 576}));
  std::vector<float> a(576 * 576), b(576 * 576), other(576 * 576);
  w.read_f32(q, a);
  w.read_f32(q, b);
  w.read_f32("model.layers.4.self_attn.q_proj.weight", other);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, other);
  double sum = 0, sum2 = 0;
  for (float x : a) {
    ASSERT_TRUE(std::isfinite(x));
    sum += x;
    sum2 += x * x;
  }
  const double n = static_cast<double>(a.size());
  EXPECT_NEAR(sum / n, 0, 0.01);
  EXPECT_NEAR(std::sqrt(sum2 / n), 1 / std::sqrt(576.0), 0.005);  // std 1/sqrt(in_features)

  std::vector<float> norm(576);
  w.read_f32("model.layers.0.input_layernorm.weight", norm);
  for (float x : norm) EXPECT_TRUE(x >= 0.9f && x <= 1.1f) << x;

  // A second load gives the same values (the seed does not depend on the process).
  auto again = load_model("dummy:smollm2-135m");
  ASSERT_TRUE(again.ok());
  again.value().weights->read_f32(q, b);
  EXPECT_EQ(a, b);

  std::vector<float> wrong(10);
  EXPECT_THROW(w.read_f32(q, wrong), Error);
  EXPECT_THROW(w.shape("model.layers.99.mlp.up_proj.weight"), Error);
}

TEST(DummyWeights, LargePresetsGenerateOnDemand) {
  const auto t0 = std::chrono::steady_clock::now();
  auto m = load_model("dummy:llama3-70b");
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
  const ModelConfig& c = m.value().config;
  EXPECT_EQ(expected_tensors(c).size(), 1u + 80 * 9 + 2);
  const std::string k = "model.layers.79.self_attn.k_proj.weight";
  EXPECT_EQ(m.value().weights->shape(k), (std::vector<int64_t>{1024, 8192}));
  std::vector<float> w(1024 * 8192);  // large enough for the threaded path
  m.value().weights->read_f32(k, w);
  std::vector<float> w2(w.size());
  m.value().weights->read_f32(k, w2);
  EXPECT_EQ(w, w2);
  const float lim = std::sqrt(3.0f / 8192);
  for (float x : w) ASSERT_TRUE(std::isfinite(x) && std::fabs(x) <= lim);

  auto q = load_model("dummy:qwen2-7b");
  ASSERT_TRUE(q.ok());
  EXPECT_TRUE(q.value().weights->has("model.layers.0.self_attn.q_proj.bias"));
  EXPECT_TRUE(q.value().weights->has("lm_head.weight"));
}

TEST(DummyWeights, FromConfigJsonAndErrors) {
  auto m = load_model("dummy:" + kModels + "qwen2-tiny/config.json");
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_EQ(m.value().config.arch, ModelArch::Qwen2);
  EXPECT_EQ(m.value().config.hidden_size, 64);
  EXPECT_EQ(m.value().generation.eos_token_ids, (std::vector<int32_t>{511, 509}));
  EXPECT_TRUE(m.value().weights->has("model.layers.2.self_attn.v_proj.bias"));

  auto bad = load_model("dummy:nope-1b");
  ASSERT_FALSE(bad.ok());
  EXPECT_HAS(bad.error(), "nope-1b");
  bad = load_model("dummy:/nonexistent/config.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_HAS(bad.error(), "/nonexistent/config.json");
}

TEST(LoadModel, TinyHuggingFaceFixtures) {
  for (const char* name : {"llama2-tiny", "llama3-tiny", "llama31-tiny", "qwen2-tiny"}) {
    SCOPED_TRACE(name);
    auto m = load_model(kModels + name);
    ASSERT_TRUE(m.ok()) << m.error();
    EXPECT_EQ(m.value().format, "hf");
    const ModelConfig& c = m.value().config;
    const WeightSource& w = *m.value().weights;
    for (const auto& t : expected_tensors(c)) {
      EXPECT_EQ(w.shape(t.name), t.shape) << t.name;
      std::vector<float> v(static_cast<size_t>(tensor_numel(t.shape)));
      w.read_f32(t.name, v);
      double sum2 = 0;
      for (float x : v) {
        ASSERT_TRUE(std::isfinite(x)) << t.name;
        sum2 += x * x;
      }
      EXPECT_GT(sum2, 0) << t.name;
    }
  }
  auto l2 = load_model(kModels + "llama2-tiny");
  ASSERT_TRUE(l2.ok());
  EXPECT_EQ(l2.value().generation.eos_token_ids, (std::vector<int32_t>{2}));
  auto q = load_model(kModels + "qwen2-tiny");
  ASSERT_TRUE(q.ok());
  EXPECT_TRUE(q.value().config.tie_word_embeddings);
  EXPECT_FALSE(q.value().weights->has("lm_head.weight"));
}

TEST(LoadModel, MissingPathsAreErrors) {
  auto m = load_model("/nonexistent/model.gguf");
  ASSERT_FALSE(m.ok());
  EXPECT_HAS(m.error(), "/nonexistent/model.gguf");
  const auto dir = std::filesystem::temp_directory_path() / "nf_model_test_empty";
  std::filesystem::create_directories(dir);
  m = load_model(dir.string());
  ASSERT_FALSE(m.ok());
  EXPECT_HAS(m.error(), "config.json");
}

}  // namespace
}  // namespace nf
