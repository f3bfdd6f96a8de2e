#include "backends/cuda/green_context.h"

#include <cuda.h>
#include <fmt/format.h>

#include "backends/cuda/cuda_check.h"

namespace nf::cuda {

namespace {

// The driver's functions (driver_entry_point).
struct Driver {
  decltype(&cuDeviceGetDevResource) get_resource = nullptr;
  decltype(&cuDevSmResourceSplitByCount) split = nullptr;
  decltype(&cuDevResourceGenerateDesc) describe = nullptr;
  decltype(&cuGreenCtxCreate) create = nullptr;
  decltype(&cuGreenCtxStreamCreate) stream_create = nullptr;
  decltype(&cuGreenCtxDestroy) destroy = nullptr;
  std::string missing;
};

template <typename F>
void look_up(const char* name, F* fn, std::string* missing) {
  void* p = driver_entry_point(name);
  if (p == nullptr) {
    if (!missing->empty()) *missing += ", ";
    *missing += name;
    return;
  }
  *fn = reinterpret_cast<F>(p);
}

const Driver& driver() {
  static const Driver d = [] {
    Driver r;
    look_up("cuDeviceGetDevResource", &r.get_resource, &r.missing);
    look_up("cuDevSmResourceSplitByCount", &r.split, &r.missing);
    look_up("cuDevResourceGenerateDesc", &r.describe, &r.missing);
    look_up("cuGreenCtxCreate", &r.create, &r.missing);
    look_up("cuGreenCtxStreamCreate", &r.stream_create, &r.missing);
    look_up("cuGreenCtxDestroy", &r.destroy, &r.missing);
    return r;
  }();
  return d;
}

std::string cu_error(CUresult r) {
  return fmt::format("CUDA driver error {}", static_cast<int>(r));
}

}  // namespace

std::unique_ptr<GreenPartitions> GreenPartitions::create(int device, const std::vector<int>& sms,
                                                         std::string* why) {
  const Driver& d = driver();
  if (!d.missing.empty()) {
    *why = "the CUDA driver lacks green contexts (" + d.missing + ")";
    return nullptr;
  }
  if (cudaFree(nullptr) != cudaSuccess) {  // the primary context exists
    *why = "no CUDA context";
    return nullptr;
  }
  std::unique_ptr<GreenPartitions> out(new GreenPartitions());
  CUdevResource left{};
  CUresult r = d.get_resource(static_cast<CUdevice>(device), &left, CU_DEV_RESOURCE_TYPE_SM);
  if (r != CUDA_SUCCESS) {
    *why = "cuDeviceGetDevResource: " + cu_error(r);
    return nullptr;
  }
  for (size_t i = 0; i < sms.size(); ++i) {
    const int n = sms[i];
    CUdevResource part{};
    if (n == -1) {
      part = left;
    } else if (n > 0) {
      CUdevResource rest{};
      unsigned groups = 1;
      r = d.split(&part, &groups, &left, &rest, 0, static_cast<unsigned>(n));
      if (r != CUDA_SUCCESS || groups != 1) {
        *why = fmt::format("cannot carve {} SMs from {}: {}", n, left.sm.smCount, cu_error(r));
        return nullptr;
      }
      left = rest;
    } else {
      *why = fmt::format("partition {} has {} SMs", i, n);
      return nullptr;
    }
    CUdevResourceDesc desc{};
    Part p;
    p.sms = static_cast<int>(part.sm.smCount);
    CUgreenCtx ctx = nullptr;
    CUstream stream = nullptr;
    if ((r = d.describe(&desc, &part, 1)) != CUDA_SUCCESS ||
        (r = d.create(&ctx, desc, static_cast<CUdevice>(device), CU_GREEN_CTX_DEFAULT_STREAM)) !=
            CUDA_SUCCESS) {
      *why = fmt::format("green context of {} SMs: {}", p.sms, cu_error(r));
      return nullptr;
    }
    p.ctx = ctx;
    out->parts_.push_back(p);  // destroyed with `out` from here on
    if ((r = d.stream_create(&stream, ctx, CU_STREAM_NON_BLOCKING, 0)) != CUDA_SUCCESS) {
      *why = fmt::format("green context stream: {}", cu_error(r));
      return nullptr;
    }
    out->parts_.back().stream = stream;
  }
  return out;
}

GreenPartitions::~GreenPartitions() {
  const Driver& d = driver();
  for (Part& p : parts_) {
    if (p.stream != nullptr) {
      cudaStreamSynchronize(p.stream);
      cudaStreamDestroy(p.stream);
    }
    if (p.ctx != nullptr && d.destroy != nullptr) d.destroy(static_cast<CUgreenCtx>(p.ctx));
  }
}

}  // namespace nf::cuda
