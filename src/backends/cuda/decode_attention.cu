// Decode attention on tensor cores: one query token per request over its paged KV, for GQA.
//
// Why (docs/nano-batch.md): to overlap decode attention with GEMMs, attention must run in a
// small SM partition at close to the per-SM bandwidth of a streaming kernel (~100 GB/s per SM).
// At group 4, CUDA-core dot products would need the SM's whole fp32 FMA rate for that; the
// tensor cores have ~18x headroom, so this kernel does QK^T and PV as bf16 MMAs
// (mma.sync.m16n8k16, fp32 accumulation) and spends its effort on keeping bytes in flight.
//
// Two kernels: the per-request one (launch::kDecodePerRequest, below; the faster on the whole
// GPU) and the streaming one (launch::kDecodeStreams, further below; the faster per SM inside an
// SM partition). Measurements: docs/nano-batch.md.
//
// The per-request kernel. One CTA (4 warps) per (request, kv head, context split).
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
#include <cuda.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>

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
  int debug = 0;  // streaming kernel experiments: 1 no math, 2 no loads (output meaningless)
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

// The transpose of an 8x8 b16 matrix held as ldmatrix holds it (lane: row lane / 4, columns
// 2 (lane % 4) and + 1).
__device__ __forceinline__ uint32_t movmatrix_trans(uint32_t x) {
  uint32_t y;
  asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
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

// ---- The streaming kernel (launch::kDecodeStreams) -------------------------------------------
//
// Why a second kernel: in a green partition the per-request kernel above draws ~39 GB/s per SM
// (bench/results/tc_decode_h200.json); overlap needs ~100 in a partition of 24-32 SMs. This one
// draws 76.5 at 32 SMs. Its copies alone reach ~110 and its math alone ~91: the math, with 6
// warps per SM, is what bounds it (bench/results/nano_batch_soft_partitions_h200.json).
//
// Design: one persistent CTA per SM, each warp an independent stream of work items
// (request, kv head, split), taken as item = warp + k * (all warps). A warp keeps its own ring of
// kS tiles of kTileBytes (default 2 x 16 KB: 32 keys at head_dim 128, 64 at 64; as many warps
// as the shared memory holds, 6) and fills it with TMA: lane 0 issues one bulk tensor copy per
// block (K and V rows of one kv head, 128-byte swizzled) and, for an item's first tile, one bulk
// copy of the group's query rows, all completing on the stage's mbarrier. The warp copies each
// tile from its stage into registers and gives the stage back to the copies at once, so its kS
// tiles stay in flight while it computes (holding the stage through the math left one in flight
// and bound the kernel by its ring), across item boundaries; it never waits on another warp.
// Block ids are read 32 at a time, one per lane, a chunk ahead; an item's sizes two items ahead.
// The math is transposed (keys as the MMA's rows, the group's heads as its 8 columns), so it
// serves groups of up to 8 query heads (larger ones take the per-request kernel), and a warp owns
// its item whole, so it writes its output with no merge.
constexpr int kStreamMaxWarps = 8;

template <int kD>
struct StreamBlock {
  static constexpr int kHalves = kD / 64;                 // 128-byte lines per key row
  static constexpr int kBlockBytes = 2 * kD * kPage * 2;  // K and V of one block, one head
};
template <int kD, int kTileBytes>
struct StreamCfg : StreamBlock<kD> {
  static constexpr int kBlocksPerTile = kTileBytes / StreamBlock<kD>::kBlockBytes;
  static constexpr int kKeys = kBlocksPerTile * kPage;  // keys per tile
  static_assert(kBlocksPerTile >= 1 &&
                kBlocksPerTile * StreamBlock<kD>::kBlockBytes == kTileBytes &&
                32 % kBlocksPerTile == 0 && kKeys % 16 == 0);
};

// Per warp and stage: what the tile holds (written by the warp's lane 0 when it issues the copies).
struct alignas(16) StreamRecord {
  int n;  // tiles of the item; 0: an item with nothing to read; -1: the stream has ended
  int j;  // this tile's index in the item
  int b;  // request (= its query row)
  int kvh;
  int split;
  int begin;  // the item's key range [begin, end)
  int end;
  int pad;
};

__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes)
               : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  uint32_t done = 0;
  do {
    asm volatile(
        "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        " selp.u32 %0, 1, 0, p;\n}\n"
        : "=r"(done)
        : "r"(bar), "r"(parity)
        : "memory");
  } while (!done);
}
__device__ __forceinline__ void tma_load_5d(uint32_t dst, const CUtensorMap* map, int c0, int c1,
                                            int c2, int c3, int c4, uint32_t bar) {
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%2, %3, %4, %5, %6}], [%7];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void bulk_load(uint32_t dst, const void* src, uint32_t bytes,
                                          uint32_t bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::
          "r"(dst),
      "l"(src), "r"(bytes), "r"(bar)
      : "memory");
}

