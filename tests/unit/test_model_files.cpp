// Weight files: safetensors (single and sharded), GGUF (name mapping, Q/K un-permutation,
// dequantization, the real SmolLM2 file), and every kind of bad input as a one-line error.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "common/status.h"
#include "model/gguf.h"
#include "model/model_loader.h"
#include "model_test_files.h"

namespace nf {
namespace {

using nlohmann::json;
using namespace nf::testing;

#define EXPECT_HAS(msg, part) EXPECT_NE((msg).find(part), std::string::npos) << (msg)

const std::string kSmol =
    std::string(NANOFLOW_SOURCE_DIR) + "/models/SmolLM2-135M-Instruct.Q4_1.gguf";

// Writes config.json + model.safetensors for `cfg`; `edit` may change the tensors first.
template <typename Edit>
fs::path write_hf_model(const std::string& name, const json& cfg, Edit&& edit) {
  const fs::path dir = fresh_dir(name);
  std::ofstream(dir / "config.json") << cfg.dump(2);
  auto tensors = tiny_tensors(parse_hf_config(cfg, "config.json"));
  edit(tensors);
  write_bytes(dir / "model.safetensors", safetensors_bytes(tensors));
  return dir;
}
fs::path write_hf_model(const std::string& name, const json& cfg) {
  return write_hf_model(name, cfg, [](std::vector<StTensor>&) {});
}

std::string load_error(const fs::path& p) {
  auto m = load_model(p.string());
  EXPECT_FALSE(m.ok()) << "loaded " << p;
  if (m.ok()) return "";
  EXPECT_EQ(m.error().find('\n'), std::string::npos) << "not one line: " << m.error();
  return m.error();
}

StTensor* find(std::vector<StTensor>& ts, const std::string& name) {
  for (auto& t : ts)
    if (t.name == name) return &t;
  ADD_FAILURE() << "no tensor " << name;
  return nullptr;
}

TEST(Safetensors, SingleFileDtypes) {
  const fs::path dir = fresh_dir("st_dtypes");
  const std::vector<float> v = {1.0f, -2.5f, 0.333333f, 1e-3f, 65504.0f, -0.0f};
  write_bytes(dir / "model.safetensors", safetensors_bytes({{"a", {2, 3}, v, "F32"},
                                                            {"b", {6}, v, "F16"},
                                                            {"c", {3, 2}, v, "BF16"},
                                                            {"d", {1}, {0.0f}, "I32"}}));
  auto w = open_safetensors((dir / "model.safetensors").string());
  EXPECT_EQ(w->shape("a"), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(w->dtype_name("b"), "F16");
  std::vector<float> out(6);
  w->read_f32("a", out);
  EXPECT_EQ(out, v);
  w->read_f32("b", out);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(out[i], fp16_to_float(float_to_fp16(v[i])));
  w->read_f32("c", out);
  for (size_t i = 0; i < 6; ++i) EXPECT_EQ(out[i], bf16_to_float(float_to_bf16(v[i])));
  std::string m;
  try {
    w->check_readable("d");
  } catch (const Error& e) {
    m = e.what();
  }
  EXPECT_HAS(m, "model.safetensors: tensor 'd': dtype I32 is not supported");
  EXPECT_FALSE(w->has("e"));
  EXPECT_THROW(w->shape("e"), Error);
}

// Row ranges (a tensor-parallel rank's share) equal the same rows of the whole tensor, for
// every source: safetensors in each dtype (only the rows are converted), dummy weights (the rows
// are generated directly), and GGUF through the default (whole read, then the rows, with the
// Q/K un-permutation). A range outside the tensor or a wrong destination is an error.
TEST(WeightSource, RowRangesEqualTheRowsOfTheWholeTensor) {
  auto expect_rows = [](const WeightSource& w, const std::string& name) {
    const std::vector<int64_t> shape = w.shape(name);
    const int64_t numel = tensor_numel(shape), rows = shape[0], cols = numel / rows;
    std::vector<float> all(static_cast<size_t>(numel));
    w.read_f32(name, all);
    for (auto [r0, r1] : std::vector<std::pair<int64_t, int64_t>>{{0, rows},
                                                                  {0, 1},
                                                                  {rows / 2, rows},
                                                                  {rows / 3, 2 * rows / 3},
                                                                  {rows - 1, rows},
                                                                  {rows / 2, rows / 2}}) {
      std::vector<float> part(static_cast<size_t>((r1 - r0) * cols));
      w.read_rows_f32(name, r0, r1, part);
      EXPECT_TRUE(std::equal(part.begin(), part.end(), all.begin() + r0 * cols))
          << name << " rows [" << r0 << ", " << r1 << ")";
    }
    std::vector<float> one(static_cast<size_t>(cols));
    EXPECT_THROW(w.read_rows_f32(name, rows, rows + 1, one), Error) << name;
    EXPECT_THROW(w.read_rows_f32(name, -1, 0, {}), Error) << name;
    std::vector<float> wrong(static_cast<size_t>(cols) + 1);
    EXPECT_THROW(w.read_rows_f32(name, 0, 1, wrong), Error) << name;
  };
  const fs::path dir = fresh_dir("st_rows");
  std::vector<float> v(7 * 5);
  for (size_t i = 0; i < v.size(); ++i) v[i] = 0.1f * static_cast<float>(i) - 1.0f;
  write_bytes(dir / "model.safetensors",
              safetensors_bytes(
                  {{"a", {7, 5}, v, "F32"}, {"b", {7, 5}, v, "F16"}, {"c", {35}, v, "BF16"}}));
  auto st = open_safetensors((dir / "model.safetensors").string());
  for (const char* name : {"a", "b", "c"}) expect_rows(*st, name);

  const ModelConfig c = parse_hf_config(tiny_llama_config(), "config.json");
  auto dummy = open_dummy_weights(c, "dummy:test");
  for (const auto& t : expected_tensors(c)) expect_rows(*dummy, t.name);

  if (fs::exists(kSmol)) {
    auto m = load_model(kSmol);
    ASSERT_TRUE(m.ok()) << m.error();
    for (const char* name : {"model.layers.0.self_attn.q_proj.weight",
                             "model.layers.0.self_attn.k_proj.weight", "model.norm.weight"})
      expect_rows(*m.value().weights, name);
  }
}

TEST(Safetensors, WholeModelSingleAndSharded) {
  const json cfg = tiny_llama_config();
  const ModelConfig c = parse_hf_config(cfg, "config.json");
  const auto tensors = tiny_tensors(c);
  const fs::path one = write_hf_model("st_single", cfg);
  auto m = load_model(one.string());
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_EQ(m.value().format, "hf");
  EXPECT_EQ(m.value().config.num_layers, 2);

  // Three shards named by an index, plus an extra tensor the model does not use.
  const fs::path dir = fresh_dir("st_sharded");
  std::ofstream(dir / "config.json") << cfg.dump();
  std::vector<std::vector<StTensor>> shards(3);
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (size_t i = 0; i < tensors.size(); ++i) {
    shards[i % 3].push_back(tensors[i]);
    index["weight_map"][tensors[i].name] =
        fmt::format("model-{:05d}-of-00003.safetensors", i % 3 + 1);
  }
  shards[0].push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", {4}, {1, 2, 3, 4}});
  for (size_t s = 0; s < 3; ++s)
    write_bytes(dir / fmt::format("model-{:05d}-of-00003.safetensors", s + 1),
                safetensors_bytes(shards[s]));
  std::ofstream(dir / "model.safetensors.index.json") << index.dump();
  auto sh = load_model(dir.string());
  ASSERT_TRUE(sh.ok()) << sh.error();
  for (const auto& t : tensors) {
    std::vector<float> out(t.values.size());
    sh.value().weights->read_f32(t.name, out);
    EXPECT_EQ(out, t.values) << t.name;
  }

  // A shard the index names but that is not there.
  fs::remove(dir / "model-00002-of-00003.safetensors");
  EXPECT_HAS(load_error(dir), "model-00002-of-00003.safetensors");
}

TEST(Safetensors, TiedModelsMayCarryLmHead) {
  json cfg = tiny_llama_config();
  cfg["tie_word_embeddings"] = true;
  const fs::path dir = write_hf_model("st_tied", cfg, [](std::vector<StTensor>& ts) {
    ts.push_back({"lm_head.weight", {64, 32}, std::vector<float>(64 * 32, 0.5f)});
  });
  auto m = load_model(dir.string());
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_TRUE(m.value().config.tie_word_embeddings);
}

TEST(Safetensors, BadFilesAreOneLineErrors) {
  const json cfg = tiny_llama_config();
  const std::string q0 = "model.layers.0.self_attn.q_proj.weight";

  // Missing tensor.
  fs::path dir = write_hf_model("st_missing", cfg, [](std::vector<StTensor>& ts) {
    std::erase_if(
        ts, [](const StTensor& t) { return t.name == "model.layers.1.mlp.down_proj.weight"; });
  });
  std::string m = load_error(dir);
  EXPECT_HAS(m, dir.string());
  EXPECT_HAS(m, "tensor 'model.layers.1.mlp.down_proj.weight' is missing");

  // Shape mismatch against the config.
  dir = write_hf_model("st_shape", cfg, [&](std::vector<StTensor>& ts) {
    StTensor* t = find(ts, q0);
    t->shape = {16, 32};
    t->values.resize(16 * 32);
  });
  m = load_error(dir);
  EXPECT_HAS(
      m, "model.safetensors: tensor '" + q0 + "': shape [16, 32] does not match expected [32, 32]");

  // Unsupported dtype.
  dir = write_hf_model("st_dtype", cfg,
                       [&](std::vector<StTensor>& ts) { find(ts, q0)->dtype = "I32"; });
  m = load_error(dir);
  EXPECT_HAS(m, "model.safetensors: tensor '" + q0 + "': dtype I32 is not supported");

  // data_offsets that do not match shape * dtype size.
  dir = write_hf_model("st_offsets", cfg,
                       [&](std::vector<StTensor>& ts) { find(ts, q0)->dtype = "F16"; });
  {
    std::string bytes = read_bytes(dir / "model.safetensors");
    const std::string from = "\"dtype\":\"F16\"", to = "\"dtype\":\"F32\"";
    bytes.replace(bytes.find(from), from.size(), to);
    write_bytes(dir / "model.safetensors", bytes);
  }
  m = load_error(dir);
  EXPECT_HAS(m, "model.safetensors: tensor '" + q0 + "': data_offsets span 2048 bytes");

  // Truncated: the data ends early; then only half of the header is there; then 3 bytes.
  const fs::path good = write_hf_model("st_trunc", cfg);
  const std::string bytes = read_bytes(good / "model.safetensors");
  write_bytes(good / "model.safetensors", bytes.substr(0, bytes.size() - 100));
  m = load_error(good);
  EXPECT_HAS(m, "model.safetensors: truncated safetensors file: tensor '");
  write_bytes(good / "model.safetensors", bytes.substr(0, 200));
  EXPECT_HAS(load_error(good),
             "model.safetensors: truncated safetensors file or bad header length");
  write_bytes(good / "model.safetensors", bytes.substr(0, 3));
  EXPECT_HAS(load_error(good), "model.safetensors: truncated safetensors file (3 bytes");

  // Not a safetensors file at all (the "header length" is text), and a broken JSON header.
  write_bytes(good / "model.safetensors", "GGUF this is not safetensors at all");
  EXPECT_HAS(load_error(good), "model.safetensors");
  std::string broken = bytes;
  broken[9] = '#';
  write_bytes(good / "model.safetensors", broken);
  EXPECT_HAS(load_error(good), "model.safetensors: not a safetensors file (bad JSON header");

  // Malformed header entry (shape is a string).
  {
    std::string b = bytes;
    const std::string key = "\"shape\":[";
    const size_t at = b.find(key);
    b[at + key.size() - 1] = '"';
    b[b.find(']', at)] = '"';
    write_bytes(good / "model.safetensors", b);
  }
  EXPECT_HAS(load_error(good), "malformed header entry (shape)");

  // Bad config.json: unknown architecture, missing key, broken JSON.
  json other = cfg;
  other["architectures"] = {"GPT2LMHeadModel"};
  std::ofstream(good / "config.json") << other.dump();
  m = load_error(good);
  EXPECT_HAS(m, (good / "config.json").string());
  EXPECT_HAS(m, "'architectures'");
  other = cfg;
  other.erase("intermediate_size");
  std::ofstream(good / "config.json") << other.dump();
  EXPECT_HAS(load_error(good), "config.json: key 'intermediate_size' is missing");
  std::ofstream(good / "config.json") << "{\"architectures\": [";
  EXPECT_HAS(load_error(good), "config.json: invalid JSON");
}

// ---- GGUF ------------------------------------------------------------------------------------

TEST(GgufWeights, UnpermutesLlamaQueryAndKeyRows) {
  // A [heads * hd, cols] matrix whose value encodes its Hugging Face (row, col).
  const int64_t heads = 3, kv_heads = 1, hd = 8, cols = 32;
  ModelConfig c;
  c.vocab_size = 16;
  c.hidden_size = cols;
  c.intermediate_size = 32;
  c.num_layers = 1;
  c.num_heads = heads;
  c.num_kv_heads = kv_heads;
  c.head_dim = hd;
  c.max_position_embeddings = 64;
  auto tensors = tiny_tensors(c);
  for (auto& t : tensors)
    if (t.name.ends_with("q_proj.weight") || t.name.ends_with("k_proj.weight"))
      for (size_t i = 0; i < t.values.size(); ++i)
        t.values[i] = static_cast<float>(i / cols) * 100 + static_cast<float>(i % cols);
  const fs::path dir = fresh_dir("gguf_perm");
  tiny_gguf(c, tensors).write(dir / "m.gguf");

  // The file really holds the llama.cpp order: GGUF row 1 is HF row hd/2 of head 0.
  auto g = GgufFile::open((dir / "m.gguf").string());
  const GgufTensor* raw = g->find_tensor("blk.0.attn_q.weight");
  ASSERT_NE(raw, nullptr);
  EXPECT_EQ(raw->dims, (std::vector<uint64_t>{32, 24}));
  EXPECT_EQ(reinterpret_cast<const float*>(raw->data)[cols], (hd / 2) * 100.0f);

  auto m = load_model((dir / "m.gguf").string());
  ASSERT_TRUE(m.ok()) << m.error();
  for (const auto& t : tensors) {
    std::vector<float> out(t.values.size());
    m.value().weights->read_f32(t.name, out);
    EXPECT_EQ(out, t.values) << t.name;
  }
}

TEST(GgufWeights, Qwen2IsNotPermutedAndHasBiases) {
  ModelConfig c = parse_hf_config(tiny_llama_config(), "config.json");
  c.arch = ModelArch::Qwen2;
  c.arch_name = "Qwen2ForCausalLM";
  c.qkv_bias = true;
  c.tie_word_embeddings = true;
  const auto tensors = tiny_tensors(c, 7);
  const fs::path dir = fresh_dir("gguf_qwen2");
  tiny_gguf(c, tensors).write(dir / "q.gguf");
  auto m = load_model((dir / "q.gguf").string());
  ASSERT_TRUE(m.ok()) << m.error();
  const ModelConfig& got = m.value().config;
  EXPECT_EQ(got.arch, ModelArch::Qwen2);
  EXPECT_TRUE(got.qkv_bias);
  EXPECT_TRUE(got.tie_word_embeddings);
  EXPECT_EQ(got.vocab_size, 64);
  EXPECT_EQ(got.head_dim, 8);
  EXPECT_EQ(got.num_kv_heads, 2);
  EXPECT_EQ(got.bos_token_id, 1);
  EXPECT_EQ(got.eos_token_ids, (std::vector<int32_t>{2}));
  for (const auto& t : tensors) {
    std::vector<float> out(t.values.size());
    m.value().weights->read_f32(t.name, out);
    EXPECT_EQ(out, t.values) << t.name;
  }
}

// A Qwen3 GGUF (llama.cpp's "qwen3": attn_q_norm / attn_k_norm, rows not permuted) loads the
// same tensors as its safetensors twin.
TEST(GgufWeights, Qwen3HasQkNorms) {
  json cfg = tiny_llama_config();
  cfg["architectures"] = {"Qwen3ForCausalLM"};
  cfg["head_dim"] = 16;
  const ModelConfig c = parse_hf_config(cfg, "config.json");
  ASSERT_TRUE(c.qk_norm);
  const auto tensors = tiny_tensors(c);
  const fs::path dir = fresh_dir("gguf_qwen3");
  tiny_gguf(c, tensors).write(dir / "m.gguf");
  auto m = load_model((dir / "m.gguf").string());
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_EQ(m.value().config.arch, ModelArch::Qwen3);
  EXPECT_TRUE(m.value().config.qk_norm);
  EXPECT_FALSE(m.value().config.qkv_bias);
  for (const auto& t : tensors) {
    std::vector<float> out(t.values.size());
    m.value().weights->read_f32(t.name, out);
    EXPECT_EQ(out, t.values) << t.name;
  }
}

TEST(GgufWeights, RopeScalingFromMetadataAndRopeFreqs) {
  const ModelConfig c = parse_hf_config(tiny_llama_config(), "config.json");
  const auto tensors = tiny_tensors(c);
  const fs::path p = fresh_dir("gguf_rope") / "m.gguf";

  // llama.cpp stores Llama-3.1 scaling as rope_freqs.weight: inv_freq[i] / factors[i].
  GgufWriter w = tiny_gguf(c, tensors);
  w.add_tensor_f32("rope_freqs.weight", {4}, {1.0f, 1.5f, 8.0f, 8.0f});
  w.write(p);
  auto m = load_model(p.string());
  ASSERT_TRUE(m.ok()) << m.error();
  const RopeConfig& r = m.value().config.rope;
  EXPECT_EQ(r.type, "freq_factors");
  RopeConfig plain;
  plain.theta = 10000;
  const auto base = rope_inv_freq(plain, 8);
  const auto got = rope_inv_freq(r, 8);
  EXPECT_FLOAT_EQ(got[1], base[1] / 1.5f);
  EXPECT_FLOAT_EQ(got[3], base[3] / 8);

  GgufWriter lin = tiny_gguf(c, tensors);
  lin.add_string("llama.rope.scaling.type", "linear");
  lin.add_f32("llama.rope.scaling.factor", 4);
  lin.write(p);
  m = load_model(p.string());
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_EQ(m.value().config.rope.type, "linear");
  EXPECT_DOUBLE_EQ(m.value().config.rope.factor, 4);

  GgufWriter yarn = tiny_gguf(c, tensors);
  yarn.add_string("llama.rope.scaling.type", "yarn");
  yarn.write(p);
  EXPECT_HAS(load_error(p), p.string() + ": key 'llama.rope.scaling.type': rope scaling 'yarn'");

  GgufWriter bad = tiny_gguf(c, tensors);
  bad.add_tensor_f32("rope_freqs.weight", {3}, {1.0f, 1.0f, 1.0f});
  bad.write(p);
  EXPECT_HAS(load_error(p), p.string() + ": tensor 'rope_freqs.weight'");
}

TEST(GgufWeights, QuantizedRoundTrip) {
  json cfg = tiny_llama_config();
  cfg["intermediate_size"] = 64;  // every row a whole number of 32-element blocks
  const ModelConfig c = parse_hf_config(cfg, "config.json");
  const auto tensors = tiny_tensors(c, 3);
  for (GgmlType type :
       {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::F16, GgmlType::BF16}) {
    SCOPED_TRACE(ggml_type_name(type));
    const fs::path dir = fresh_dir("gguf_quant");
    tiny_gguf(c, tensors, type).write(dir / "m.gguf");
    auto m = load_model((dir / "m.gguf").string());
    ASSERT_TRUE(m.ok()) << m.error();
    const WeightSource& w = *m.value().weights;
    EXPECT_EQ(w.dtype_name("model.layers.1.mlp.up_proj.weight"), ggml_type_name(type));
    // Values are uniform in [-1, 1]: the quantization step is at most 2/15 (Q4_1), 2/8 (Q4_0)
    // or 1/127 (Q8_0); rounding errs by half a step (plus fp16 rounding of the scales).
    const double tol = type == GgmlType::Q8_0   ? 0.5 / 127 + 1e-3
                       : type == GgmlType::Q4_0 ? 0.5 / 8 * 2 + 2e-3
                       : type == GgmlType::Q4_1 ? 0.5 * 2 / 15 + 2e-3
                                                : 4e-3;
    for (const auto& t : tensors) {
      std::vector<float> out(t.values.size());
      w.read_f32(t.name, out);
      double max_err = 0;
      for (size_t i = 0; i < out.size(); ++i)
        max_err = std::max(max_err, std::fabs(double(out[i]) - t.values[i]));
      EXPECT_LE(max_err, tol) << t.name;
      if (t.shape.size() == 2) {
        EXPECT_GT(max_err, 0) << t.name;  // really quantized
      }
    }
  }
}

TEST(GgufWeights, BadFilesAreOneLineErrors) {
  const ModelConfig c = parse_hf_config(tiny_llama_config(), "config.json");
  auto tensors = tiny_tensors(c);
  const fs::path dir = fresh_dir("gguf_bad");
  const fs::path p = dir / "bad.gguf";
  const std::string good = tiny_gguf(c, tensors).bytes();

  // Wrong magic.
  write_bytes(p, tiny_gguf(c, tensors).bytes("GGUX"));
  std::string m = load_error(p);
  EXPECT_HAS(m, p.string());
  EXPECT_HAS(m, "magic");

  // Truncated in the tensor data, and in the metadata.
  write_bytes(p, good.substr(0, good.size() - 64));
  m = load_error(p);
  EXPECT_HAS(m, p.string() + ": truncated GGUF file");
  write_bytes(p, good.substr(0, 300));
  EXPECT_HAS(load_error(p), p.string() + ": truncated GGUF file");

  // Unknown architecture.
  {
    GgufWriter w;
    w.add_string("general.architecture", "gpt2");
    w.write(p);
  }
  m = load_error(p);
  EXPECT_HAS(m, p.string());
  EXPECT_HAS(m, "'general.architecture'");
  EXPECT_HAS(m, "gpt2");

  // Missing metadata key.
  {
    GgufWriter w;
    w.add_string("general.architecture", "llama");
    w.add_u32("llama.embedding_length", 32);
    w.write(p);
  }
  EXPECT_HAS(load_error(p), p.string() + ": key 'llama.feed_forward_length' is missing");

  // Missing tensor.
  auto fewer = tensors;
  std::erase_if(fewer,
                [](const StTensor& t) { return t.name == "model.layers.1.mlp.up_proj.weight"; });
  tiny_gguf(c, fewer).write(p);
  EXPECT_HAS(load_error(p), p.string() + ": tensor 'blk.1.ffn_up.weight' is missing");

  // Shape mismatch.
  auto wrong = tensors;
  StTensor* down = find(wrong, "model.layers.0.mlp.down_proj.weight");
  down->shape = {32, 32};
  down->values.resize(32 * 32);
  tiny_gguf(c, wrong).write(p);
  EXPECT_HAS(
      load_error(p),
      p.string() +
          ": tensor 'blk.0.ffn_down.weight': shape [32, 32] does not match expected [32, 48]");

  // Unsupported quantization: one matrix in Q4_K (256-element blocks: make it 256 wide).
  json cfg = tiny_llama_config();
  cfg["hidden_size"] = 256;
  cfg["num_attention_heads"] = 4;
  cfg["num_key_value_heads"] = 2;
  const ModelConfig big = parse_hf_config(cfg, "config.json");
  GgufWriter k = tiny_gguf(big, [&] {
    auto ts = tiny_tensors(big);
    std::erase_if(ts,
                  [](const StTensor& t) { return t.name == "model.layers.0.mlp.up_proj.weight"; });
    return ts;
  }());
  k.add_tensor("blk.0.ffn_up.weight", {256, 48}, GgmlType::Q4_K,
               quantize(GgmlType::Q4_K, std::vector<float>(256 * 48)));
  k.write(p);
  EXPECT_HAS(load_error(p), p.string() +
                                ": tensor 'blk.0.ffn_up.weight': unsupported quantization Q4_K "
                                "(supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1)");
}

// Truncations and flipped bytes anywhere in the headers: an error or a model, never a crash.
TEST(ModelFiles, CorruptFilesNeverCrash) {
  const ModelConfig c = parse_hf_config(tiny_llama_config(), "config.json");
  const auto tensors = tiny_tensors(c);
  const fs::path dir = fresh_dir("corrupt");
  std::ofstream(dir / "config.json") << tiny_llama_config().dump();
  const std::string gguf = tiny_gguf(c, tensors, GgmlType::Q8_0).bytes();
  const std::string st = safetensors_bytes(tensors);
  std::mt19937 rng(5);
  for (const auto& [file, good] :
       {std::pair{dir / "m.gguf", gguf}, std::pair{dir / "model.safetensors", st}}) {
    const std::string target = file.extension() == ".gguf" ? file.string() : dir.string();
    const size_t header = std::min<size_t>(good.size(), 2500);
    int errors = 0;
    for (int i = 0; i < 400; ++i) {
      std::string bad = good;
      if (i % 4 == 0) {
        bad.resize(rng() % good.size());
      } else {
        for (int k = 0; k < 1 + i % 3; ++k)
          bad[rng() % header] ^= static_cast<char>(1 + rng() % 255);
      }
      write_bytes(file, bad);
      auto m = load_model(target);
      if (!m.ok()) {
        ++errors;
        EXPECT_EQ(m.error().find('\n'), std::string::npos) << m.error();
        EXPECT_HAS(m.error(), dir.string());
      }
    }
    EXPECT_GT(errors, 100);
    fs::remove(file);
  }
}

// ---- the real SmolLM2-135M-Instruct Q4_1 file ---------------------------------------------

TEST(GgufWeights, SmolLM2) {
  if (!fs::exists(kSmol)) GTEST_SKIP() << "models/SmolLM2-135M-Instruct.Q4_1.gguf not fetched";
  auto m = load_model(kSmol);
  ASSERT_TRUE(m.ok()) << m.error();
  EXPECT_EQ(m.value().format, "gguf");
  const ModelConfig& c = m.value().config;
  EXPECT_EQ(c.arch, ModelArch::Llama);
  EXPECT_EQ(c.hidden_size, 576);
  EXPECT_EQ(c.intermediate_size, 1536);
  EXPECT_EQ(c.num_layers, 30);
  EXPECT_EQ(c.num_heads, 9);
  EXPECT_EQ(c.num_kv_heads, 3);
  EXPECT_EQ(c.head_dim, 64);
  EXPECT_EQ(c.vocab_size, 49152);
  EXPECT_EQ(c.max_position_embeddings, 8192);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_DOUBLE_EQ(c.rope.theta, 100000);
  EXPECT_EQ(c.rope.type, "default");
  EXPECT_NEAR(c.rms_norm_eps, 1e-5, 1e-12);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, (std::vector<int32_t>{2}));
  EXPECT_EQ(c.dtype, "Q4_1");

  const WeightSource& w = *m.value().weights;
  for (const auto& t : expected_tensors(c)) {
    std::vector<float> v(static_cast<size_t>(tensor_numel(t.shape)));
    w.read_f32(t.name, v);
    double sum2 = 0;
    for (float x : v) {
      ASSERT_TRUE(std::isfinite(x)) << t.name;
      sum2 += double(x) * x;
    }
    EXPECT_GT(sum2, 0) << t.name;
  }

  // Hugging Face rows as transformers' GGUF loader gives them (gguf-py dequantize, then
  // LlamaTensorProcessor._reverse_permute_weights), first three columns.
  struct Row {
    const char* name;
    int64_t rows, row;
    float v[3];
  };
  const Row want[] = {
      {"model.layers.0.self_attn.q_proj.weight",
       576,
       0,
       {-0.0963134766f, 0.157348633f, -0.0963134766f}},
      {"model.layers.0.self_attn.q_proj.weight",
       576,
       1,
       {-0.159179688f, 0.397949219f, -0.0198974609f}},
      {"model.layers.0.self_attn.q_proj.weight",
       576,
       31,
       {0.186950684f, -0.169799805f, 0.258300781f}},
      {"model.layers.0.self_attn.q_proj.weight",
       576,
       32,
       {-0.11730957f, -0.11730957f, -0.192810059f}},
      {"model.layers.0.self_attn.q_proj.weight",
       576,
       33,
       {-0.0628051758f, 0.14465332f, 0.00634765625f}},
      {"model.layers.0.self_attn.q_proj.weight",
       576,
       100,
       {-0.0821533203f, -0.0821533203f, -0.4453125f}},
      {"model.layers.0.self_attn.k_proj.weight",
       192,
       1,
       {0.203369141f, 0.0913696289f, 0.203369141f}},
      {"model.layers.0.self_attn.k_proj.weight",
       192,
       32,
       {0.056640625f, 0.056640625f, -0.126953125f}},
      {"model.layers.0.self_attn.k_proj.weight",
       192,
       100,
       {0.297241211f, -0.075012207f, 0.545410156f}},
      {"model.layers.7.self_attn.k_proj.weight",
       192,
       1,
       {-0.0279846191f, -0.193878174f, 0.0134887695f}},
      {"model.layers.7.self_attn.k_proj.weight",
       192,
       33,
       {-0.00421142578f, 0.14465332f, -0.00421142578f}},
      {"model.embed_tokens.weight", 49152, 100, {0.0190525055f, -0.0843753815f, -0.166028976f}},
  };
  for (const Row& r : want) {
    std::vector<float> v(static_cast<size_t>(r.rows * 576));
    w.read_f32(r.name, v);
    for (int j = 0; j < 3; ++j)
      EXPECT_NEAR(v[r.row * 576 + j], r.v[j], 1e-6) << r.name << " row " << r.row;
  }
}

}  // namespace
}  // namespace nf
