#include "model/model_loader.h"

#include "common/json_file.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/gguf.h"

namespace nf {
namespace {

namespace fs = std::filesystem;


// Every tensor the config needs: present, the exact shape, a dtype read_f32 can convert.
void check_weights(const ModelConfig& c, const WeightSource& w) {
  for (const TensorSpec& t : expected_tensors(c)) {
    if (!w.has(t.name)) fail("{} is missing", w.tensor_label(t.name));
    const auto s = w.shape(t.name);
    if (s != t.shape)
      fail("{}: shape {} does not match expected {}", w.tensor_label(t.name), shape_str(s),
           shape_str(t.shape));
    w.check_readable(t.name);
  }
}

GenerationDefaults read_generation_config(const fs::path& p) {
  GenerationDefaults g;
  if (!fs::exists(p)) return g;
  const auto j = read_json_file(p.string());
  const std::string src = p.string();
  if (!j.is_object()) fail("{}: not a JSON object", src);
  auto number = [&](const char* key) -> std::optional<double> {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) return std::nullopt;
    if (!it->is_number()) fail("{}: key '{}' must be a number, got {}", src, key, it->dump());
    return it->get<double>();
  };
  if (auto it = j.find("eos_token_id"); it != j.end() && !it->is_null()) {
    auto id = [&](const nlohmann::json& v) {
      if (!v.is_number_integer())
        fail("{}: key 'eos_token_id' must be an integer or a list of integers", src);
      return v.get<int32_t>();
    };
    if (it->is_array()) {
      for (const auto& v : *it) g.eos_token_ids.push_back(id(v));
    } else {
      g.eos_token_ids = {id(*it)};
    }
  }
  if (auto v = number("temperature")) g.temperature = static_cast<float>(*v);
  if (auto v = number("top_p")) g.top_p = static_cast<float>(*v);
  if (auto v = number("top_k")) g.top_k = static_cast<int>(*v);
  return g;
}

// dummy:<preset> or dummy:<config.json or a directory holding one>.
LoadedModel load_dummy(const std::string& spec) {
  LoadedModel m;
  m.path = spec;
  m.format = "dummy";
  const std::string name = spec.substr(6);
  if (name.ends_with(".json") || fs::exists(name)) {
    fs::path cfg = name;
    if (fs::is_directory(cfg)) cfg /= "config.json";
    m.config = parse_hf_config(read_json_file(cfg.string()), cfg.string());
    m.generation = read_generation_config(cfg.parent_path() / "generation_config.json");
  } else {
    m.config = preset_config(name);
  }
  m.weights = open_dummy_weights(m.config, spec);
  return m;
}

LoadedModel load(const std::string& spec) {
  if (spec.starts_with("dummy:")) return load_dummy(spec);
  LoadedModel m;
  m.path = spec;
  const fs::path p(spec);
  if (!fs::exists(p)) fail("{}: no such file or directory", spec);
  if (fs::is_directory(p)) {
    m.format = "hf";
    const fs::path cfg = p / "config.json";
    if (!fs::exists(cfg)) fail("{}: no config.json in this directory", spec);
    m.config = parse_hf_config(read_json_file(cfg.string()), cfg.string());
    m.generation = read_generation_config(p / "generation_config.json");
    m.weights = open_safetensors(spec);
  } else {
    m.format = "gguf";
    std::shared_ptr<const GgufFile> g = GgufFile::open(spec);
    m.config = config_from_gguf(*g);
    m.weights = open_gguf_weights(g, m.config);
  }
  if (m.config.eos_token_ids.empty()) m.config.eos_token_ids = m.generation.eos_token_ids;
  check_weights(m.config, *m.weights);
  return m;
}

}  // namespace

Result<LoadedModel> load_model(const std::string& spec) {
  try {
    return capture([&] { return load(spec); });
  } catch (const nlohmann::json::exception& e) {
    return Result<LoadedModel>::error(fmt::format("{}: {}", spec, e.what()));
  } catch (const std::filesystem::filesystem_error& e) {
    return Result<LoadedModel>::error(fmt::format("{}: {}", spec, e.what()));
  } catch (const std::bad_alloc&) {
    return Result<LoadedModel>::error(fmt::format("{}: out of memory while loading", spec));
  }
}

}  // namespace nf