// Byte offset of (key, 16-byte chunk) of K (kv 0) or V (kv 1) in a stream tile: blocks of
// [K|V][half][row][64 dims], each 128-byte line swizzled by its row (the TMA's 128-byte mode).
template <int kD>
__device__ __forceinline__ uint32_t stream_off(int kv, int key, int chunk) {
  using C = StreamBlock<kD>;
  const int r = key % kPage;
  const int line = (kv * C::kHalves + (chunk >> 3)) * kPage + r;
  return static_cast<uint32_t>((key / kPage) * C::kBlockBytes + line * 128 +
                               (((chunk & 7) ^ (r & 7)) << 4));
}

struct StreamMeta {  // one item's request sizes, loaded ahead (pos: the context is pos + 1)
  int pos = -1, p0 = 0, p1 = 0;
};

// 2^x on the SFU, flushing denormals (exp2f adds a range fix-up around it: 3 more instructions).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

template <int kD, int kTileBytes, int kS>
__global__ void __launch_bounds__(kStreamMaxWarps * 32, 1)
    decode_stream_kernel(const DecodeParams p, const __grid_constant__ CUtensorMap kv_map) {
  using C = StreamCfg<kD, kTileBytes>;
  constexpr int kKeys = C::kKeys;
  constexpr int kKS = kD / 16;    // k-steps of Q K^T
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const launch::AttentionLaunch& a = p.a;
  const int warps = blockDim.x >> 5, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int group = p.group, splits = a.num_splits;
  const uint32_t q_slot = static_cast<uint32_t>((group * kD * 2 + 15) & ~15);

  // Layout (from a 1024-byte aligned base, as the swizzle needs): tiles [warp][stage], query
  // slots [warp][stage], mbarriers [warp][stage], records [warp][stage].
  const uint32_t raw = smem_addr(smem_raw);
  const uint32_t base = (raw + 1023u) & ~1023u;
  unsigned char* base_ptr = smem_raw + (base - raw);
  const int ws0 = warp * kS;
  const uint32_t tiles = base + static_cast<uint32_t>(ws0) * kTileBytes;
  const uint32_t qslots =
      base + static_cast<uint32_t>(warps * kS) * kTileBytes + static_cast<uint32_t>(ws0) * q_slot;
  const uint32_t bars_off = static_cast<uint32_t>(warps * kS) * (kTileBytes + q_slot);
  const uint32_t bars = base + bars_off + static_cast<uint32_t>(ws0) * 8;
  StreamRecord* recs = reinterpret_cast<StreamRecord*>(base_ptr + bars_off + warps * kS * 8) + ws0;
  unsigned char* tiles_ptr = base_ptr + (tiles - base);

  if (lane == 0) {
    for (int s = 0; s < kS; ++s) mbar_init(bars + 8 * s, 1);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncwarp();

  const int per_req = a.kv_heads * splits;
  const int n_items = a.num_seqs * per_req;
  const int stride = gridDim.x * warps;
  const int gw = blockIdx.x * warps + warp;
  auto load_meta = [&](int it) {
    StreamMeta m;
    if (it < n_items) {
      const int b = it / per_req;
      m.pos = a.positions[b];  // + 1 at use: adding here would wait for the load now
      m.p0 = a.block_indptr[b];
      m.p1 = a.block_indptr[b + 1];
    }
    return m;
  };
  // The key range of item `it` of request sizes m: [begin, end), in whole tiles from begin.
  auto range = [&](int it, const StreamMeta& m, int* begin, int* end) {
    const int split = it % splits, ctx = m.pos + 1;
    const int tiles_all = (ctx + kKeys - 1) / kKeys;
    const int per_split = (tiles_all + splits - 1) / splits;
    *begin = split * per_split * kKeys;
    *end = min(ctx, *begin + per_split * kKeys);
    // A position past the block table reads nothing (output 0 / 0, as the other kernels).
    const bool in_table = ctx <= (m.p1 - m.p0) * kPage;
    return in_table && *begin < *end ? (*end - *begin + kKeys - 1) / kKeys : 0;
  };
  // 32 block ids from block `first` of the item's request (one per lane; 0 past `last`).
  auto load_ids = [&](const StreamMeta& m, int first, int last) {
    const int k = first + lane;
    return k < last ? a.block_ids[m.p0 + k] : 0;
  };

  // The producer: the item and tile it issues next, and what it has loaded ahead.
  // The item's request, kv head and split are divided out once per item, not per tile.
  int pit = gw, pj = 0, pn = 0, pbegin = 0, pend = 0, pchunk = 0, plast = 0;
  int pb = 0, pkvh = 0, psplit = 0;
  StreamMeta pm, m1 = load_meta(gw), m2 = load_meta(gw + stride);
  int ids = 0, ids_ahead = 0, ids_next_item = 0;
  {
    int b0 = 0, e0 = 0;
    if (range(gw, m1, &b0, &e0) > 0)
      ids_next_item = load_ids(m1, b0 / kPage, (e0 + kPage - 1) / kPage);
  }
  auto start_item = [&](int it) {
    pit = it;
    pj = 0;
    pm = m1;
    pb = it / per_req;
    pkvh = (it / splits) % a.kv_heads;
    psplit = it % splits;
    pn = it < n_items ? range(it, pm, &pbegin, &pend) : 0;
    pchunk = pbegin / kPage;
    plast = (pend + kPage - 1) / kPage;
    ids = ids_next_item;
    ids_ahead = pn > 0 && pchunk + 32 < plast ? load_ids(pm, pchunk + 32, plast) : 0;
    // The next item's first ids (its sizes were loaded an item ago), and the sizes after it.
    m1 = m2;
    int nb = 0, ne = 0;
    ids_next_item = it + stride < n_items && range(it + stride, m1, &nb, &ne) > 0
                        ? load_ids(m1, nb / kPage, (ne + kPage - 1) / kPage)
                        : 0;
    m2 = load_meta(it + 2 * stride);
  };
  start_item(gw);
  // Issues the next tile of the stream into `stage` (all lanes call it; lane 0 issues).
  auto issue = [&](int stage) {
    StreamRecord r{};
    if (pit >= n_items) {
      r.n = -1;
    } else {
      const int b = pb, kvh = pkvh;
      r = StreamRecord{pn, pj, b, kvh, psplit, pbegin, pend, 0};
      const uint32_t bar = bars + 8 * stage;
      if (pn > 0 && p.debug != 2) {
        const int blk0 = pbegin / kPage + pj * C::kBlocksPerTile;
        if (blk0 - pchunk >= 32) {  // the next chunk of ids (loaded a chunk ago)
          pchunk += 32;
          ids = ids_ahead;
          ids_ahead = pchunk + 32 < plast ? load_ids(pm, pchunk + 32, plast) : 0;
        }
        int blocks = 0;
        int id[C::kBlocksPerTile];
#pragma unroll
        for (int q = 0; q < C::kBlocksPerTile; ++q) {
          id[q] = __shfl_sync(0xffffffffu, ids, blk0 - pchunk + q);
          blocks += blk0 + q < plast ? 1 : 0;
        }
        if (lane == 0) {
          const uint32_t qbytes = pj == 0 ? static_cast<uint32_t>(group * kD * 2) : 0u;
          mbar_expect_tx(bar, static_cast<uint32_t>(blocks * C::kBlockBytes) + qbytes);
          for (int q = 0; q < blocks; ++q)
            tma_load_5d(tiles + stage * kTileBytes + q * C::kBlockBytes, &kv_map, 0, 0, 0, kvh,
                        2 * id[q], bar);
          if (pj == 0)
            bulk_load(qslots + stage * q_slot,
                      a.q + b * a.q_stride + static_cast<int64_t>(kvh) * group * kD, qbytes, bar);
        }
      } else if (lane == 0) {
        mbar_expect_tx(bar, 0);  // nothing to read: the phase completes at once
      }
      if (++pj >= max(pn, 1)) start_item(pit + stride);
    }
    if (lane == 0) recs[stage] = r;
  };

#pragma unroll
  for (int s = 0; s < kS; ++s) issue(s);

  // The math runs transposed, keys as the MMA's 16 rows and the group's query heads (up to 8)
  // as its 8 columns: S^T = K Q^T, then O^T += V^T P^T. Against 16 padded query rows this halves
  // the MMAs and exponentials (the kernel is bound by its math, not by bandwidth).
  // Lane (g, q4) = (lane / 4, lane % 4) holds S^T at keys g, g + 8 of each 16 and heads 2q4,
  // 2q4 + 1, and O^T at dims g, g + 8 of each 16 and the same heads.
  const int g = lane >> 2, q4 = lane & 3;
  uint32_t qb[kKS][2];  // Q^T as B fragments: head g, dims 16ks + 2q4 (+1) and + 8
  float o[kD / 16][4];
  float m_run[2], l_run[2];  // per head 2q4 + e, log2 domain; l_run is this lane's keys' share
  // Each lane's ldmatrix byte offsets in a tile, one per swizzle class c (the k-step or the
  // dim-tile mod 4), so that a tile's 2 * kKeys / 16 * kD / 16 loads are one add per class plus
  // immediates: stream_off<kD>(kv, key, chunk) for the keys and chunks the lane addresses.
  static_assert(kPage == 16, "the offsets below take a block's 16 rows as one MMA row tile");
  uint32_t koff[4], voff[4];
  {
    const int mq = lane >> 3, l7 = lane & 7;
    const int rk = ((mq & 1) << 3) + l7, rv = ((mq >> 1) << 3) + l7;
#pragma unroll
    for (int c = 0; c < 4; ++c) {
      koff[c] = static_cast<uint32_t>(rk * 128 + (((2 * c) ^ (mq >> 1) ^ l7) << 4));
      voff[c] =
          static_cast<uint32_t>((C::kHalves * kPage + rv) * 128 + (((2 * c) ^ (mq & 1) ^ l7) << 4));
    }
  }
  // Per tile: wait for the stage, copy the tile into registers (K as A fragments, V^T through
  // ldmatrix.trans), give the stage back to the copies at once (it refills with the tile kS
  // ahead), then compute from registers. So all kS tiles of the ring are in flight while the
  // warp computes: holding the stage through the math left one tile in flight per warp and bound
  // the kernel by its ring (bytes in flight / latency), not by its math.
  for (int i = 0;; ++i) {
    const int st = i % kS;
    const StreamRecord r = recs[st];
    if (r.n < 0) break;
    mbar_wait(bars + 8 * st, static_cast<uint32_t>((i / kS) & 1));
    if (r.j == 0) {
#pragma unroll
      for (int n = 0; n < kD / 16; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
      m_run[0] = m_run[1] = -INFINITY;
      l_run[0] = l_run[1] = 0.0f;
      const unsigned char* qrow = base_ptr + (qslots - base) + st * q_slot + g * kD * 2;
#pragma unroll
      for (int ks = 0; ks < kKS; ++ks) {
        qb[ks][0] =
            g < group ? *reinterpret_cast<const uint32_t*>(qrow + (16 * ks + 2 * q4) * 2) : 0u;
        qb[ks][1] =
            g < group ? *reinterpret_cast<const uint32_t*>(qrow + (16 * ks + 8 + 2 * q4) * 2) : 0u;
      }
    }
    const int h0 = r.kvh * group;
    const bool math = r.n > 0 && p.debug != 1;
    const int valid = min(kKeys, r.end - (r.begin + r.j * kKeys));
    uint32_t kf[kKeys / 16][kKS][4], vf[kKeys / 16][kD / 16][4];
    if (math) {
      const uint32_t tk = tiles + st * kTileBytes;
      if (valid < kKeys) {
        // V rows past the context (a block's unused rows, or blocks not loaded) may hold
        // anything, and P = 0 times NaN is NaN: zero them (the fence below orders these writes
        // before the async proxy's refill).
        unsigned char* tv = tiles_ptr + st * kTileBytes;
        const int chunks = (kKeys - valid) * C::kHalves * 8;
        for (int c = lane; c < chunks; c += 32) {
          const int key = valid + c / (C::kHalves * 8), ch = c % (C::kHalves * 8);
          *reinterpret_cast<uint4*>(tv + stream_off<kD>(1, key, ch)) = make_uint4(0, 0, 0, 0);
        }
        __syncwarp();
      }
      uint32_t kaddr[4], vaddr[4];
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        kaddr[c] = tk + koff[c];
        vaddr[c] = tk + voff[c];
      }
#pragma unroll
      for (int kb = 0; kb < kKeys / 16; ++kb)
#pragma unroll
        for (int ks = 0; ks < kKS; ++ks)
          ldmatrix_x4(kf[kb][ks], kaddr[ks & 3] + kb * C::kBlockBytes + (ks >> 2) * kPage * 128);
#pragma unroll
      for (int kb = 0; kb < kKeys / 16; ++kb)
#pragma unroll
        for (int n = 0; n < kD / 16; ++n)
          ldmatrix_x4_trans(vf[kb][n], vaddr[n & 3] + kb * C::kBlockBytes + (n >> 2) * kPage * 128);
    }
    // The stage's reads (generic proxy) are ordered before its refill (async proxy).
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncwarp();
    issue(st);
    if (math) {
      // S^T = K Q^T, 16 keys per block; even and odd k-steps in two accumulators (shorter
      // dependency chains).
      float s[kKeys / 16][4];
#pragma unroll
      for (int kb = 0; kb < kKeys / 16; ++kb) {
        float s1[4] = {0, 0, 0, 0};
        s[kb][0] = s[kb][1] = s[kb][2] = s[kb][3] = 0.0f;
#pragma unroll
        for (int ks = 0; ks < kKS; ++ks) {
          if (ks % 2 == 0) {
            mma_16816(s[kb], kf[kb][ks], qb[ks][0], qb[ks][1]);
          } else {
            mma_16816(s1, kf[kb][ks], qb[ks][0], qb[ks][1]);
          }
        }
#pragma unroll
        for (int e = 0; e < 4; ++e) s[kb][e] += s1[e];
      }
      // Online softmax (log2 domain) per head 2q4 + (e & 1); keys g + 8 (e >> 1) of each block.
      // The max is taken on the raw scores (the scale is positive), and the scale folds into
      // the exponent's FMA; only a tile past the context's end is masked.
      if (valid < kKeys) {
#pragma unroll
        for (int kb = 0; kb < kKeys / 16; ++kb)
#pragma unroll
          for (int e = 0; e < 4; ++e)
            if (kb * 16 + g + 8 * (e >> 1) >= valid) s[kb][e] = -INFINITY;
      }
      float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int kb = 0; kb < kKeys / 16; ++kb)
#pragma unroll
        for (int e = 0; e < 4; ++e) mx[e & 1] = fmaxf(mx[e & 1], s[kb][e]);
      float alpha[2], m_use[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 4));
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 8));
        mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 16));
        const float m_new = fmaxf(m_run[h], mx[h] * p.scale_log2);
        m_use[h] = m_new == -INFINITY ? 0.0f : m_new;
        alpha[h] = fast_exp2(m_run[h] - m_use[h]);  // 1 unless the max grew
        m_run[h] = m_new;
        l_run[h] *= alpha[h];
      }
