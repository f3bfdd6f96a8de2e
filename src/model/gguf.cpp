#include "model/gguf.h"

#include <cstring>
#include <limits>

#include "common/half.h"
#include "common/status.h"

namespace nf {

const char* ggml_type_name(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return "F32";
    case GgmlType::F16: return "F16";
    case GgmlType::Q4_0: return "Q4_0";
    case GgmlType::Q4_1: return "Q4_1";
    case GgmlType::Q5_0: return "Q5_0";
    case GgmlType::Q5_1: return "Q5_1";
    case GgmlType::Q8_0: return "Q8_0";
    case GgmlType::Q8_1: return "Q8_1";
    case GgmlType::Q2_K: return "Q2_K";
    case GgmlType::Q3_K: return "Q3_K";
    case GgmlType::Q4_K: return "Q4_K";
    case GgmlType::Q5_K: return "Q5_K";
    case GgmlType::Q6_K: return "Q6_K";
    case GgmlType::Q8_K: return "Q8_K";
    case GgmlType::I8: return "I8";
    case GgmlType::I16: return "I16";
    case GgmlType::I32: return "I32";
    case GgmlType::I64: return "I64";
    case GgmlType::F64: return "F64";
    case GgmlType::BF16: return "BF16";
  }
  return "unknown";
}

std::pair<size_t, size_t> ggml_block_layout(GgmlType t) {
  switch (t) {
    case GgmlType::F32: return {1, 4};
    case GgmlType::F16: return {1, 2};
    case GgmlType::BF16: return {1, 2};
    case GgmlType::F64: return {1, 8};
    case GgmlType::I8: return {1, 1};
    case GgmlType::I16: return {1, 2};
    case GgmlType::I32: return {1, 4};
    case GgmlType::I64: return {1, 8};
    case GgmlType::Q4_0: return {32, 18};
    case GgmlType::Q4_1: return {32, 20};
    case GgmlType::Q5_0: return {32, 22};
    case GgmlType::Q5_1: return {32, 24};
    case GgmlType::Q8_0: return {32, 34};
    case GgmlType::Q8_1: return {32, 36};
    case GgmlType::Q2_K: return {256, 84};
    case GgmlType::Q3_K: return {256, 110};
    case GgmlType::Q4_K: return {256, 144};
    case GgmlType::Q5_K: return {256, 176};
    case GgmlType::Q6_K: return {256, 210};
    case GgmlType::Q8_K: return {256, 292};
  }
  return {0, 0};
}

bool ggml_can_dequantize(GgmlType t) {
  switch (t) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_0:
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
      return true;
    default:
      return false;
  }
}

namespace {

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

}  // namespace

// Block formats (ggml): Q8_0 = fp16 scale d, 32 x int8; x = d*q.
// Q4_0 = fp16 d, 16 bytes of nibbles; element j (j<16) is the low nibble of byte j, element
// j+16 its high nibble; x = d*(q-8). Q4_1 = fp16 d, fp16 m, same nibbles; x = d*q + m.
void ggml_dequantize(GgmlType t, const uint8_t* src, float* dst, size_t n) {
  switch (t) {
    case GgmlType::F32:
      std::memcpy(dst, src, n * 4);
      return;
    case GgmlType::F16:
      for (size_t i = 0; i < n; ++i) dst[i] = fp16_to_float(load_u16(src + 2 * i));
      return;
    case GgmlType::BF16:
      for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(load_u16(src + 2 * i));
      return;
    case GgmlType::Q8_0:
      NF_CHECK(n % 32 == 0, "Q8_0 length {} is not a multiple of 32", n);
      for (size_t b = 0; b < n / 32; ++b, src += 34, dst += 32) {
        const float d = fp16_to_float(load_u16(src));
        const int8_t* q = reinterpret_cast<const int8_t*>(src + 2);
        for (int j = 0; j < 32; ++j) dst[j] = d * static_cast<float>(q[j]);
      }
      return;
    case GgmlType::Q4_0:
      NF_CHECK(n % 32 == 0, "Q4_0 length {} is not a multiple of 32", n);
      for (size_t b = 0; b < n / 32; ++b, src += 18, dst += 32) {
        const float d = fp16_to_float(load_u16(src));
        const uint8_t* q = src + 2;
        for (int j = 0; j < 16; ++j) {
          dst[j] = d * static_cast<float>(static_cast<int>(q[j] & 0xf) - 8);
          dst[j + 16] = d * static_cast<float>(static_cast<int>(q[j] >> 4) - 8);
        }
      }
      return;
    case GgmlType::Q4_1:
      NF_CHECK(n % 32 == 0, "Q4_1 length {} is not a multiple of 32", n);
      for (size_t b = 0; b < n / 32; ++b, src += 20, dst += 32) {
        const float d = fp16_to_float(load_u16(src));
        const float m = fp16_to_float(load_u16(src + 2));
        const uint8_t* q = src + 4;
        for (int j = 0; j < 16; ++j) {
          dst[j] = d * static_cast<float>(q[j] & 0xf) + m;
          dst[j + 16] = d * static_cast<float>(q[j] >> 4) + m;
        }
      }
      return;
    default:
      NF_CHECK(false, "ggml_dequantize: type {} is not supported", ggml_type_name(t));
  }
}

