#include "backends/cuda/tensor.h"

#include <fmt/format.h>

#include "backends/cuda/cuda_check.h"
#include "common/status.h"

namespace nf::cuda {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kBf16:
      return "bf16";
    case DType::kF16:
      return "f16";
    case DType::kF32:
      return "f32";
    case DType::kI32:
      return "i32";
    case DType::kI64:
      return "i64";
    case DType::kU8:
      return "u8";
  }
  return "?";
}

TensorView::TensorView(void* p, DType t, std::initializer_list<int64_t> dims)
    : data(p), dtype(t), ndim(static_cast<int>(dims.size())) {
  NF_CHECK(dims.size() <= kMaxDims, "TensorView: {} dims, at most {}", dims.size(), kMaxDims);
  size_t i = 0;
  for (int64_t d : dims) {
    NF_CHECK(d >= 0, "TensorView: negative dimension {}", d);
    shape[i++] = d;
  }
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int i = 0; i < ndim; ++i) n *= shape[static_cast<size_t>(i)];
  return n;
}

std::string TensorView::str() const {
  std::string s = fmt::format("{}[", dtype_name(dtype));
  for (int i = 0; i < ndim; ++i)
    s += fmt::format("{}{}", i ? ", " : "", shape[static_cast<size_t>(i)]);
  return s + "]";
}

void check_tensor(const TensorView& t, const char* op, const char* name, DType dtype, int ndim) {
  NF_CHECK(t.dtype == dtype && t.ndim == ndim, "{}: {} must be a {}-d {} tensor, got {}", op, name,
           ndim, dtype_name(dtype), t.str());
  NF_CHECK(t.data != nullptr || t.numel() == 0, "{}: {} {} has no data", op, name, t.str());
}

void check_dim(const TensorView& t, const char* op, const char* name, int dim, int64_t expected) {
  NF_CHECK(t.size(dim) == expected, "{}: {} {} needs size {} in dim {}", op, name, t.str(),
           expected, dim);
}

DeviceBuffer::DeviceBuffer(size_t bytes) {
  reset(bytes);
}

namespace {

// Frees p; a runtime already unloading at process exit is not an error.
void free_device(void* p) {
  if (p == nullptr) return;
  const cudaError_t e = cudaFree(p);
  if (e != cudaErrorCudartUnloading) NF_CUDA_CHECK(e);
}

}  // namespace

DeviceBuffer::~DeviceBuffer() {
  free_device(ptr_);
}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    free_device(ptr_);
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

TensorView DeviceBuffer::view(DType dtype, std::initializer_list<int64_t> dims) const {
  TensorView v(ptr_, dtype, dims);
  NF_CHECK(v.bytes() <= bytes_, "DeviceBuffer::view: {} needs {} bytes, the buffer has {}", v.str(),
           v.bytes(), bytes_);
  return v;
}

void DeviceBuffer::reset(size_t bytes) {
  free_device(ptr_);
  ptr_ = nullptr;
  bytes_ = 0;
  if (bytes == 0) return;
  const cudaError_t e = cudaMalloc(&ptr_, bytes);
  if (e == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear it: running out of memory is the caller's error, not a fault
    ptr_ = nullptr;
    fail("out of GPU memory allocating {} bytes", bytes);
  }
  NF_CUDA_CHECK(e);
  bytes_ = bytes;
}

}  // namespace nf::cuda