#pragma unroll
      for (int kb = 0; kb < kKeys / 16; ++kb)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          s[kb][e] = fast_exp2(fmaf(s[kb][e], p.scale_log2, -m_use[e & 1]));
          l_run[e & 1] += s[kb][e];
        }
      // Past an item's first tiles the max rarely grows: rescale O only when it did.
      if (__any_sync(0xffffffffu, alpha[0] != 1.0f || alpha[1] != 1.0f)) {
#pragma unroll
        for (int n = 0; n < kD / 16; ++n) {
          o[n][0] *= alpha[0];
          o[n][1] *= alpha[1];
          o[n][2] *= alpha[0];
          o[n][3] *= alpha[1];
        }
      }
      // O^T += V^T P^T: P^T's B fragments are S^T's accumulators, packed to bf16 and transposed
      // in registers (movmatrix); V^T's A fragments come through ldmatrix.trans.
#pragma unroll
      for (int kb = 0; kb < kKeys / 16; ++kb) {
        const uint32_t pb0 = movmatrix_trans(pack_bf16(s[kb][0], s[kb][1]));
        const uint32_t pb1 = movmatrix_trans(pack_bf16(s[kb][2], s[kb][3]));
#pragma unroll
        for (int n = 0; n < kD / 16; ++n) mma_16816(o[n], vf[kb][n], pb0, pb1);
      }
    }
    if (r.n == 0 || r.j == r.n - 1) {  // the item's output: heads 2q4 and 2q4 + 1 of the group
      float l[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        l[h] = l_run[h];
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 4);
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 8);
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 16);
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int head_in_group = 2 * q4 + h;
        if (head_in_group >= group) continue;
        const int64_t head = h0 + head_in_group;
        if (splits == 1) {
          // l = 0 (nothing read) gives 0 / 0, NaN, as the other kernels.
          const float inv = 1.0f / l[h];
          bf16* out = a.out + static_cast<int64_t>(r.b) * a.num_heads * kD + head * kD + g;
#pragma unroll
          for (int n = 0; n < kD / 16; ++n) {
            out[16 * n] = __float2bfloat16(o[n][h] * inv);
            out[16 * n + 8] = __float2bfloat16(o[n][2 + h] * inv);
          }
        } else {
          const int64_t slot = (static_cast<int64_t>(r.b) * a.num_heads + head) * splits + r.split;
          float* acc = p.part_acc + slot * kD + g;
#pragma unroll
          for (int n = 0; n < kD / 16; ++n) {
            acc[16 * n] = o[n][h];
            acc[16 * n + 8] = o[n][2 + h];
          }
          if (g == 0) {
            p.part_ml[slot * 2] = m_run[h];
            p.part_ml[slot * 2 + 1] = l[h];  // 0 for an empty split: the combine skips it
          }
        }
      }
    }
  }
}

