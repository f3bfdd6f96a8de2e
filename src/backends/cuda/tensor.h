// Device tensors: a non-owning view (pointer, dtype, shape) that launchers take and check, and
// DeviceBuffer, the RAII owner of one cudaMalloc allocation. Free of fmt, so that nvcc-compiled
// files may include it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>

namespace nf::cuda {

enum class DType : uint8_t { kBf16, kF16, kF32, kI32, kI64, kU8 };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::kBf16:
    case DType::kF16:
      return 2;
    case DType::kF32:
    case DType::kI32:
      return 4;
    case DType::kI64:
      return 8;
    case DType::kU8:
      return 1;
  }
  return 0;
}

const char* dtype_name(DType t);

// A contiguous row-major tensor in device memory; it owns nothing. Up to kMaxDims dimensions.
struct TensorView {
  static constexpr int kMaxDims = 6;

  void* data = nullptr;
  DType dtype = DType::kF32;
  int ndim = 0;
  std::array<int64_t, kMaxDims> shape{};

  TensorView() = default;
  TensorView(void* p, DType t, std::initializer_list<int64_t> dims);

  bool empty() const { return data == nullptr; }
  int64_t size(int dim) const { return shape[static_cast<size_t>(dim < 0 ? dim + ndim : dim)]; }
  int64_t numel() const;
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  template <typename T>
  T* ptr() const {
    return static_cast<T*>(data);
  }
  std::string str() const;  // "bf16[7, 4096]"
};

// Launcher entry checks: a clear NF_CHECK message naming the op and the argument.
void check_tensor(const TensorView& t, const char* op, const char* name, DType dtype, int ndim);
void check_dim(const TensorView& t, const char* op, const char* name, int dim, int64_t expected);

// One device allocation, freed on destruction. Move-only.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);  // uninitialized; throws nf::Error when out of memory
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* data() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  // A view of the buffer's first bytes as `dtype` with the given shape (which must fit).
  TensorView view(DType dtype, std::initializer_list<int64_t> dims) const;
  // Frees the old allocation (if any) and holds `bytes` new bytes. Throws nf::Error when the
  // device is out of memory.
  void reset(size_t bytes);

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace nf::cuda