uint64_t GgufTensor::numel() const {
  uint64_t n = 1;
  for (uint64_t d : dims) n *= d;
  return n;
}

namespace {

// Bounds-checked little-endian reader over the mapped file.
class Reader {
 public:
  Reader(const MappedFile& f) : f_(f) {}

  size_t pos() const { return pos_; }
  void need(size_t n, const char* what) {
    if (n > f_.size() || pos_ > f_.size() - n)
      fail("{}: truncated GGUF file (reading {} at byte {} of {})", f_.path(), what, pos_, f_.size());
  }
  template <typename T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, f_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string get_string(const char* what) {
    const uint64_t len = get<uint64_t>(what);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(f_.data() + pos_), len);
    pos_ += len;
    return s;
  }

 private:
  const MappedFile& f_;
  size_t pos_ = 0;
};

const char* value_type_name(GgufValueType t) {
  static const char* names[] = {"u8",  "i8",  "u16",  "i16",   "u32", "i32",  "f32",
                                "bool", "string", "array", "u64", "i64", "f64"};
  const auto i = static_cast<uint32_t>(t);
  return i < 13 ? names[i] : "unknown";
}

bool is_int_type(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::U16:
    case GgufValueType::I16: case GgufValueType::U32: case GgufValueType::I32:
    case GgufValueType::U64: case GgufValueType::I64:
      return true;
    default:
      return false;
  }
}

int64_t read_int(Reader& r, GgufValueType t, const std::string& path, const std::string& key) {
  switch (t) {
    case GgufValueType::U8: return r.get<uint8_t>("u8");
    case GgufValueType::I8: return r.get<int8_t>("i8");
    case GgufValueType::U16: return r.get<uint16_t>("u16");
    case GgufValueType::I16: return r.get<int16_t>("i16");
    case GgufValueType::U32: return r.get<uint32_t>("u32");
    case GgufValueType::I32: return r.get<int32_t>("i32");
    case GgufValueType::I64: return r.get<int64_t>("i64");
    case GgufValueType::U64: {
      const uint64_t v = r.get<uint64_t>("u64");
      if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        fail("{}: key '{}': u64 value {} is out of range", path, key, v);
      return static_cast<int64_t>(v);
    }
    default:
      NF_CHECK(false, "not an integer type");
  }
}