// Dynamic shared memory of the streaming kernel for `warps` warps at `group`.
template <int kD, int kTileBytes, int kS>
size_t stream_smem_bytes(int warps, int group) {
  const size_t q_slot = (static_cast<size_t>(group) * kD * 2 + 15) & ~size_t{15};
  return 1024 + static_cast<size_t>(warps) * kS * (kTileBytes + q_slot + 8 + sizeof(StreamRecord));
}

template <int kD, int kTileBytes, int kS>
void launch_stream(const DecodeParams& p, const CUtensorMap& map, int max_warps,
                   cudaStream_t stream) {
  int device = 0, sms = 0, max_smem = 0;
  NF_CUDA_CHECK(cudaGetDevice(&device));
  NF_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  NF_CUDA_CHECK(cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  int warps = max_warps;
  while (warps > 1 &&
         stream_smem_bytes<kD, kTileBytes, kS>(warps, p.group) > static_cast<size_t>(max_smem))
    --warps;
  const size_t smem = stream_smem_bytes<kD, kTileBytes, kS>(warps, p.group);
  auto* kernel = decode_stream_kernel<kD, kTileBytes, kS>;
  NF_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                     static_cast<int>(smem)));
  const int64_t items = static_cast<int64_t>(p.a.num_seqs) * p.a.kv_heads * p.a.num_splits;
  const int64_t ctas_for_items = (items + warps - 1) / warps;
  const int ctas = static_cast<int>(std::max<int64_t>(
      1, std::min<int64_t>(ctas_for_items, p.a.sm_count > 0 ? std::min(p.a.sm_count, sms) : sms)));
  kernel<<<ctas, warps * 32, smem, stream>>>(p, map);
  NF_CUDA_CHECK_LAUNCH();
}

