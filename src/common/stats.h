// Summary statistics for the benchmarks.
#pragma once

#include <vector>

namespace nf {

// numpy.percentile(values, p) with linear interpolation, p in [0, 100]; 0 for no values (as vLLM
// reports).
double percentile(std::vector<double> values, double p);

}  // namespace nf
