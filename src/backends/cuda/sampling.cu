// Sampling kernels; sampling.h describes the design.
#include <curand_kernel.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cub/block/block_scan.cuh>
#include <cub/device/device_segmented_radix_sort.cuh>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/common.cuh"
#include "backends/cuda/launch.h"
#include "backends/cuda/sampling.h"

namespace nf::cuda {
namespace {

constexpr int kPrepThreads = 1024;
constexpr int kSortedThreads = 512;
constexpr int kItems = 8;  // sorted entries per thread per chunk
constexpr int kChunk = kSortedThreads * kItems;

// kAdjusted: the row has penalty or bias entries (its processed logits differ from the raw ones).
enum RowMode : int32_t { kGreedy = 1, kFiltered = 2, kSorted = 4, kAdjusted = 8 };

// Per-row state handed from the first kernel to the second.
struct RowInfo {
  float lse;     // log-sum-exp of the raw logits
  float x0;      // the largest logit that is not banned
  int32_t mode;  // RowMode bits
  int32_t pad;
};
static_assert(sizeof(RowInfo) == launch::kSampleRowInfoBytes, "row info size");

// A candidate for an argmax: larger v wins, then the lower id. key: the raw logit of id.
struct Best {
  float v;
  int32_t id;
  float key;
};

__device__ __forceinline__ Best better(const Best& a, const Best& b) {
  return (b.v > a.v || (b.v == a.v && b.id < a.id)) ? b : a;
}

__device__ __forceinline__ Best no_best() {
  return Best{-INFINITY, INT_MAX, -INFINITY};
}

// Block-wide argmax, returned to every thread. scratch: 32 entries; ends synchronized.
__device__ Best block_best(Best b, Best* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) {
    const Best o{__shfl_xor_sync(0xffffffffu, b.v, m), __shfl_xor_sync(0xffffffffu, b.id, m),
                 __shfl_xor_sync(0xffffffffu, b.key, m)};
    b = better(b, o);
  }
  if (lane == 0) scratch[warp] = b;
  __syncthreads();
  b = lane < warps ? scratch[lane] : no_best();
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) {
    const Best o{__shfl_xor_sync(0xffffffffu, b.v, m), __shfl_xor_sync(0xffffffffu, b.id, m),
                 __shfl_xor_sync(0xffffffffu, b.key, m)};
    b = better(b, o);
  }
  __syncthreads();
  return b;
}

__device__ double block_sum_double(double v, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < warps ? scratch[lane] : 0.0;
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  __syncthreads();
  return v;
}