// The ring's shape (launch::DecodeRing: an experiment's knob; the default is the measured best).
template <int kD>
void launch_stream_ring(const DecodeParams& p, const CUtensorMap& map, cudaStream_t stream) {
  const std::array<int, 3> ring{p.a.stream_ring.tile_kb, p.a.stream_ring.stages,
                                p.a.stream_ring.warps};
  DecodeParams q = p;
  q.debug = p.a.stream_debug;
  const int warps = std::clamp(ring[2], 1, kStreamMaxWarps);
  if (ring[0] == 16 && ring[1] == 3) {
    launch_stream<kD, 16384, 3>(q, map, warps, stream);
  } else if (ring[0] == 8 && ring[1] == 4) {
    launch_stream<kD, 8192, 4>(q, map, warps, stream);
  } else if (ring[0] == 8 && ring[1] == 3) {
    launch_stream<kD, 8192, 3>(q, map, warps, stream);
  } else if (ring[0] == 8 && ring[1] == 2) {
    launch_stream<kD, 8192, 2>(q, map, warps, stream);
  } else {
    launch_stream<kD, 16384, 2>(q, map, warps, stream);
  }
}

}  // namespace

void launch::paged_decode_attention(const AttentionLaunch& a, const void* kv_map,
                                    cudaStream_t stream) {
  DecodeParams p;
  p.a = a;
  p.group = a.num_heads / a.kv_heads;
  p.scale_log2 = a.scale * kLog2e;
  if (a.num_splits > 1) {
    p.part_acc = a.workspace;
    p.part_ml = a.workspace + a.tokens * a.num_heads * a.num_splits * a.head_dim;
  }
  if (a.decode_kernel == kDecodeStreams && p.group <= 8) {
    const auto& map = *static_cast<const CUtensorMap*>(kv_map);
    if (a.head_dim == 64) {
      launch_stream_ring<64>(p, map, stream);
    } else {
      launch_stream_ring<128>(p, map, stream);
    }
  } else if (a.head_dim == 64) {
    launch_decode<64>(p, stream);
  } else {
    launch_decode<128>(p, stream);
  }
  if (a.num_splits > 1) attention_combine(a, stream);
}

}  // namespace nf::cuda
