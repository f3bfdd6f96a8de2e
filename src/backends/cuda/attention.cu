// A plain paged-attention kernel: the reference twin of the library kernels that come later.
//
// Design. One CTA (4 warps) per (token, kv head, chunk of up to kG query heads of that kv head,
// context split). K and V rows are read once per CTA for all kG query heads of the group. The
// context [start, end) of the split is walked in tiles of kTile keys with an online softmax in
// fp32 (scores in the log2 domain: q is pre-scaled by scale * log2(e)):
//   1. scores: kD/8 lanes share one key (16-byte K loads), dot it with each head's q slice held
//      in registers, and reduce across those lanes with xor shuffles; scores go to shared memory;
//   2. softmax: one warp per head takes the tile's max, rescales the running (m, l), and turns
//      the scores into p = exp2(s - m);
//   3. PV: each thread owns 4 dims of the output for every head and a residue class of the
//      tile's keys, and accumulates p * v in registers. Its V rows (8-byte loads) are issued
//      into registers before step 1, so the tile's K and V reads are in flight together.
// At the end the per-thread partial sums are reduced through shared memory. With one split the
// CTA writes o / l in bf16; with several it writes unnormalized o and (m, l) to the workspace
// and attention_combine_kernel merges the splits.
#include <cmath>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/common.cuh"
#include "backends/cuda/launch.h"

