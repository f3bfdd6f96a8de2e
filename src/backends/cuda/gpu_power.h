// A GPU's energy counter, board power and SM clock, read through NVML. NVML is loaded at run
// time (dlopen of the driver's libnvidia-ml.so.1), so nothing needs it to build, and where it is
// missing (or the GPU does not report a value) the reads return NaN.
//
// Why: on the H200 every run longer than a fraction of a second sits at the 700 W board limit
// (backends/cuda/optimum.h), so a run's throughput is its power over its energy per token. The
// offline bench reports both (joules per token against the GEMM-only optimum's), and the kernel
// benches use them to tell what an overlap saves in time from what it costs in energy.
#pragma once

namespace nf::cuda {

// The energy the GPU has used since the driver loaded, in joules (NVML's total energy
// consumption counter, millijoule resolution).
double gpu_energy_j(int device);
// The board power now, in watts (NVML's reading, averaged by the driver over its own window).
double gpu_power_w(int device);
// The SM clock now, in MHz.
double gpu_sm_clock_mhz(int device);

}  // namespace nf::cuda
