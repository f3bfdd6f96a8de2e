// Safetensors weights: each file is [u64 little-endian header length N][N bytes of JSON header]
// [data]; the header maps tensor name -> {"dtype", "shape", "data_offsets": [begin, end]} with
// offsets relative to the start of the data, plus an optional "__metadata__" entry. Sharded
// checkpoints list their files in model.safetensors.index.json ({"weight_map": {tensor: file}}).
#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "common/half.h"
#include "common/json_file.h"
#include "common/mapped_file.h"
#include "common/status.h"
#include "model/weight_source.h"

namespace nf {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Bytes per element of the safetensors dtypes; 0 for a dtype this reader does not know.
size_t dtype_size(const std::string& d) {
  static const std::map<std::string, size_t> kSizes = {
      {"F64", 8},  {"F32", 4},     {"F16", 2},     {"BF16", 2},   {"I64", 8}, {"U64", 8},
      {"I32", 4},  {"U32", 4},     {"I16", 2},     {"U16", 2},    {"I8", 1},  {"U8", 1},
      {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1}};
  auto it = kSizes.find(d);
  return it == kSizes.end() ? 0 : it->second;
}

bool readable_dtype(const std::string& d) {
  return d == "F32" || d == "F16" || d == "BF16";
}

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}


// The shard files of a checkpoint directory (see open_safetensors).
std::vector<std::string> shard_files(const fs::path& dir) {
  const fs::path index = dir / "model.safetensors.index.json";
  if (fs::exists(index)) {
    const json j = read_json_file(index.string());
    auto wm = j.is_object() ? j.find("weight_map") : j.end();
    if (!j.is_object() || wm == j.end() || !wm->is_object())
      fail("{}: key 'weight_map' is missing", index.string());
    std::set<std::string> names;
    for (const auto& [tensor, file] : wm->items()) {
      if (!file.is_string())
        fail("{}: key 'weight_map.{}' must be a file name, got {}", index.string(), tensor,
             file.dump());
      names.insert(file.get<std::string>());
    }
    if (names.empty()) fail("{}: key 'weight_map' lists no files", index.string());
    std::vector<std::string> files;
    for (const auto& n : names) files.push_back((dir / n).string());
    return files;
  }
  if (fs::exists(dir / "model.safetensors")) return {(dir / "model.safetensors").string()};
  std::vector<std::string> files;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
  std::sort(files.begin(), files.end());
  if (files.empty()) fail("{}: no *.safetensors weights found", dir.string());
  return files;
}

class SafetensorsSource final : public WeightSource {
 public:
  SafetensorsSource(std::string where, const std::vector<std::string>& files)
      : where_(std::move(where)) {
    for (const auto& f : files) open_file(f);
  }

  bool has(const std::string& n) const override { return tensors_.count(n) != 0; }
  std::vector<int64_t> shape(const std::string& n) const override { return get(n).shape; }
  std::string dtype_name(const std::string& n) const override { return get(n).dtype; }
  std::string describe() const override { return where_; }
  std::string tensor_label(const std::string& n) const override {
    auto it = tensors_.find(n);
    return fmt::format("{}: tensor '{}'", it == tensors_.end() ? where_ : it->second.file->path(),
                       n);
  }

  void check_readable(const std::string& n) const override {
    const Entry& e = get(n);
    if (!readable_dtype(e.dtype))
      fail("{}: dtype {} is not supported (supported: F32, F16, BF16)", tensor_label(n), e.dtype);
  }

  void read_f32(const std::string& n, std::span<float> dst) const override {
    check_readable(n);
    const int64_t count = tensor_numel(get(n).shape);
    if (static_cast<int64_t>(dst.size()) != count)
      fail("{}: has {} elements, the destination {}", tensor_label(n), count, dst.size());
    convert(get(n), 0, dst);
  }

  // Only the rows' bytes are read and converted.
  void read_rows_f32(const std::string& n, int64_t row_begin, int64_t row_end,
                     std::span<float> dst) const override {
    check_readable(n);
    const int64_t cols = checked_row_width(*this, n, row_begin, row_end, dst.size());
    convert(get(n), row_begin * cols, dst);
  }