namespace nf::cuda {
namespace {

using kernels::bf16;

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = launch::kAttentionTile;
constexpr float kLog2e = 1.4426950408889634f;

struct AttentionParams {
  launch::AttentionLaunch a;
  int group = 1;        // query heads per kv head
  int head_chunks = 1;  // CTAs per kv head: ceil(group / kG)
  float scale_log2 = 0;
  float* part_acc = nullptr;  // [T, H, S, D] fp32
  float* part_ml = nullptr;   // [T, H, S, 2] fp32
};

template <int kD, int kG>
struct AttentionSmem {
  static constexpr int kThreadsPerRow = kD / 4;
  static constexpr int kRowGroups = kThreads / kThreadsPerRow;
  float q[kG][kD];     // scaled query heads of this CTA
  float s[kG][kTile];  // the tile's scores, then its probabilities
  float m[kG], l[kG], alpha[kG];
  int64_t key_off[kTile];       // element offset of each tile key's K row in the cache; -1 past end
  float o[kRowGroups][kG][kD];  // per-row-group partial outputs
};

// Index of the request owning token t: the last b with seq_indptr[b] <= t.
__device__ __forceinline__ int find_seq(const int32_t* seq_indptr, int num_seqs, int64_t t) {
  int lo = 0, hi = num_seqs - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (seq_indptr[mid] <= t) {
      lo = mid;
    } else {
      hi = mid - 1;
    }
  }
  return lo;
}

template <int kD, int kG>
__global__ void __launch_bounds__(kThreads) attention_kernel(const AttentionParams p) {
  constexpr int kLanesPerKey = kD / 8;
  constexpr int kKeysPerWarp = 32 / kLanesPerKey;
  constexpr int kKeysPerPass = kKeysPerWarp * kWarps;
  using Smem = AttentionSmem<kD, kG>;
  constexpr int kThreadsPerRow = Smem::kThreadsPerRow;
  constexpr int kRowGroups = Smem::kRowGroups;
  constexpr int kKeysPerThread = kTile / kRowGroups;  // V rows per thread per tile
  static_assert(kTile == 64 && kTile % kKeysPerPass == 0, "tile layout");
  __shared__ Smem sm;

  const launch::AttentionLaunch& a = p.a;
  const int64_t t = blockIdx.x;
  const int kvh = blockIdx.y / p.head_chunks;
  const int chunk = blockIdx.y % p.head_chunks;
  const int h0 = kvh * p.group + chunk * kG;
  const int nh = min(kG, p.group - chunk * kG);
  const int split = blockIdx.z, splits = a.num_splits;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t out_stride = static_cast<int64_t>(a.num_heads) * kD;

  const int b = find_seq(a.seq_indptr, a.num_seqs, t);
  const int64_t n_ctx = static_cast<int64_t>(a.positions[t]) + 1;
  const int32_t* table = a.block_ids + a.block_indptr[b];
  const int64_t capacity =
      static_cast<int64_t>(a.block_indptr[b + 1] - a.block_indptr[b]) * a.block_size;
  const bool bad = n_ctx < 1 || n_ctx > capacity;  // a broken batch: the output becomes NaN
  const int64_t per_split =
      bad ? 0 : kernels::ceil_div(kernels::ceil_div(n_ctx, splits), kTile) * kTile;
  const int64_t start = split * per_split;
  const int64_t end = bad ? 0 : min(n_ctx, start + per_split);

  if (start >= end) {
    for (int i = tid; i < nh * kD; i += kThreads) {
      const int h = i / kD, d = i % kD;
      if (splits == 1) {
        a.out[t * out_stride + (h0 + h) * kD + d] = __float2bfloat16(NAN);
        continue;
      }
      const int64_t slot = (t * a.num_heads + h0 + h) * splits + split;
      if (bad) p.part_acc[slot * kD + d] = NAN;
      if (d == 0) {
        p.part_ml[slot * 2] = bad ? 0.0f : -INFINITY;
        p.part_ml[slot * 2 + 1] = bad ? 1.0f : 0.0f;  // l = 0: the combine skips this split
      }
    }
    return;
  }

  for (int i = tid; i < kG * kD; i += kThreads) {
    const int h = i / kD, d = i % kD;
    sm.q[h][d] =
        h < nh ? __bfloat162float(a.q[t * a.q_stride + (h0 + h) * kD + d]) * p.scale_log2 : 0.0f;
  }
  if (tid < kG) {
    sm.m[tid] = -INFINITY;
    sm.l[tid] = 0.0f;
  }
  __syncthreads();

  const int sub = lane % kLanesPerKey, key_slot = lane / kLanesPerKey;
  float qr[kG][8];
#pragma unroll
  for (int h = 0; h < kG; ++h)
#pragma unroll
    for (int e = 0; e < 8; ++e) qr[h][e] = sm.q[h][sub * 8 + e];

  const int dq = tid % kThreadsPerRow, rg = tid / kThreadsPerRow;
  float acc[kG][4];
#pragma unroll
  for (int h = 0; h < kG; ++h)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[h][e] = 0.0f;

  const int64_t head_stride = a.block_size * kD;      // kv heads within a block half
  const int64_t v_offset = a.kv_heads * head_stride;  // K row -> V row
  for (int64_t ts = start; ts < end; ts += kTile) {
    if (tid < kTile) {
      const int64_t pos = ts + tid;
      int64_t off = -1;
      if (pos < end) {
        const int64_t blk = table[pos / a.block_size];
        off = (blk * 2 * a.kv_heads + kvh) * head_stride + (pos % a.block_size) * kD;
      }
      sm.key_off[tid] = off;
    }
    __syncthreads();

    // V prefetch for step 3; keys past `end` read nothing (their p is 0).
    uint2 v_raw[kKeysPerThread];
#pragma unroll
    for (int i = 0; i < kKeysPerThread; ++i) {
      const int64_t off = sm.key_off[rg + i * kRowGroups];
      v_raw[i] = off >= 0 ? *reinterpret_cast<const uint2*>(a.kv + off + v_offset + dq * 4)
                          : make_uint2(0, 0);
    }

    // 1. Scores.
#pragma unroll
    for (int j0 = 0; j0 < kTile; j0 += kKeysPerPass) {
      const int j = j0 + warp * kKeysPerWarp + key_slot;
      const int64_t off = sm.key_off[j];
      float k[8];
      if (off >= 0) {
        kernels::load_bf16x8(a.kv + off + sub * 8, k);
      } else {
#pragma unroll
        for (int e = 0; e < 8; ++e) k[e] = 0.0f;
      }
#pragma unroll
      for (int h = 0; h < kG; ++h) {
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < 8; ++e) dot += qr[h][e] * k[e];
#pragma unroll
        for (int m = kLanesPerKey / 2; m > 0; m >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, m);
        if (sub == 0) sm.s[h][j] = off >= 0 ? dot : -INFINITY;
      }
    }
    __syncthreads();

    // 2. Online softmax, one warp per head.
    for (int h = warp; h < kG; h += kWarps) {
      const float s0 = sm.s[h][lane], s1 = sm.s[h][lane + 32];
      const float m_old = sm.m[h];
      const float m_new = fmaxf(m_old, kernels::warp_max(fmaxf(s0, s1)));
      const float p0 = exp2f(s0 - m_new), p1 = exp2f(s1 - m_new);
      sm.s[h][lane] = p0;
      sm.s[h][lane + 32] = p1;
      const float sum = kernels::warp_sum(p0 + p1);
      __syncwarp();
      if (lane == 0) {
        const float alpha = exp2f(m_old - m_new);
        sm.alpha[h] = alpha;
        sm.l[h] = sm.l[h] * alpha + sum;
        sm.m[h] = m_new;
      }
    }
    __syncthreads();

    // 3. PV.
#pragma unroll
    for (int h = 0; h < kG; ++h) {
      const float alpha = sm.alpha[h];
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[h][e] *= alpha;
    }
#pragma unroll
    for (int i = 0; i < kKeysPerThread; ++i) {
      const int j = rg + i * kRowGroups;
      const __nv_bfloat162* v2 = reinterpret_cast<const __nv_bfloat162*>(&v_raw[i]);
      const float2 lo = __bfloat1622float2(v2[0]), hi = __bfloat1622float2(v2[1]);
      const float v[4] = {lo.x, lo.y, hi.x, hi.y};
#pragma unroll
      for (int h = 0; h < kG; ++h) {
        const float pj = sm.s[h][j];
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[h][e] += pj * v[e];
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int h = 0; h < kG; ++h)
#pragma unroll
    for (int e = 0; e < 4; ++e) sm.o[rg][h][dq * 4 + e] = acc[h][e];
  __syncthreads();
  for (int i = tid; i < nh * kD; i += kThreads) {
    const int h = i / kD, d = i % kD;
    float o = 0.0f;
#pragma unroll
    for (int r = 0; r < kRowGroups; ++r) o += sm.o[r][h][d];
    if (splits == 1) {
      a.out[t * out_stride + (h0 + h) * kD + d] = __float2bfloat16(o / sm.l[h]);
    } else {
      const int64_t slot = (t * a.num_heads + h0 + h) * splits + split;
      p.part_acc[slot * kD + d] = o;
      if (d == 0) {
        p.part_ml[slot * 2] = sm.m[h];
        p.part_ml[slot * 2 + 1] = sm.l[h];
      }
    }
  }
}

// Merges the splits of one (token, head): out = sum_s o_s 2^(m_s - M) / sum_s l_s 2^(m_s - M).
// One CTA of head_dim threads per (token, head); splits with l = 0 saw no keys and are skipped.
__global__ void attention_combine_kernel(const float* __restrict__ part_acc,
                                         const float* __restrict__ part_ml, bf16* __restrict__ out,
                                         int heads, int head_dim, int splits) {
  const int64_t t = blockIdx.x;
  const int h = blockIdx.y, d = threadIdx.x;
  const int64_t base = (t * heads + h) * splits;
  float mx = -INFINITY;
  for (int s = 0; s < splits; ++s)
    if (part_ml[(base + s) * 2 + 1] != 0.0f) mx = fmaxf(mx, part_ml[(base + s) * 2]);
  float num = 0.0f, den = 0.0f;
  for (int s = 0; s < splits; ++s) {
    const float l = part_ml[(base + s) * 2 + 1];
    if (l == 0.0f) continue;
    const float w = exp2f(part_ml[(base + s) * 2] - mx);
    num += part_acc[(base + s) * head_dim + d] * w;
    den += l * w;
  }
  out[(t * heads + h) * head_dim + d] = __float2bfloat16(num / den);
}

template <int kD, int kG>
void launch_attention(const AttentionParams& p, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.a.tokens),
                  static_cast<unsigned>(p.a.kv_heads * p.head_chunks),
                  static_cast<unsigned>(p.a.num_splits));
  attention_kernel<kD, kG><<<grid, kThreads, 0, stream>>>(p);
  NF_CUDA_CHECK_LAUNCH();
}

