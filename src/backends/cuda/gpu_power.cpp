#include "backends/cuda/gpu_power.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <array>
#include <cmath>
#include <limits>
#include <mutex>

namespace nf::cuda {
namespace {

// The few NVML entry points used, by their C signatures (nvml.h); handles are opaque pointers
// and return codes 0 on success.
using InitFn = int (*)();
using HandleByBusIdFn = int (*)(const char*, void**);
using EnergyFn = int (*)(void*, unsigned long long*);  // millijoules
using PowerFn = int (*)(void*, unsigned*);             // milliwatts
using ClockFn = int (*)(void*, int, unsigned*);        // NVML_CLOCK_SM = 1, MHz

struct Nvml {
  EnergyFn energy = nullptr;
  PowerFn power = nullptr;
  ClockFn clock = nullptr;
  HandleByBusIdFn handle = nullptr;
  bool ok = false;
  static constexpr int kMaxDevices = 64;
  std::array<void*, kMaxDevices> devices{};  // by CUDA ordinal, found by PCI bus id
};

Nvml& nvml() {
  static Nvml n = [] {
    Nvml r;
    void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) return r;
    auto init = reinterpret_cast<InitFn>(dlsym(lib, "nvmlInit_v2"));
    r.handle = reinterpret_cast<HandleByBusIdFn>(dlsym(lib, "nvmlDeviceGetHandleByPciBusId_v2"));
    r.energy = reinterpret_cast<EnergyFn>(dlsym(lib, "nvmlDeviceGetTotalEnergyConsumption"));
    r.power = reinterpret_cast<PowerFn>(dlsym(lib, "nvmlDeviceGetPowerUsage"));
    r.clock = reinterpret_cast<ClockFn>(dlsym(lib, "nvmlDeviceGetClockInfo"));
    r.ok = init != nullptr && r.handle != nullptr && init() == 0;
    return r;
  }();
  return n;
}

// The NVML handle of CUDA device `device` (NVML numbers GPUs its own way: match the bus id).
void* handle(int device) {
  static std::mutex mu;
  Nvml& n = nvml();
  if (!n.ok || device < 0 || device >= Nvml::kMaxDevices) return nullptr;
  std::lock_guard<std::mutex> lock(mu);
  if (n.devices[device] == nullptr) {
    char bus[32] = {};
    if (cudaDeviceGetPCIBusId(bus, sizeof bus, device) != cudaSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    void* h = nullptr;
    if (n.handle(bus, &h) == 0) n.devices[device] = h;
  }
  return n.devices[device];
}

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

}  // namespace

double gpu_energy_j(int device) {
  void* h = handle(device);
  unsigned long long mj = 0;
  if (h == nullptr || nvml().energy == nullptr || nvml().energy(h, &mj) != 0) return kNaN;
  return static_cast<double>(mj) / 1e3;
}

double gpu_power_w(int device) {
  void* h = handle(device);
  unsigned mw = 0;
  if (h == nullptr || nvml().power == nullptr || nvml().power(h, &mw) != 0) return kNaN;
  return mw / 1e3;
}

double gpu_sm_clock_mhz(int device) {
  void* h = handle(device);
  unsigned mhz = 0;
  if (h == nullptr || nvml().clock == nullptr || nvml().clock(h, /*NVML_CLOCK_SM*/ 1, &mhz) != 0)
    return kNaN;
  return mhz;
}

}  // namespace nf::cuda