__device__ float block_max(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
  v = kernels::warp_max(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = kernels::warp_max(lane < warps ? scratch[lane] : -INFINITY);
  __syncthreads();
  return v;
}

// Gumbel noise of token `id` for (seed, step): Philox output number `id` of subsequence `step`.
__device__ __forceinline__ float gumbel(uint64_t seed, uint64_t step, int32_t id) {
  curandStatePhilox4_32_10_t st;
  curand_init(seed, step, static_cast<unsigned long long>(id), &st);
  const float u = fminf(curand_uniform(&st), 0.99999994f);  // (0, 1): finite noise
  return -logf(-logf(u));
}

// The row's banned ids as a bitmask in shared memory ([ceil(vocab / 32)] words).
__device__ void build_banned_mask(uint32_t* mask, int vocab, const int32_t* indptr,
                                  const int32_t* ids, int64_t row) {
  const int words = (vocab + 31) / 32;
  for (int i = threadIdx.x; i < words; i += blockDim.x) mask[i] = 0;
  __syncthreads();
  if (indptr != nullptr) {
    for (int32_t j = indptr[row] + threadIdx.x; j < indptr[row + 1]; j += blockDim.x) {
      const int32_t id = ids[j];
      if (id >= 0 && id < vocab) atomicOr(&mask[id >> 5], 1u << (id & 31));
    }
  }
  __syncthreads();
}

__device__ __forceinline__ bool is_banned(const uint32_t* mask, int32_t id) {
  return (mask[id >> 5] >> (id & 31)) & 1u;
}

__device__ __forceinline__ int mask_words(int vocab) {
  return (vocab + 31) / 32;
}

// A row's adjustments: its penalty entries and its logit bias, each ascending by id.
struct RowAdjust {
  const int32_t* pen_ids;
  const int32_t* pen_counts;
  const int32_t* bias_ids;
  const float* bias_values;
  int n_pen, n_bias;
  __device__ int size() const { return n_pen + n_bias; }
  // The id of entry j < size() (penalty entries first, then bias entries).
  __device__ int32_t id(int j) const { return j < n_pen ? pen_ids[j] : bias_ids[j - n_pen]; }
};

__device__ RowAdjust row_adjust(const launch::SampleAdjustLaunch& a, int64_t row) {
  RowAdjust r{nullptr, nullptr, nullptr, nullptr, 0, 0};
  if (a.penalty_indptr != nullptr) {
    const int32_t b = a.penalty_indptr[row];
    r.pen_ids = a.penalty_ids + b;
    r.pen_counts = a.penalty_counts + b;
    r.n_pen = a.penalty_indptr[row + 1] - b;
  }
  if (a.bias_indptr != nullptr) {
    const int32_t b = a.bias_indptr[row];
    r.bias_ids = a.bias_ids + b;
    r.bias_values = a.bias_values + b;
    r.n_bias = a.bias_indptr[row + 1] - b;
  }
  return r;
}

// The index of id in ids[0, n) (ascending), or -1.
__device__ int find_id(const int32_t* ids, int n, int32_t id) {
  int lo = 0, hi = n;
  while (lo < hi) {
    const int mid = (lo + hi) >> 1;
    if (ids[mid] < id)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo < n && ids[lo] == id ? lo : -1;
}

// The processed logit of an adjusted id, with the host sampler's operations in its order and
// IEEE round-to-nearest, never contracted into an FMA (as nf::adjusted_logit on the host).
__device__ float adjusted_logit(float raw, bool has_bias, float bias, bool seen, int32_t count,
                                const SampleRowParams& p) {
  float w = raw;
  if (has_bias) w = __fadd_rn(w, bias);
  if (seen && p.repetition_penalty != 1.0f)
    w = w > 0.0f ? __fdiv_rn(w, p.repetition_penalty) : __fmul_rn(w, p.repetition_penalty);
  if (count > 0 && (p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f))
    w = __fsub_rn(w, __fadd_rn(__fmul_rn(p.frequency_penalty, static_cast<float>(count)),
                               p.presence_penalty));
  return w;
}

// Entry j < r.size() of the row's adjustments: its id and processed value. False when the
// entry is not the id's own (a bias id that has a penalty entry too: that entry applies both)
// or is out of range; so every adjusted id is produced exactly once.
__device__ bool adjusted_entry(const RowAdjust& r, int j, const float* x, int vocab,
                               const SampleRowParams& p, int32_t& id, float& w) {
  if (j < r.n_pen) {
    id = r.pen_ids[j];
    if (id < 0 || id >= vocab) return false;
    const int b = find_id(r.bias_ids, r.n_bias, id);
    w = adjusted_logit(x[id], b >= 0, b >= 0 ? r.bias_values[b] : 0.0f, true, r.pen_counts[j], p);
    return true;
  }
  const int k = j - r.n_pen;
  id = r.bias_ids[k];
  if (id < 0 || id >= vocab || find_id(r.pen_ids, r.n_pen, id) >= 0) return false;
  w = adjusted_logit(x[id], true, r.bias_values[k], false, 0, p);
  return true;
}

// The row's adjusted ids as a bitmask in shared memory ([ceil(vocab / 32)] words).
__device__ void build_adjusted_mask(uint32_t* mask, int vocab, const RowAdjust& r) {
  const int words = mask_words(vocab);
  for (int i = threadIdx.x; i < words; i += blockDim.x) mask[i] = 0;
  __syncthreads();
  for (int j = threadIdx.x; j < r.size(); j += blockDim.x) {
    const int32_t id = r.id(j);
    if (id >= 0 && id < vocab) atomicOr(&mask[id >> 5], 1u << (id & 31));
  }
  __syncthreads();
}

__device__ __forceinline__ int32_t row_mode(const SampleRowParams& p, int vocab) {
  const bool greedy = p.temperature <= 0.0f || p.top_k == 1;
  const bool filtered =
      !greedy && ((p.top_k > 0 && p.top_k < vocab) || p.top_p < 1.0f || p.min_p > 0.0f);
  return (greedy ? kGreedy : 0) | (filtered ? kFiltered : 0) |
         (filtered || p.num_logprobs > 0 ? kSorted : 0);
}

// Calls f(i, x[i]) for the ids i < vocab of this thread: 16-byte loads (four ids each, several
// in flight) where the row is 16-byte aligned, which a scalar loop over a 128k vocabulary is
// far from (it left the kernel at ~1 TB/s). f must not depend on the order of the ids.
template <typename F>
__device__ __forceinline__ void for_each_logit(const float* x, int vocab, F&& f) {
  int done = 0;
  if ((reinterpret_cast<uintptr_t>(x) & 15) == 0) {  // uniform over the block
    const int n4 = vocab / 4;
    const float4* x4 = reinterpret_cast<const float4*>(x);
#pragma unroll 4
    for (int j = threadIdx.x; j < n4; j += blockDim.x) {
      const float4 v = x4[j];
      f(4 * j, v.x);
      f(4 * j + 1, v.y);
      f(4 * j + 2, v.z);
      f(4 * j + 3, v.w);
    }
    done = 4 * n4;
  }
  for (int i = done + threadIdx.x; i < vocab; i += blockDim.x) f(i, x[i]);
}

// Kernel 1: one CTA per row. Statistics, the greedy and temperature-only draws, the sort
// segments, and -1/-inf top-logprob slots for rows that are not sorted.
__global__ void __launch_bounds__(kPrepThreads)
    sample_prepare_kernel(const launch::SampleLaunch s, const launch::SampleAdjustLaunch a) {
  extern __shared__ uint32_t masks[];  // banned ids, then adjusted ids
  __shared__ float fscratch[32];
  __shared__ double dscratch[32];
  __shared__ Best bscratch[32];
  const int64_t row = blockIdx.x;
  const int vocab = s.vocab;
  const float* x = s.logits + row * vocab;
  const SampleRowParams p = static_cast<const SampleRowParams*>(s.params)[row];
  const RowAdjust adj = row_adjust(a, row);
  const bool has_adj = adj.size() > 0;  // uniform over the block
  const int32_t mode = row_mode(p, vocab) | (has_adj ? kAdjusted : 0);
  uint32_t* banned = masks;
  uint32_t* adjusted = masks + mask_words(vocab);
  build_banned_mask(banned, vocab, s.banned_indptr, s.banned_ids, row);
  if (has_adj) build_adjusted_mask(adjusted, vocab, adj);
  // Ids taken at their raw logit: not banned, not adjusted (those come from adjusted_entry).
  auto raw_candidate = [&](int32_t i) {
    return !is_banned(banned, i) && !(has_adj && is_banned(adjusted, i));
  };

  float mx = -INFINITY;
  Best best = no_best();
  for_each_logit(x, vocab, [&](int32_t i, float v) {
    mx = fmaxf(mx, v);
    if (raw_candidate(i)) best = better(best, Best{v, i, v});
  });
  for (int j = threadIdx.x; j < adj.size(); j += blockDim.x) {
    int32_t id;
    float w;
    if (adjusted_entry(adj, j, x, vocab, p, id, w) && !is_banned(banned, id))
      best = better(best, Best{w, id, x[id]});
  }
  mx = block_max(mx, fscratch);
  best = block_best(best, bscratch);

  double sum = 0.0;
  Best draw = no_best();
  const bool plain = !(mode & (kGreedy | kFiltered));
  const float inv_t = plain ? 1.0f / p.temperature : 0.0f;
  for_each_logit(x, vocab, [&](int32_t i, float v) {
    sum += static_cast<double>(expf(v - mx));
    if (plain && raw_candidate(i))
      draw = better(draw, Best{v * inv_t + gumbel(p.seed, p.step, i), i, v});
  });
  if (plain) {
    for (int j = threadIdx.x; j < adj.size(); j += blockDim.x) {
      int32_t id;
      float w;
      if (adjusted_entry(adj, j, x, vocab, p, id, w) && !is_banned(banned, id))
        draw = better(draw, Best{w * inv_t + gumbel(p.seed, p.step, id), id, x[id]});
    }
  }
  sum = block_sum_double(sum, dscratch);
  if (plain) draw = block_best(draw, bscratch);

  const float lse = mx + static_cast<float>(log(sum));
  if (threadIdx.x == 0) {
    const int32_t greedy_id = best.id == INT_MAX ? 0 : best.id;
    RowInfo info{lse, best.id == INT_MAX ? -INFINITY : best.v, mode, 0};
    static_cast<RowInfo*>(s.row_info)[row] = info;
    if (!(mode & kFiltered)) {
      const int32_t token = plain && draw.id != INT_MAX ? draw.id : greedy_id;
      s.tokens[row] = token;
      s.logprobs[row] = x[token] - lse;
    }
    const int32_t begin = static_cast<int32_t>((row % s.sort_rows) * vocab);
    s.seg_begin[row] = begin;
    s.seg_end[row] = (mode & kSorted) ? begin + vocab : begin;
  }
  if (!(mode & kSorted)) {
    for (int j = threadIdx.x; j < s.top_cols; j += blockDim.x) {
      s.top_ids[row * s.top_cols + j] = -1;
      s.top_logprobs[row * s.top_cols + j] = -INFINITY;
    }
  }
}

// Per sort pass, when the batch has adjustments: the pass's sorted rows into sort_in, with the
// processed values at the adjusted ids of rows that filter (a row sorted only for its logprobs
// keeps its raw logits, whose sorted prefix is its top-K).
__global__ void __launch_bounds__(kPrepThreads)
    sample_adjust_kernel(const launch::SampleLaunch s, const launch::SampleAdjustLaunch a,
                         int64_t row0) {
  const int64_t local = blockIdx.x, row = row0 + local;
  const int32_t mode = static_cast<const RowInfo*>(s.row_info)[row].mode;
  if (!(mode & kSorted)) return;
  const int vocab = s.vocab;
  const float* x = s.logits + row * vocab;
  float* y = a.sort_in + local * vocab;
  for (int i = threadIdx.x; i < vocab; i += blockDim.x) y[i] = x[i];
  if (!((mode & kAdjusted) && (mode & kFiltered))) return;
  __syncthreads();  // the copy before the processed values over it
  const SampleRowParams p = static_cast<const SampleRowParams*>(s.params)[row];
  const RowAdjust adj = row_adjust(a, row);
  for (int j = threadIdx.x; j < adj.size(); j += blockDim.x) {
    int32_t id;
    float w;
    if (adjusted_entry(adj, j, x, vocab, p, id, w)) y[id] = w;
  }
}

// (v, id) comes after prev in the order value desc, id asc.
__device__ __forceinline__ bool ranks_after(const Best& prev, float v, int32_t id) {
  return v < prev.v || (v == prev.v && id > prev.id);
}

using ScanInt = cub::BlockScan<int, kSortedThreads>;
using ScanDouble = cub::BlockScan<double, kSortedThreads>;

// One chunk of a sorted row: this thread's kItems consecutive entries, whether each is a
// candidate (in the row, not banned), and its rank among candidates. Ends synchronized.
struct Chunk {
  float key[kItems];
  int32_t id[kItems];
  bool cand[kItems];
  int rank[kItems];
  int total;  // candidates in the whole chunk
};

__device__ void load_chunk(Chunk& c, const float* keys, const int32_t* ids, int vocab, int64_t c0,
                           const uint32_t* banned, int rank_base, ScanInt::TempStorage& tmp) {
  int count = 0;
#pragma unroll
  for (int e = 0; e < kItems; ++e) {
    const int64_t j = c0 + threadIdx.x * kItems + e;
    const bool in = j < vocab;
    c.key[e] = in ? keys[j] : -INFINITY;
    c.id[e] = in ? ids[j] : 0;
    c.cand[e] = in && !is_banned(banned, c.id[e]);
    count += c.cand[e];
  }
  int excl = 0;
  ScanInt(tmp).ExclusiveSum(count, excl, c.total);
  __syncthreads();
#pragma unroll
  for (int e = 0; e < kItems; ++e) {
    c.rank[e] = rank_base + excl;
    excl += c.cand[e];
  }
}

// Kernel 2: one CTA per sorted row of the pass starting at row0.
__global__ void __launch_bounds__(kSortedThreads)
    sample_sorted_kernel(const launch::SampleLaunch s, const launch::SampleAdjustLaunch a,
                         int64_t row0) {
  extern __shared__ uint32_t masks[];  // banned ids, then adjusted ids
  __shared__ union {
    ScanInt::TempStorage i;
    ScanDouble::TempStorage d;
  } scan;
  __shared__ double dscratch[32];
  __shared__ Best bscratch[32];
  __shared__ int n_top_p, n_min_p;
  const int64_t local = blockIdx.x, row = row0 + local;
  const RowInfo info = static_cast<const RowInfo*>(s.row_info)[row];
  if (!(info.mode & kSorted)) return;
  const int vocab = s.vocab;
  const float* keys = s.sorted_keys + local * vocab;
  const int32_t* ids = s.sorted_ids + local * vocab;
  const SampleRowParams p = static_cast<const SampleRowParams*>(s.params)[row];
  uint32_t* banned = masks;
  uint32_t* adjusted = masks + mask_words(vocab);
  // Its keys are the processed logits (sample_adjust_kernel), not the raw ones.
  const bool processed_keys = (info.mode & kAdjusted) && (info.mode & kFiltered);

  const int n_lp = min(min(p.num_logprobs, s.top_cols), vocab);
  if (processed_keys && n_lp > 0) {
    // The raw top-K: an unadjusted id's key is its raw logit, and at most #adjusted of the
    // first n_lp + #adjusted sorted entries are adjusted, so the best n_lp unadjusted ids are
    // among them; the adjusted ids join at their raw logits. n_lp rounds of a block argmax,
    // each over what ranks after the previous round's pick.
    const RowAdjust adj = row_adjust(a, row);
    build_adjusted_mask(adjusted, vocab, adj);
    const float* x = s.logits + row * vocab;
    const int lim =
        static_cast<int>(min(static_cast<int64_t>(vocab), static_cast<int64_t>(n_lp) + adj.size()));
    Best prev{INFINITY, -1, INFINITY};
    for (int k = 0; k < n_lp; ++k) {
      Best b = no_best();
      for (int j = threadIdx.x; j < lim; j += blockDim.x) {
        const int32_t id = ids[j];
        if (!is_banned(adjusted, id) && ranks_after(prev, keys[j], id))
          b = better(b, Best{keys[j], id, keys[j]});
      }
      for (int j = threadIdx.x; j < adj.size(); j += blockDim.x) {
        const int32_t id = adj.id(j);
        if (id >= 0 && id < vocab && ranks_after(prev, x[id], id))
          b = better(b, Best{x[id], id, x[id]});
      }
      b = block_best(b, bscratch);
      if (threadIdx.x == 0) {
        const bool found = b.id != INT_MAX;
        s.top_ids[row * s.top_cols + k] = found ? b.id : -1;
        s.top_logprobs[row * s.top_cols + k] = found ? b.v - info.lse : -INFINITY;
      }
      prev = b;
    }
    for (int j = n_lp + threadIdx.x; j < s.top_cols; j += blockDim.x) {
      s.top_ids[row * s.top_cols + j] = -1;
      s.top_logprobs[row * s.top_cols + j] = -INFINITY;
    }
  } else {
    for (int j = threadIdx.x; j < s.top_cols; j += blockDim.x) {
      s.top_ids[row * s.top_cols + j] = j < n_lp ? ids[j] : -1;
      s.top_logprobs[row * s.top_cols + j] = j < n_lp ? keys[j] - info.lse : -INFINITY;
    }
  }
  if (!(info.mode & kFiltered)) return;
  build_banned_mask(banned, vocab, s.banned_indptr, s.banned_ids, row);

  const float inv_t = 1.0f / p.temperature;
  const float x0 = info.x0 * inv_t;
  const int k_eff = p.top_k > 0 && p.top_k < vocab ? p.top_k : vocab;
  Chunk c;

  // Mass Z of the top-k candidates, at temperature T, relative to the best one.
  double z = 0.0;
  for (int rank_base = 0, c0 = 0; c0 < vocab && rank_base < k_eff; c0 += kChunk) {
    load_chunk(c, keys, ids, vocab, c0, banned, rank_base, scan.i);
#pragma unroll
    for (int e = 0; e < kItems; ++e)
      if (c.cand[e] && c.rank[e] < k_eff) z += static_cast<double>(expf(c.key[e] * inv_t - x0));
    rank_base += c.total;
  }
  z = block_sum_double(z, dscratch);

  // top-p: the first rank whose inclusive mass reaches top_p * Z; min-p: the first rank >= 1
  // whose probability is below min_p times the best one's. Both bound a prefix.
  const bool use_top_p = p.top_p<1.0f, use_min_p = p.min_p> 0.0f;
  const double target = static_cast<double>(p.top_p) * z;
  if (threadIdx.x == 0) {
    n_top_p = k_eff;
    n_min_p = k_eff;
  }
  __syncthreads();
  if (use_top_p || use_min_p) {
    double cum_base = 0.0;
    for (int rank_base = 0, c0 = 0; c0 < vocab && rank_base < k_eff; c0 += kChunk) {
      load_chunk(c, keys, ids, vocab, c0, banned, rank_base, scan.i);
      float prob[kItems];
      double mass = 0.0;
#pragma unroll
      for (int e = 0; e < kItems; ++e) {
        prob[e] = c.cand[e] && c.rank[e] < k_eff ? expf(c.key[e] * inv_t - x0) : 0.0f;
        mass += prob[e];
      }
      double cum = 0.0, chunk_mass = 0.0;
      ScanDouble(scan.d).ExclusiveSum(mass, cum, chunk_mass);
      cum += cum_base;
#pragma unroll
      for (int e = 0; e < kItems; ++e) {
        if (!c.cand[e] || c.rank[e] >= k_eff) continue;
        const double next = cum + prob[e];
        // Probabilities fall along the sorted order, so every later entry passes the test
        // too and the minimum is the first one.
        if (use_top_p && next >= target) atomicMin(&n_top_p, c.rank[e] + 1);
        if (use_min_p && c.rank[e] >= 1 && prob[e] < p.min_p) atomicMin(&n_min_p, c.rank[e]);
        cum = next;
      }
      __syncthreads();
      rank_base += c.total;
      cum_base += chunk_mass;
      const bool top_p_done = !use_top_p || n_top_p < k_eff;
      const bool min_p_done = !use_min_p || n_min_p < k_eff;
      if (top_p_done && min_p_done) break;
    }
  }
  const int n = max(1, min(n_top_p, n_min_p));

  // Gumbel-max draw over the first n candidates.
  Best draw = no_best();
  for (int rank_base = 0, c0 = 0; c0 < vocab && rank_base < n; c0 += kChunk) {
    load_chunk(c, keys, ids, vocab, c0, banned, rank_base, scan.i);
#pragma unroll
    for (int e = 0; e < kItems; ++e)
      if (c.cand[e] && c.rank[e] < n)
        draw = better(draw,
                      Best{c.key[e] * inv_t + gumbel(p.seed, p.step, c.id[e]), c.id[e], c.key[e]});
    rank_base += c.total;
  }
  draw = block_best(draw, bscratch);
  if (threadIdx.x == 0) {
    const int32_t token = draw.id != INT_MAX ? draw.id : 0;
    s.tokens[row] = token;
    s.logprobs[row] = s.logits[row * vocab + token] - info.lse;  // the raw logit
  }
}

size_t banned_mask_bytes(int vocab) {
  return static_cast<size_t>((vocab + 31) / 32) * 4;
}

__global__ void iota_kernel(int32_t* out, int64_t n, int vocab) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = static_cast<int32_t>(i % vocab);
}

template <typename Kernel>
void allow_dynamic_smem(Kernel kernel, size_t bytes) {
  if (bytes > 48 * 1024)
    NF_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       static_cast<int>(bytes)));
}

}  // namespace