template <int kD>
void launch_attention_dim(const AttentionParams& p, int kg, cudaStream_t stream) {
  switch (kg) {
    case 1:
      launch_attention<kD, 1>(p, stream);
      break;
    case 2:
      launch_attention<kD, 2>(p, stream);
      break;
    case 4:
      launch_attention<kD, 4>(p, stream);
      break;
    default:
      launch_attention<kD, 8>(p, stream);
      break;
  }
}

}  // namespace

void launch::paged_attention(const AttentionLaunch& a, cudaStream_t stream) {
  AttentionParams p;
  p.a = a;
  p.group = a.num_heads / a.kv_heads;
  const int kg = p.group <= 1 ? 1 : p.group <= 2 ? 2 : p.group <= 4 ? 4 : kAttentionMaxGroup;
  p.head_chunks = static_cast<int>(kernels::ceil_div(p.group, kg));
  p.scale_log2 = a.scale * kLog2e;
  if (a.num_splits > 1) {
    p.part_acc = a.workspace;
    p.part_ml = a.workspace + a.tokens * a.num_heads * a.num_splits * a.head_dim;
  }
  if (a.head_dim == 64) {
    launch_attention_dim<64>(p, kg, stream);
  } else {
    launch_attention_dim<128>(p, kg, stream);
  }
  if (a.num_splits > 1) attention_combine(a, stream);
}

void launch::attention_combine(const AttentionLaunch& a, cudaStream_t stream) {
  float* part_acc = a.workspace;
  float* part_ml = a.workspace + a.tokens * a.num_heads * a.num_splits * a.head_dim;
  const dim3 grid(static_cast<unsigned>(a.tokens), static_cast<unsigned>(a.num_heads));
  attention_combine_kernel<<<grid, a.head_dim, 0, stream>>>(part_acc, part_ml, a.out,
                                                            a.num_heads, a.head_dim, a.num_splits);
  NF_CUDA_CHECK_LAUNCH();
}

}  // namespace nf::cuda
