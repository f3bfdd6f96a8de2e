#include "model/model_loader.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <set>

#include "model/gguf.h"

namespace nf {
namespace {

namespace fs = std::filesystem;

nlohmann::json read_json(const fs::path& p) {
  std::ifstream f(p);
  if (!f) fail("{}: cannot open", p.string());
  try {
    return nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    fail("{}: invalid JSON: {}", p.string(), e.what());
  }
}

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

void check_weights(const LoadedModel& m) {
  const WeightSource& w = *m.weights;
  for (const TensorSpec& t : expected_tensors(m.config)) {
    if (!w.has(t.name)) fail("{}: tensor '{}' is missing", w.describe(), t.name);
    const auto s = w.shape(t.name);
    if (s != t.shape)
      fail("{}: tensor '{}': shape {} does not match expected {}", w.describe(), t.name,
           shape_str(s), shape_str(t.shape));
    if (!w.can_read(t.name))
      fail("{}: tensor '{}': unsupported dtype or quantization {}", w.describe(), t.name,
           w.dtype_name(t.name));
  }
}

GenerationDefaults read_generation_config(const fs::path& p) {
  GenerationDefaults g;
  if (!fs::exists(p)) return g;
  const auto j = read_json(p);
  const std::string src = p.string();
  if (j.contains("eos_token_id")) {
    const auto& v = j["eos_token_id"];
    if (v.is_number_integer()) g.eos_token_ids = {v.get<int32_t>()};
    else if (v.is_array()) g.eos_token_ids = v.get<std::vector<int32_t>>();
    else if (!v.is_null()) fail("{}: key 'eos_token_id' must be an integer or a list", src);
  }
  if (j.contains("temperature") && j["temperature"].is_number()) g.temperature = j["temperature"].get<float>();
  if (j.contains("top_p") && j["top_p"].is_number()) g.top_p = j["top_p"].get<float>();
  if (j.contains("top_k") && j["top_k"].is_number_integer()) g.top_k = j["top_k"].get<int>();
  return g;
}

std::vector<std::string> safetensors_files(const fs::path& dir) {
  const fs::path index = dir / "model.safetensors.index.json";
  std::vector<std::string> files;
  if (fs::exists(index)) {
    const auto j = read_json(index);
    if (!j.contains("weight_map") || !j["weight_map"].is_object())
      fail("{}: key 'weight_map' is missing", index.string());
    std::set<std::string> names;
    for (const auto& [tensor, file] : j["weight_map"].items()) names.insert(file.get<std::string>());
    for (const auto& n : names) files.push_back((dir / n).string());
    return files;
  }
  if (fs::exists(dir / "model.safetensors")) return {(dir / "model.safetensors").string()};
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  if (files.empty()) fail("{}: no *.safetensors weights found", dir.string());
  return files;
}

LoadedModel load(const std::string& spec) {
  LoadedModel m;
  m.path = spec;
  if (spec.rfind("dummy:", 0) == 0) {
    const std::string name = spec.substr(6);
    m.format = "dummy";
    if (name.ends_with(".json") || fs::exists(name)) {
      m.config = parse_hf_config(read_json(name), name);
    } else {
      m.config = preset_config(name);
    }
    m.weights = open_dummy_weights(m.config, spec);
    return m;
  }
  const fs::path p(spec);
  if (!fs::exists(p)) fail("{}: no such file or directory", spec);
  if (fs::is_directory(p)) {
    m.format = "hf";
    const fs::path cfg = p / "config.json";
    if (!fs::exists(cfg)) fail("{}: no config.json in this directory", spec);
    m.config = parse_hf_config(read_json(cfg), cfg.string());
    m.generation = read_generation_config(p / "generation_config.json");
    m.weights = open_safetensors(spec, safetensors_files(p));
  } else {
    m.format = "gguf";
    std::shared_ptr<const GgufFile> g = GgufFile::open(spec);
    m.config = config_from_gguf(*g);
    m.weights = open_gguf_weights(g, m.config);
  }
  check_weights(m);
  return m;
}

}  // namespace

Result<LoadedModel> load_model(const std::string& spec) {
  return capture([&] { return load(spec); });
}

}  // namespace nf