size_t launch::sample_cub_temp_bytes(int sort_rows, int vocab) {
  size_t bytes = 0;
  const int64_t items = static_cast<int64_t>(sort_rows) * vocab;
  NF_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
      nullptr, bytes, static_cast<const float*>(nullptr), static_cast<float*>(nullptr),
      static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr), items, sort_rows,
      static_cast<const int32_t*>(nullptr), static_cast<const int32_t*>(nullptr)));
  return bytes;
}

void launch::sample_fill_iota(int32_t* iota, int sort_rows, int vocab, cudaStream_t stream) {
  const int64_t n = static_cast<int64_t>(sort_rows) * vocab;
  const int blocks = static_cast<int>(std::min<int64_t>(4096, kernels::ceil_div(n, 256)));
  iota_kernel<<<blocks, 256, 0, stream>>>(iota, n, vocab);
  NF_CUDA_CHECK_LAUNCH();
}

namespace {
__global__ void mask_columns_kernel(float* logits, int64_t rows, int vocab, int begin) {
  const int width = vocab - begin;
  const int64_t n = rows * width;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    logits[(i / width) * vocab + begin + i % width] = -INFINITY;
}
}  // namespace

void launch::mask_logit_columns(float* logits, int64_t rows, int vocab, int begin,
                                cudaStream_t stream) {
  const int64_t n = rows * (vocab - begin);
  if (n <= 0) return;
  const int blocks = static_cast<int>(std::min<int64_t>(1024, kernels::ceil_div(n, 256)));
  mask_columns_kernel<<<blocks, 256, 0, stream>>>(logits, rows, vocab, begin);
  NF_CUDA_CHECK_LAUNCH();
}

