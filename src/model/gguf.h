// GGUF v2/v3 reader: metadata key/values and tensor descriptors over a memory-mapped file, and
// dequantization of the tensor types we load (F32, F16, BF16, Q8_0, Q4_0, Q4_1).
// Every malformed input throws nf::Error naming the file and the key or tensor.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "common/mapped_file.h"

namespace nf {

enum class GgufValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, Bool = 7, String = 8,
  Array = 9, U64 = 10, I64 = 11, F64 = 12,
};

// ggml tensor types (the numbering of ggml.h).
enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9, Q2_K = 10,
  Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, I8 = 24, I16 = 25, I32 = 26, I64 = 27,
  F64 = 28, BF16 = 30,
};

const char* ggml_type_name(GgmlType t);
// Elements per block and bytes per block; {0, 0} for a type this reader does not know.
std::pair<size_t, size_t> ggml_block_layout(GgmlType t);
bool ggml_can_dequantize(GgmlType t);
// Dequantizes n elements (a multiple of the block size) of type t from src into dst.
void ggml_dequantize(GgmlType t, const uint8_t* src, float* dst, size_t n);

// One metadata value. Integers of any width are held as int64 (u64 values above INT64_MAX are
// rejected), floats as double; arrays keep their element type.
struct GgufValue {
  GgufValueType type = GgufValueType::U8;
  GgufValueType elem_type = GgufValueType::U8;  // arrays only
  std::variant<int64_t, double, bool, std::string, std::vector<int64_t>, std::vector<double>,
               std::vector<bool>, std::vector<std::string>>
      v;
};

struct GgufTensor {
  std::string name;
  std::vector<uint64_t> dims;  // ggml order: dims[0] is the fastest-varying (row length)
  GgmlType type = GgmlType::F32;
  const uint8_t* data = nullptr;  // inside the mapped file
  size_t nbytes = 0;
  uint64_t numel() const;
};

class GgufFile {
 public:
  // Parses the header, metadata and tensor infos; checks that every tensor lies inside the file.
  static std::unique_ptr<GgufFile> open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  uint32_t version() const { return version_; }

  bool has(const std::string& key) const { return kv_.count(key) != 0; }
  const GgufValue* find(const std::string& key) const;
  std::optional<std::string> get_string(const std::string& key) const;
  std::optional<int64_t> get_int(const std::string& key) const;
  std::optional<double> get_float(const std::string& key) const;  // also accepts integers
  std::optional<bool> get_bool(const std::string& key) const;
  // Array accessors return nullptr when the key is missing; throw when it has another type.
  const std::vector<std::string>* get_string_array(const std::string& key) const;
  const std::vector<int64_t>* get_int_array(const std::string& key) const;
  const std::vector<double>* get_float_array(const std::string& key) const;
  const std::map<std::string, GgufValue>& metadata() const { return kv_; }

  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find_tensor(const std::string& name) const;

 private:
  GgufFile() = default;
  std::unique_ptr<MappedFile> file_;
  uint32_t version_ = 0;
  std::map<std::string, GgufValue> kv_;
  std::vector<GgufTensor> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

}  // namespace nf