 private:
  struct Entry;
  // dst[j] = element first + j of the tensor, as fp32.
  static void convert(const Entry& e, int64_t first, std::span<float> dst) {
    const int64_t count = static_cast<int64_t>(dst.size());
    const uint8_t* p = e.data + first * (e.dtype == "F32" ? 4 : 2);
    if (e.dtype == "F32") {
      std::memcpy(dst.data(), p, static_cast<size_t>(count) * 4);
    } else if (e.dtype == "F16") {
      for (int64_t i = 0; i < count; ++i) dst[i] = fp16_to_float(load_u16(p + 2 * i));
    } else {
      for (int64_t i = 0; i < count; ++i) dst[i] = bf16_to_float(load_u16(p + 2 * i));
    }
  }

  struct Entry {
    const MappedFile* file;
    std::string dtype;
    std::vector<int64_t> shape;
    const uint8_t* data;  // inside the mapped file
  };

  const Entry& get(const std::string& n) const {
    auto it = tensors_.find(n);
    if (it == tensors_.end()) fail("{}: tensor '{}' is missing", where_, n);
    return it->second;
  }

  void open_file(const std::string& path) {
    files_.push_back(std::make_unique<MappedFile>(path));
    const MappedFile& f = *files_.back();
    if (f.size() < 8) fail("{}: truncated safetensors file ({} bytes, no header)", path, f.size());
    uint64_t hlen;
    std::memcpy(&hlen, f.data(), 8);
    if (hlen > f.size() - 8)
      fail(
          "{}: truncated safetensors file or bad header length ({} bytes of header, {} in the "
          "file)",
          path, hlen, f.size());
    json h;
    try {
      h = parse_json(std::string_view(reinterpret_cast<const char*>(f.data()) + 8, hlen));
    } catch (const JsonError& e) {
      fail("{}: not a safetensors file (bad JSON header: {})", path, e.what());
    }
    if (!h.is_object()) fail("{}: not a safetensors file (the header is not a JSON object)", path);
    const uint64_t base = 8 + hlen;
    const uint64_t data_size = f.size() - base;
    for (const auto& [name, v] : h.items()) {
      if (name == "__metadata__") continue;
      Entry e;
      e.file = &f;
      const auto off = parse_entry(path, name, v, e);
      if (off[1] > data_size)
        fail("{}: truncated safetensors file: tensor '{}' ends at byte {} of {}", path, name,
             base + off[1], f.size());
      const size_t esize = dtype_size(e.dtype);
      if (esize != 0) {
        const uint64_t want = static_cast<uint64_t>(tensor_numel(e.shape)) * esize;
        if (want != off[1] - off[0])
          fail("{}: tensor '{}': data_offsets span {} bytes but shape {} of {} needs {}", path,
               name, off[1] - off[0], shape_str(e.shape), e.dtype, want);
      }
      e.data = f.data() + base + off[0];
      if (tensors_.count(name))
        fail("{}: tensor '{}' is also in {}", path, name, tensors_.at(name).file->path());
      tensors_.emplace(name, std::move(e));
    }
  }

  // Reads dtype and shape into `e`; returns the data offsets [begin, end].
  static std::array<uint64_t, 2> parse_entry(const std::string& path, const std::string& name,
                                             const json& v, Entry& e) {
    auto bad = [&](const char* what) {
      fail("{}: tensor '{}': malformed header entry ({}): {}", path, name, what, json_excerpt(v));
    };
    if (!v.is_object()) bad("not an object");
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) bad("dtype");
    e.dtype = dt->get<std::string>();
    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) bad("shape");
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned() || d.get<uint64_t>() > (uint64_t{1} << 40)) bad("shape");
      e.shape.push_back(d.get<int64_t>());
      if (__builtin_mul_overflow(numel, d.get<uint64_t>(), &numel) || numel > (uint64_t{1} << 50))
        bad("shape");
    }
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      bad("data_offsets");
    const std::array<uint64_t, 2> o = {(*off)[0].get<uint64_t>(), (*off)[1].get<uint64_t>()};
    if (o[1] < o[0]) bad("data_offsets");
    return o;
  }

  std::string where_;
  std::vector<std::unique_ptr<MappedFile>> files_;
  std::map<std::string, Entry> tensors_;
};

}  // namespace

std::unique_ptr<WeightSource> open_safetensors(const std::string& path) {
  if (fs::is_directory(path)) return std::make_unique<SafetensorsSource>(path, shard_files(path));
  return std::make_unique<SafetensorsSource>(path, std::vector<std::string>{path});
}

}  // namespace nf