void launch::sample(const SampleLaunch& s, cudaStream_t stream) {
  sample_adjusted(s, SampleAdjustLaunch{}, stream);
}

void launch::sample_adjusted(const SampleLaunch& s, const SampleAdjustLaunch& a,
                             cudaStream_t stream) {
  // The banned ids' mask, and the adjusted ids' one after it when the batch has adjustments
  // (the kernels read it only for rows with adjustments).
  const bool adjusted = a.penalty_indptr != nullptr || a.bias_indptr != nullptr;
  const size_t mask_bytes = (adjusted ? 2 : 1) * banned_mask_bytes(s.vocab);
  allow_dynamic_smem(sample_prepare_kernel, mask_bytes);
  allow_dynamic_smem(sample_sorted_kernel, mask_bytes);
  sample_prepare_kernel<<<static_cast<unsigned>(s.rows), kPrepThreads, mask_bytes, stream>>>(s, a);
  NF_CUDA_CHECK_LAUNCH();
  if (!s.sort) return;
  for (int64_t r0 = 0; r0 < s.rows; r0 += s.sort_rows) {
    const int n = static_cast<int>(std::min<int64_t>(s.sort_rows, s.rows - r0));
    const float* keys_in = s.logits + r0 * s.vocab;
    if (adjusted) {
      sample_adjust_kernel<<<static_cast<unsigned>(n), kPrepThreads, 0, stream>>>(s, a, r0);
      NF_CUDA_CHECK_LAUNCH();
      keys_in = a.sort_in;
    }
    size_t temp_bytes = s.cub_temp_bytes;
    NF_CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
        s.cub_temp, temp_bytes, keys_in, s.sorted_keys, s.iota, s.sorted_ids,
        static_cast<int64_t>(n) * s.vocab, n, s.seg_begin + r0, s.seg_end + r0, 0, 32, stream));
    sample_sorted_kernel<<<static_cast<unsigned>(n), kSortedThreads, mask_bytes, stream>>>(s, a,
                                                                                           r0);
    NF_CUDA_CHECK_LAUNCH();
  }
}

}  // namespace nf::cuda
