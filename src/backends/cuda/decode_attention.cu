// Decode attention on tensor cores: one query token per request over its paged KV, for GQA.
//
// Why (docs/nano-batch.md): to overlap decode attention with GEMMs, attention must run in a
// small SM partition at close to the per-SM bandwidth of a streaming kernel (~100 GB/s per SM).
// At group 4, CUDA-core dot products would need the SM's whole fp32 FMA rate for that; the
// tensor cores have ~18x headroom, so this kernel does QK^T and PV as bf16 MMAs
// (mma.sync.m16n8k16, fp32 accumulation) and spends its effort on keeping bytes in flight.
//
// Design. One CTA (4 warps) per (request, kv head, context split).
//   - The query heads of the kv head (the GQA group, up to 16) are the MMA's 16 rows, held as A
//     fragments for the whole CTA (rows past the group are zero); the fp32 scores are scaled by
//     scale * log2(e) after the MMA.
//   - The split's keys are walked in tiles of 64 (4 blocks of 16), kStages tiles in flight:
//     cp.async 16-byte copies of K and V rows into shared memory (XOR-swizzled per 16-byte
//     chunk, so that ldmatrix reads are conflict-free), zero-filled past the context.
//   - Warp w takes keys [16w, 16w + 16) of each tile: S = Q K^T (16 x 16, two n-tiles, D/16
//     k-steps; K rows through ldmatrix are B fragments as they are), an online softmax in the
//     log2 domain per row, then O += P V with P re-packed from the S accumulators as an A
//     fragment (the FlashAttention-2 register layout) and V through ldmatrix.trans.
//   - At the end the 4 warps' (m, l, O) merge through shared memory; one split writes O / l in
//     bf16, several write unnormalized O and (m, l) to the workspace in the layout of the plain
//     kernel (attention.cu), whose combine pass merges them.
#include <cmath>

#include "backends/cuda/cuda_check.h"
#include "backends/cuda/kernels/common.cuh"
#include "backends/cuda/launch.h"