GgufValue read_value(Reader& r, GgufValueType t, const std::string& path, const std::string& key) {
  GgufValue out;
  out.type = t;
  if (is_int_type(t)) {
    out.v = read_int(r, t, path, key);
  } else if (t == GgufValueType::F32) {
    out.v = static_cast<double>(r.get<float>("f32"));
  } else if (t == GgufValueType::F64) {
    out.v = r.get<double>("f64");
  } else if (t == GgufValueType::Bool) {
    out.v = r.get<uint8_t>("bool") != 0;
  } else if (t == GgufValueType::String) {
    out.v = r.get_string("string");
  } else if (t == GgufValueType::Array) {
    const auto et = static_cast<GgufValueType>(r.get<uint32_t>("array type"));
    const uint64_t n = r.get<uint64_t>("array length");
    out.elem_type = et;
    // Each element takes at least one byte: a count beyond the file is a corrupt header.
    r.need(n, "array elements");
    if (is_int_type(et)) {
      std::vector<int64_t> a(n);
      for (auto& x : a) x = read_int(r, et, path, key);
      out.v = std::move(a);
    } else if (et == GgufValueType::F32 || et == GgufValueType::F64) {
      std::vector<double> a(n);
      for (auto& x : a) x = et == GgufValueType::F32 ? r.get<float>("f32") : r.get<double>("f64");
      out.v = std::move(a);
    } else if (et == GgufValueType::Bool) {
      std::vector<bool> a(n);
      for (size_t i = 0; i < n; ++i) a[i] = r.get<uint8_t>("bool") != 0;
      out.v = std::move(a);
    } else if (et == GgufValueType::String) {
      std::vector<std::string> a(n);
      for (auto& x : a) x = r.get_string("string");
      out.v = std::move(a);
    } else {
      fail("{}: key '{}': unsupported array element type {}", path, key, static_cast<uint32_t>(et));
    }
  } else {
    fail("{}: key '{}': unknown value type {}", path, key, static_cast<uint32_t>(t));
  }
  return out;
}

}  // namespace

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
  std::unique_ptr<GgufFile> g(new GgufFile());
  g->file_ = std::make_unique<MappedFile>(path);
  const MappedFile& f = *g->file_;
  Reader r(f);
  if (f.size() < 4 || std::memcmp(f.data(), "GGUF", 4) != 0)
    fail("{}: not a GGUF file (bad magic)", path);
  r.get<uint32_t>("magic");
  g->version_ = r.get<uint32_t>("version");
  if (g->version_ < 2 || g->version_ > 3)
    fail("{}: unsupported GGUF version {} (supported: 2, 3)", path, g->version_);
  const uint64_t n_tensors = r.get<uint64_t>("tensor count");
  const uint64_t n_kv = r.get<uint64_t>("metadata count");
  r.need(n_kv, "metadata");
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = r.get_string("metadata key");
    const auto t = static_cast<GgufValueType>(r.get<uint32_t>("metadata type"));
    GgufValue v = read_value(r, t, path, key);
    g->kv_[std::move(key)] = std::move(v);
  }
  uint64_t alignment = 32;
  if (auto a = g->get_int("general.alignment")) {
    if (*a <= 0 || (*a & (*a - 1)) != 0) fail("{}: key 'general.alignment': invalid value {}", path, *a);
    alignment = static_cast<uint64_t>(*a);
  }
  r.need(n_tensors, "tensor infos");
  std::vector<uint64_t> offsets;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensor t;
    t.name = r.get_string("tensor name");
    const uint32_t nd = r.get<uint32_t>("tensor dims");
    if (nd == 0 || nd > 4) fail("{}: tensor '{}': invalid number of dimensions {}", path, t.name, nd);
    for (uint32_t d = 0; d < nd; ++d) t.dims.push_back(r.get<uint64_t>("tensor dim"));
    t.type = static_cast<GgmlType>(r.get<uint32_t>("tensor type"));
    offsets.push_back(r.get<uint64_t>("tensor offset"));
    if (g->tensor_index_.count(t.name)) fail("{}: tensor '{}' appears twice", path, t.name);
    g->tensor_index_[t.name] = g->tensors_.size();
    g->tensors_.push_back(std::move(t));
  }
  const uint64_t data_start = (r.pos() + alignment - 1) / alignment * alignment;
  for (size_t i = 0; i < g->tensors_.size(); ++i) {
    GgufTensor& t = g->tensors_[i];
    const auto [block, block_bytes] = ggml_block_layout(t.type);
    if (block == 0) {
      fail("{}: tensor '{}': unknown tensor type {}", path, t.name, static_cast<uint32_t>(t.type));
    }
    uint64_t n = 1;
    for (uint64_t d : t.dims) {
      if (d == 0 || d > (uint64_t{1} << 40)) fail("{}: tensor '{}': invalid dimension {}", path, t.name, d);
      if (__builtin_mul_overflow(n, d, &n) || n > (uint64_t{1} << 48))
        fail("{}: tensor '{}': too many elements", path, t.name);
    }
    if (t.dims[0] % block != 0)
      fail("{}: tensor '{}': row length {} is not a multiple of the {} block size {}", path, t.name,
           t.dims[0], ggml_type_name(t.type), block);
    t.nbytes = n / block * block_bytes;
    const uint64_t off = data_start + offsets[i];
    if (offsets[i] % alignment != 0)
      fail("{}: tensor '{}': offset {} is not aligned to {}", path, t.name, offsets[i], alignment);
    if (off > f.size() || t.nbytes > f.size() - off)
      fail("{}: truncated GGUF file: tensor '{}' needs bytes {}..{} but the file has {}", path,
           t.name, off, off + t.nbytes, f.size());
    t.data = f.data() + off;
  }
  return g;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

std::optional<std::string> GgufFile::get_string(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufValueType::String)
    fail("{}: key '{}': expected a string, found {}", path(), key, value_type_name(v->type));
  return std::get<std::string>(v->v);
}

std::optional<int64_t> GgufFile::get_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (!is_int_type(v->type))
    fail("{}: key '{}': expected an integer, found {}", path(), key, value_type_name(v->type));
  return std::get<int64_t>(v->v);
}

std::optional<double> GgufFile::get_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (is_int_type(v->type)) return static_cast<double>(std::get<int64_t>(v->v));
  if (v->type != GgufValueType::F32 && v->type != GgufValueType::F64)
    fail("{}: key '{}': expected a number, found {}", path(), key, value_type_name(v->type));
  return std::get<double>(v->v);
}

std::optional<bool> GgufFile::get_bool(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufValueType::Bool)
    fail("{}: key '{}': expected a bool, found {}", path(), key, value_type_name(v->type));
  return std::get<bool>(v->v);
}

namespace {

template <typename T>
const T* get_array(const GgufFile& g, const std::string& key, const char* want) {
  const GgufValue* v = g.find(key);
  if (!v) return nullptr;
  const T* a = v->type == GgufValueType::Array ? std::get_if<T>(&v->v) : nullptr;
  if (!a) fail("{}: key '{}': expected an array of {}", g.path(), key, want);
  return a;
}

}  // namespace

const std::vector<std::string>* GgufFile::get_string_array(const std::string& key) const {
  return get_array<std::vector<std::string>>(*this, key, "strings");
}
const std::vector<int64_t>* GgufFile::get_int_array(const std::string& key) const {
  return get_array<std::vector<int64_t>>(*this, key, "integers");
}
const std::vector<double>* GgufFile::get_float_array(const std::string& key) const {
  return get_array<std::vector<double>>(*this, key, "floats");
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace nf