namespace nf::cuda {
namespace {

using kernels::bf16;

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 64;  // keys per tile: 16 per warp
constexpr int kStages = 3;
constexpr int kPage = launch::kDecodePage;
constexpr int kRows = 16;  // MMA rows: the group's query heads, zero-padded
constexpr float kLog2e = 1.4426950408889634f;
static_assert(kTile == 16 * kWarps && kTile % kPage == 0);

struct DecodeParams {
  launch::AttentionLaunch a;
  int group = 1;
  float scale_log2 = 0;
  float* part_acc = nullptr;  // [T, H, S, D]
  float* part_ml = nullptr;   // [T, H, S, 2]
};

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, bypassing L1; zero-filled when !valid (src is then not read).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  const int bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// c += a (16x16, row) * b (16x8, col), bf16 in, fp32 accumulate.
__device__ __forceinline__ void mma_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                          uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Element offset of (row, 16-byte chunk) in a swizzled [rows][kD] bf16 tile.
template <int kD>
__device__ __forceinline__ int swz(int row, int chunk) {
  return row * kD + ((chunk ^ (row & 7)) << 3);
}

template <int kD>
struct DecodeSmem {
  static constexpr int kTileElems = kTile * kD;
  static constexpr size_t kBytes =
      sizeof(bf16) * (static_cast<size_t>(kStages) * 2 * kTileElems + kRows * kD);
  // Layout: K stages, V stages, Q. After the key loop the stage area holds the warps' merge.
  static_assert(kWarps * kRows * (kD + 2) * sizeof(float) <=
                sizeof(bf16) * static_cast<size_t>(kStages) * 2 * kTileElems);
};

template <int kD>
__global__ void __launch_bounds__(kThreads, 2) decode_attention_kernel(const DecodeParams p) {
  constexpr int kChunks = kD / 8;  // 16-byte chunks per row
  constexpr int kNT = kD / 8;      // n-tiles of the output
  constexpr int kKS = kD / 16;     // k-steps of QK^T
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sk = reinterpret_cast<bf16*>(smem_raw);
  bf16* sv = sk + kStages * DecodeSmem<kD>::kTileElems;
  bf16* sq = sv + kStages * DecodeSmem<kD>::kTileElems;

  const launch::AttentionLaunch& a = p.a;
  const int b = blockIdx.x, kvh = blockIdx.y, split = blockIdx.z, splits = gridDim.z;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int64_t t = a.seq_indptr[b];
  const int ctx = a.positions[t] + 1;
  const int tiles = (ctx + kTile - 1) / kTile;
  const int per_split = (tiles + splits - 1) / splits;
  const int begin = split * per_split * kTile;
  const int end = min(ctx, (split + 1) * per_split * kTile);
  // A position past the block table reads nothing: its output is 0 / 0, NaN (as the plain
  // kernel's), never another request's blocks.
  const bool in_table = ctx <= (a.block_indptr[b + 1] - a.block_indptr[b]) * kPage;
  const int n_tiles = in_table && begin < end ? (end - begin + kTile - 1) / kTile : 0;
  const int h0 = kvh * p.group;

  // Q: the group's heads as bf16 rows of sq (zero rows past the group), unscaled: scaling before
  // the bf16 rounding would perturb large scores by ~2^-9 of their size (the scores are scaled
  // in fp32 after the MMA instead).
  for (int c = tid; c < kRows * kChunks; c += kThreads) {
    const int row = c / kChunks, ch = c % kChunks;
    float v[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (row < p.group) {
      kernels::load_bf16x8(a.q + t * a.q_stride + static_cast<int64_t>(h0 + row) * kD + ch * 8, v);
    }
    kernels::store_bf16x8(sq + swz<kD>(row, ch), v);
  }

  const int32_t* pages = a.block_ids + a.block_indptr[b];
  const int64_t page_stride = 2LL * a.kv_heads * kPage * kD;  // one block, K and V, all heads
  const bf16* kv_head = a.kv + static_cast<int64_t>(kvh) * kPage * kD;
  const int64_t v_off = static_cast<int64_t>(a.kv_heads) * kPage * kD;
  auto load_tile = [&](int i, int stage) {
    const int tile0 = begin + i * kTile;
    bf16* dk = sk + stage * DecodeSmem<kD>::kTileElems;
    bf16* dv = sv + stage * DecodeSmem<kD>::kTileElems;
#pragma unroll
    for (int j = 0; j < kTile * kChunks / kThreads; ++j) {
      const int c = tid + j * kThreads;
      const int row = c / kChunks, ch = c % kChunks;
      const int pos = tile0 + row;
      const bool valid = pos < end;
      const bf16* src = a.kv;
      if (valid)
        src = kv_head + pages[pos / kPage] * page_stride + (pos % kPage) * kD + ch * 8;
      cp_async16(smem_addr(dk + swz<kD>(row, ch)), src, valid);
      cp_async16(smem_addr(dv + swz<kD>(row, ch)), valid ? src + v_off : src, valid);
    }
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < n_tiles) load_tile(s, s);
    cp_async_commit();
  }
  __syncthreads();  // sq written

  // Q as A fragments, one per k-step: matrices (rows 0-7 | 8-15) x (dims lo | hi).
  uint32_t qf[kKS][4];
  {
    const int m = lane >> 3, row = ((m & 1) << 3) + (lane & 7);
#pragma unroll
    for (int ks = 0; ks < kKS; ++ks) ldmatrix_x4(qf[ks], smem_addr(sq + swz<kD>(row, 2 * ks + (m >> 1))));
  }

  float o[kNT][4];
#pragma unroll
  for (int n = 0; n < kNT; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.0f, 0.0f};  // rows g and g + 8
  const int g = lane >> 2, q4 = lane & 3;

  for (int i = 0; i < n_tiles; ++i) {
    cp_async_wait<kStages - 2>();
    __syncthreads();  // tile i landed for every thread; tile i - 1's stage is free
    if (i + kStages - 1 < n_tiles) load_tile(i + kStages - 1, (i + kStages - 1) % kStages);
    cp_async_commit();

    const bf16* tk = sk + (i % kStages) * DecodeSmem<kD>::kTileElems;
    const bf16* tv = sv + (i % kStages) * DecodeSmem<kD>::kTileElems;
    const int key0 = warp * 16;  // this warp's keys within the tile
    // S = Q K^T: two n-tiles of 8 keys.
    float s[2][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}};
    {
      const int m = lane >> 3, key = key0 + ((m >> 1) << 3) + (lane & 7);
#pragma unroll
      for (int ks = 0; ks < kKS; ++ks) {
        uint32_t kf[4];
        ldmatrix_x4(kf, smem_addr(tk + swz<kD>(key, 2 * ks + (m & 1))));
        mma_16816(s[0], qf[ks], kf[0], kf[1]);
        mma_16816(s[1], qf[ks], kf[2], kf[3]);
      }
    }
    // Online softmax (log2 domain) for rows g (s[.][0..1]) and g + 8 (s[.][2..3]).
    const int pos0 = begin + i * kTile + key0 + 2 * q4;
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[n][e] = pos0 + n * 8 + (e & 1) >= end ? -INFINITY : s[n][e] * p.scale_log2;
        mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
      }
    float alpha[2], m_use[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
      mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
      const float m_new = fmaxf(m_run[r], mx[r]);
      m_use[r] = m_new == -INFINITY ? 0.0f : m_new;  // nothing seen yet: keep p = 0, alpha = 1
      alpha[r] = exp2f(m_run[r] - m_use[r]);
      m_run[r] = m_new;
      l_run[r] *= alpha[r];
    }
#pragma unroll
    for (int n = 0; n < 2; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[n][e] = exp2f(s[n][e] - m_use[e >> 1]);
        l_run[e >> 1] += s[n][e];
      }
#pragma unroll
    for (int n = 0; n < kNT; ++n) {
      o[n][0] *= alpha[0];
      o[n][1] *= alpha[0];
      o[n][2] *= alpha[1];
      o[n][3] *= alpha[1];
    }
    // P as the A fragment of O += P V (16 rows x 16 keys).
    const uint32_t pf[4] = {pack_bf16(s[0][0], s[0][1]), pack_bf16(s[0][2], s[0][3]),
                            pack_bf16(s[1][0], s[1][1]), pack_bf16(s[1][2], s[1][3])};
    {
      const int m = lane >> 3, key = key0 + ((m & 1) << 3) + (lane & 7);
#pragma unroll
      for (int j = 0; j < kNT / 2; ++j) {
        uint32_t vf[4];
        ldmatrix_x4_trans(vf, smem_addr(tv + swz<kD>(key, 2 * j + (m >> 1))));
        mma_16816(o[2 * j], pf, vf[0], vf[1]);
        mma_16816(o[2 * j + 1], pf, vf[2], vf[3]);
      }
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // the stage area is free for the merge

  // The warps' states: m and l per row (l summed over the quad), O rows.
  float* wo = reinterpret_cast<float*>(smem_raw);  // [kWarps][kRows][kD]
  float* wm = wo + kWarps * kRows * kD;            // [kWarps][kRows]
  float* wl = wm + kWarps * kRows;                 // [kWarps][kRows]
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = l_run[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    if (q4 == 0) {
      wm[warp * kRows + g + 8 * r] = m_run[r];
      wl[warp * kRows + g + 8 * r] = l;
    }
  }
#pragma unroll
  for (int n = 0; n < kNT; ++n) {
    float* row0 = wo + (warp * kRows + g) * kD + n * 8 + 2 * q4;
    row0[0] = o[n][0];
    row0[1] = o[n][1];
    row0[8 * kD] = o[n][2];
    row0[8 * kD + 1] = o[n][3];
  }
  __syncthreads();

  for (int idx = tid; idx < p.group * kD; idx += kThreads) {
    const int row = idx / kD, d = idx % kD;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) mx = fmaxf(mx, wm[w * kRows + row]);
    float num = 0.0f, den = 0.0f;
    if (mx != -INFINITY) {
#pragma unroll
      for (int w = 0; w < kWarps; ++w) {
        const float wgt = exp2f(wm[w * kRows + row] - mx);  // 0 for a warp that saw no key
        num += wo[(w * kRows + row) * kD + d] * wgt;
        den += wl[w * kRows + row] * wgt;
      }
    }
    const int h = h0 + row;
    if (splits == 1) {
      a.out[t * a.num_heads * kD + static_cast<int64_t>(h) * kD + d] = __float2bfloat16(num / den);
    } else {
      const int64_t slot = (t * a.num_heads + h) * splits + split;
      p.part_acc[slot * kD + d] = num;
      if (d == 0) {
        p.part_ml[slot * 2] = mx;
        p.part_ml[slot * 2 + 1] = den;  // 0 for an empty split: the combine skips it
      }
    }
  }
}

template <int kD>
void launch_decode(const DecodeParams& p, cudaStream_t stream) {
  const size_t smem = DecodeSmem<kD>::kBytes;  // over the 48 KB default: opt in (cheap)
  NF_CUDA_CHECK(cudaFuncSetAttribute(decode_attention_kernel<kD>,
                                     cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(smem)));
  const dim3 grid(static_cast<unsigned>(p.a.num_seqs), static_cast<unsigned>(p.a.kv_heads),
                  static_cast<unsigned>(p.a.num_splits));
  decode_attention_kernel<kD><<<grid, kThreads, smem, stream>>>(p);
  NF_CUDA_CHECK_LAUNCH();
}

}  // namespace

void launch::paged_decode_attention(const AttentionLaunch& a, cudaStream_t stream) {
  DecodeParams p;
  p.a = a;
  p.group = a.num_heads / a.kv_heads;
  p.scale_log2 = a.scale * kLog2e;
  if (a.num_splits > 1) {
    p.part_acc = a.workspace;
    p.part_ml = a.workspace + a.tokens * a.num_heads * a.num_splits * a.head_dim;
  }
  if (a.head_dim == 64) {
    launch_decode<64>(p, stream);
  } else {
    launch_decode<128>(p, stream);
  }
  if (a.num_splits > 1) attention_combine(a, stream);
}

}  // namespace nf::cuda
