#include "backends/cpu/cpu_backend.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <thread>

#include "common/status.h"

namespace nf {
namespace {

// Rows (or columns) [begin, end) of a tensor that one rank holds.
struct Slice {
  int64_t begin = 0;
  int64_t end = 0;
  int64_t size() const { return end - begin; }
};

// n split into `ranks` slices of equal size (n divisible by ranks) or sizes that differ by one.
std::vector<Slice> split(int64_t n, int ranks) {
  std::vector<Slice> out;
  for (int r = 0; r < ranks; ++r) out.push_back({n * r / ranks, n * (r + 1) / ranks});
  return out;
}

// Reads tensor `name` ([rows, cols], row-major) and copies rows parts[r] of it to dst[r]
// (parts[r].size() * cols floats). One part covering every row is read straight into dst[0].
void read_rows(const WeightSource& w, const std::string& name, int64_t rows, int64_t cols,
               const std::vector<Slice>& parts, const std::vector<float*>& dst) {
  if (parts.size() == 1 && parts[0].begin == 0 && parts[0].end == rows) {
    w.read_f32(name, std::span<float>(dst[0], static_cast<size_t>(rows * cols)));
    return;
  }
  std::vector<float> full(static_cast<size_t>(rows * cols));
  w.read_f32(name, full);
  for (size_t r = 0; r < parts.size(); ++r) {
    std::copy(full.begin() + parts[r].begin * cols, full.begin() + parts[r].end * cols, dst[r]);
  }
}

// Reads tensor `name` ([rows, cols]) and copies columns parts[r] of it to dst[r]
// ([rows, parts[r].size()]).
void read_cols(const WeightSource& w, const std::string& name, int64_t rows, int64_t cols,
               const std::vector<Slice>& parts, const std::vector<float*>& dst) {
  if (parts.size() == 1 && parts[0].begin == 0 && parts[0].end == cols) {
    w.read_f32(name, std::span<float>(dst[0], static_cast<size_t>(rows * cols)));
    return;
  }
  std::vector<float> full(static_cast<size_t>(rows * cols));
  w.read_f32(name, full);
  for (size_t r = 0; r < parts.size(); ++r) {
    const int64_t width = parts[r].size();
    for (int64_t i = 0; i < rows; ++i) {
      std::copy_n(full.data() + i * cols + parts[r].begin, width, dst[r] + i * width);
    }
  }
}

void grow(std::vector<float>& v, int64_t n) {
  if (static_cast<int64_t>(v.size()) < n) v.resize(static_cast<size_t>(n));
}

}  // namespace

CpuBackend::CpuBackend(const ModelConfig& c, const WeightSource& w, const CpuBackendConfig& opts)
    : config_(c), opts_(opts) {
  // GEMMs are split across each rank's pool (see cpu::gemm_xwt): OpenBLAS itself runs
  // single-threaded.
  openblas_set_num_threads(1);
  NF_CHECK(opts_.block_size > 0, "block size {}", opts_.block_size);
  const int N = opts_.tensor_parallel_size;
  if (N < 1) fail("--tensor-parallel-size {}: must be at least 1", N);
  if (c.num_heads % N != 0 || c.num_kv_heads % N != 0) {
    fail(
        "--tensor-parallel-size {}: the model has {} attention heads and {} KV heads, and "
        "tensor parallelism splits whole heads across ranks, so both must be divisible by {}",
        N, c.num_heads, c.num_kv_heads, N);
  }
  if (c.intermediate_size < N || c.vocab_size < N) {
    fail("--tensor-parallel-size {}: larger than the model's intermediate size {} or vocabulary {}",
         N, c.intermediate_size, c.vocab_size);
  }
  const int64_t hd = c.head_dim, nkv = c.num_kv_heads;
  const int64_t kv_block_floats = 2 * nkv * opts_.block_size * hd;  // all ranks together
  num_blocks_ = opts_.num_kv_blocks;
  if (num_blocks_ <= 0) {
    const double bytes_per_block = static_cast<double>(kv_block_floats) * 4 * c.num_layers;
    num_blocks_ = static_cast<int64_t>(opts_.kv_cache_gb * (1 << 30) / bytes_per_block);
  }
  if (num_blocks_ < 1) fail("--kv-cache-gb {} is too small for one KV block", opts_.kv_cache_gb);

  // The threads: all of them for one rank (0 keeps the pool's default), else an even share each.
  const int total = opts_.threads > 0
                        ? opts_.threads
                        : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  for (int r = 0; r < N; ++r) {
    const int share = N == 1 ? opts_.threads : std::max(1, total / N + (r < total % N ? 1 : 0));
    ranks_.push_back(std::make_unique<Rank>(share));
  }
  load_rank_weights(w);
  inv_freq_ = rope_inv_freq(c.rope, hd);
  if (N > 1) group_ = std::make_unique<CpuCommGroup>(N);
}

CpuBackend::~CpuBackend() = default;

// Each tensor is read once and its slices handed to the ranks (a whole tensor at a time in
// memory besides the shards).
void CpuBackend::load_rank_weights(const WeightSource& w) {
  const ModelConfig& c = config_;
  const int n = static_cast<int>(ranks_.size());
  const int64_t H = c.hidden_size, hd = c.head_dim, I = c.intermediate_size, V = c.vocab_size;
  const int64_t nh = c.num_heads, nkv = c.num_kv_heads;
  const int64_t vocab_rows = (V + n - 1) / n;
  const int64_t q_w = nh / n * hd, kv_w = nkv / n * hd;  // a rank's Q rows, K (and V) rows
  const int64_t kv_floats = num_blocks_ * 2 * (nkv / n) * opts_.block_size * hd;
  const std::vector<Slice> q_rows = split(nh * hd, n), kv_rows = split(nkv * hd, n);
  const std::vector<Slice> inter = split(I, n);
  std::vector<Slice> vocab;
  auto sized = [](std::vector<float>& v, int64_t numel) {
    v.assign(static_cast<size_t>(numel), 0.0f);
  };
  for (int r = 0; r < n; ++r) {
    Rank& rk = *ranks_[static_cast<size_t>(r)];
    rk.heads = nh / n;
    rk.kv_heads = nkv / n;
    rk.inter = inter[static_cast<size_t>(r)].size();
    rk.vocab_rows = vocab_rows;
    rk.vocab_begin = std::min<int64_t>(V, r * vocab_rows);
    rk.vocab_end = std::min<int64_t>(V, rk.vocab_begin + vocab_rows);
    vocab.push_back({rk.vocab_begin, rk.vocab_end});
    sized(rk.embed, vocab_rows * H);  // padding rows stay zero
    sized(rk.final_norm, H);
    if (!c.tie_word_embeddings) sized(rk.lm_head, vocab_rows * H);
    rk.layers.resize(static_cast<size_t>(c.num_layers));
    for (Layer& l : rk.layers) {
      sized(l.attn_norm, H);
      sized(l.w_qkv, (q_w + 2 * kv_w) * H);
      if (c.qkv_bias) sized(l.b_qkv, q_w + 2 * kv_w);
      if (c.qk_norm) {
        sized(l.q_norm, hd);
        sized(l.k_norm, hd);
      }
      sized(l.w_o, H * q_w);
      sized(l.ffn_norm, H);
      sized(l.w_gate_up, 2 * rk.inter * H);
      sized(l.w_down, H * rk.inter);
      try {
        sized(l.kv, kv_floats);
      } catch (const std::bad_alloc&) {
        fail("cannot allocate a {:.2f} GiB KV cache in host memory (lower --kv-cache-gb)",
             opts_.kv_cache_gb);
      }
    }
  }
  // at(f): f(rank) for every rank, the destinations of one tensor's slices.
  auto at = [&](auto&& f) {
    std::vector<float*> out;
    for (auto& rk : ranks_) out.push_back(f(*rk));
    return out;
  };
  // Replicated tensors: read by rank 0, copied to the others.
  auto replicate = [&](const std::string& name, int64_t numel, const std::vector<float*>& dst) {
    w.read_f32(name, std::span<float>(dst[0], static_cast<size_t>(numel)));
    for (size_t r = 1; r < dst.size(); ++r) std::copy_n(dst[0], numel, dst[r]);
  };

  read_rows(w, "model.embed_tokens.weight", V, H, vocab,
            at([](Rank& rk) { return rk.embed.data(); }));
  replicate("model.norm.weight", H, at([](Rank& rk) { return rk.final_norm.data(); }));
  if (!c.tie_word_embeddings) {
    read_rows(w, "lm_head.weight", V, H, vocab, at([](Rank& rk) { return rk.lm_head.data(); }));
  }
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const std::string p = "model.layers." + std::to_string(i) + ".";
    auto layer = [i](Rank& rk) -> Layer& { return rk.layers[static_cast<size_t>(i)]; };
    replicate(p + "input_layernorm.weight", H,
              at([&](Rank& rk) { return layer(rk).attn_norm.data(); }));
    // A rank's fused QKV: its Q rows, then its K rows, then its V rows (the bias likewise).
    read_rows(w, p + "self_attn.q_proj.weight", nh * hd, H, q_rows,
              at([&](Rank& rk) { return layer(rk).w_qkv.data(); }));
    read_rows(w, p + "self_attn.k_proj.weight", nkv * hd, H, kv_rows,
              at([&](Rank& rk) { return layer(rk).w_qkv.data() + q_w * H; }));
    read_rows(w, p + "self_attn.v_proj.weight", nkv * hd, H, kv_rows,
              at([&](Rank& rk) { return layer(rk).w_qkv.data() + (q_w + kv_w) * H; }));
    if (c.qkv_bias) {
      read_rows(w, p + "self_attn.q_proj.bias", nh * hd, 1, q_rows,
                at([&](Rank& rk) { return layer(rk).b_qkv.data(); }));
      read_rows(w, p + "self_attn.k_proj.bias", nkv * hd, 1, kv_rows,
                at([&](Rank& rk) { return layer(rk).b_qkv.data() + q_w; }));
      read_rows(w, p + "self_attn.v_proj.bias", nkv * hd, 1, kv_rows,
                at([&](Rank& rk) { return layer(rk).b_qkv.data() + q_w + kv_w; }));
    }
    if (c.qk_norm) {
      replicate(p + "self_attn.q_norm.weight", hd,
                at([&](Rank& rk) { return layer(rk).q_norm.data(); }));
      replicate(p + "self_attn.k_norm.weight", hd,
                at([&](Rank& rk) { return layer(rk).k_norm.data(); }));
    }
    read_cols(w, p + "self_attn.o_proj.weight", H, nh * hd, q_rows,
              at([&](Rank& rk) { return layer(rk).w_o.data(); }));
    replicate(p + "post_attention_layernorm.weight", H,
              at([&](Rank& rk) { return layer(rk).ffn_norm.data(); }));
    // A rank's fused gate/up: its slice of the gate rows, then the same slice of up.
    read_rows(w, p + "mlp.gate_proj.weight", I, H, inter,
              at([&](Rank& rk) { return layer(rk).w_gate_up.data(); }));
    read_rows(w, p + "mlp.up_proj.weight", I, H, inter,
              at([&](Rank& rk) { return layer(rk).w_gate_up.data() + rk.inter * H; }));
    read_cols(w, p + "mlp.down_proj.weight", H, I, inter,
              at([&](Rank& rk) { return layer(rk).w_down.data(); }));
  }
}

size_t CpuBackend::kv_block_bytes() const {
  return static_cast<size_t>(config_.num_layers) * 2 * config_.num_kv_heads * opts_.block_size *
         config_.head_dim * sizeof(float);
}

std::string CpuBackend::kv_layout() const {
  return fmt::format("f32 [layers {}, 2, kv_heads {}, block {}, head_dim {}]", config_.num_layers,
                     config_.num_kv_heads, opts_.block_size, config_.head_dim);
}

template <typename Fn>
void CpuBackend::for_each_kv_slice(int32_t block, Fn&& fn) {
  const int64_t row = static_cast<int64_t>(opts_.block_size) * config_.head_dim;
  for (int64_t l = 0; l < config_.num_layers; ++l)
    for (int64_t kv = 0; kv < 2; ++kv)
      for (auto& rank : ranks_)
        fn(rank->layers[l].kv.data() + ((block * 2 + kv) * rank->kv_heads) * row,
           rank->kv_heads * row);
}

void CpuBackend::read_kv_block(int32_t block, std::span<std::byte> out) {
  NF_CHECK(out.size() == kv_block_bytes() && block >= 0 && block < num_blocks_,
           "read_kv_block: block {} into {} bytes", block, out.size());
  auto* dst = reinterpret_cast<float*>(out.data());
  for_each_kv_slice(block, [&](const float* pool, int64_t n) { dst = std::copy_n(pool, n, dst); });
}

void CpuBackend::write_kv_block(int32_t block, std::span<const std::byte> in) {
  NF_CHECK(in.size() == kv_block_bytes() && block >= 0 && block < num_blocks_,
           "write_kv_block: block {} from {} bytes", block, in.size());
  const auto* src = reinterpret_cast<const float*>(in.data());
  for_each_kv_slice(block, [&](float* pool, int64_t n) {
    std::copy_n(src, n, pool);
    src += n;
  });
}

void CpuBackend::forward(const ScheduledBatch& b, std::span<float> logits) {
  const int64_t T = b.num_tokens(), S = static_cast<int64_t>(b.sample_rows.size());
  const int64_t V = config_.vocab_size;
  b.check_shape();
  NF_CHECK(static_cast<int64_t>(logits.size()) == S * V,
           "forward: logits holds {} floats, need {}x{}", logits.size(), S, V);
  if (T == 0) return;
  for (int64_t t = 0; t < T; ++t) {
    const int32_t id = b.token_ids[t];
    NF_CHECK(id >= 0 && id < V, "forward: token id {} outside the vocabulary of {}", id, V);
  }
  // The schedule for this batch, its requests regrouped if it asks for groups.
  ScheduledBatch grouped;
  const BatchPlan bp = plan_batch(b, opts_.pipeline, grouped);
  const ScheduledBatch& run = *bp.batch;
  const PipelinePlan& plan = bp.plan;
  nano_operations_ += static_cast<int64_t>(plan.ops.size() * config_.num_layers);
  if (!group_) {
    SingleRankCommunicator one;
    forward_rank(*ranks_[0], one, run, plan, logits);
    return;
  }
  group_->run([&](Communicator& comm) {
    forward_rank(*ranks_[static_cast<size_t>(comm.rank())], comm, run, plan, logits);
  });
}

// One rank's forward; with N ranks, all N run it at once and meet in the collectives. Only
// rank 0 writes `logits`.
void CpuBackend::forward_rank(Rank& rk, Communicator& comm, const ScheduledBatch& b,
                              const PipelinePlan& plan, std::span<float> logits) {
  const ModelConfig& c = config_;
  const int64_t T = b.num_tokens(), S = static_cast<int64_t>(b.sample_rows.size());
  const int64_t H = c.hidden_size, hd = c.head_dim, nh = rk.heads, nkv = rk.kv_heads;
  const int64_t I = rk.inter, V = c.vocab_size, Vr = rk.vocab_rows;
  const int64_t qkv_w = (nh + 2 * nkv) * hd;
  const int N = comm.world_size();
  ThreadPool& pool = rk.pool;
  grow(rk.x, T * H);
  grow(rk.h, T * H);
  grow(rk.qkv, T * qkv_w);
  grow(rk.attn, T * nh * hd);
  grow(rk.gate_up, T * 2 * I);
  grow(rk.act, T * I);
  float* const x = rk.x.data();

  // Vocab-parallel embedding: tokens outside this rank's rows are zero until the all-reduce.
  for (int64_t t = 0; t < T; ++t) {
    const int64_t id = b.token_ids[t];
    if (id >= rk.vocab_begin && id < rk.vocab_end) {
      std::copy_n(rk.embed.data() + (id - rk.vocab_begin) * H, H, x + t * H);
    } else {
      std::fill_n(x + t * H, H, 0.0f);
    }
  }
  comm.all_reduce_sum(x, static_cast<size_t>(T * H));
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const float eps = static_cast<float>(c.rms_norm_eps);
  // Row-parallel o_proj and down_proj: rank 0 adds its partial product to the residual, the
  // others start from zero, and the all-reduce sums them (in rank order) into every rank's x.
  const float beta = comm.rank() == 0 ? 1.0f : 0.0f;
  // The layer as the plan's nano-operations (one of each stage when serial); every rank runs
  // the same plan, so the collectives meet in the same order.
  std::vector<int32_t> seq_local;
  for_each_nano_op(plan, static_cast<int>(rk.layers.size()), [&](size_t op_index, int layer) {
    Layer& l = rk.layers[static_cast<size_t>(layer)];
    const cpu::PagedKv cache{l.kv.data(), num_blocks_, nkv, opts_.block_size, hd};
    const PipelinePlan::Op& pop = plan.ops[op_index];
    const PipelinePlan::Range& r = plan.range(pop.op);
    const int64_t r0 = r.begin, n = r.end - r.begin;
    float* const xr = x + r0 * H;
    float* const hr = rk.h.data() + r0 * H;
    float* const qkv = rk.qkv.data() + r0 * qkv_w;
    float* const attn = rk.attn.data() + r0 * nh * hd;
    switch (pop.op.stage) {
      case Stage::kQkv:
        cpu::rms_norm(pool, xr, l.attn_norm.data(), hr, n, H, eps);
        cpu::gemm_xwt(hr, l.w_qkv.data(), qkv, n, qkv_w, H, 0.0f, &pool);
        if (!l.b_qkv.empty()) {
          for (int64_t t = 0; t < n; ++t)
            for (int64_t i = 0; i < qkv_w; ++i) qkv[t * qkv_w + i] += l.b_qkv[i];
        }
        if (!l.q_norm.empty())
          cpu::head_rms_norm(pool, qkv, qkv_w, n, nh, nkv, hd, l.q_norm.data(), l.k_norm.data(),
                             eps);
        // Rotate Q and K heads together: they are adjacent in each qkv row.
        cpu::rope(pool, qkv, qkv_w, n, nh + nkv, hd,
                  std::span<const int32_t>(b.positions).subspan(r0, n), inv_freq_);
        cpu::kv_cache_write(cache, qkv + nh * hd, qkv + (nh + nkv) * hd, qkv_w,
                            std::span<const int64_t>(b.slot_mapping).subspan(r0, n));
        break;
      case Stage::kAttention: {
        // Requests [req_begin, req_end), their rows rebased to 0.
        seq_local.clear();
        for (int q = r.req_begin; q <= r.req_end; ++q)
          seq_local.push_back(b.seq_indptr[q] - r.begin);
        const cpu::AttentionBatch ab{std::span<const int32_t>(b.positions).subspan(r0, n),
                                     seq_local,
                                     std::span<const int32_t>(b.block_indptr)
                                         .subspan(r.req_begin, r.req_end - r.req_begin + 1),
                                     b.block_ids};
        cpu::paged_attention(pool, qkv, qkv_w, cache, ab, nh, scale, attn);
        break;
      }
      case Stage::kO:
        cpu::gemm_xwt(attn, l.w_o.data(), xr, n, H, nh * hd, beta, &pool);
        comm.all_reduce_sum(xr, static_cast<size_t>(n * H));
        break;
      case Stage::kFfn: {
        float* const gate_up = rk.gate_up.data() + r0 * 2 * I;
        float* const act = rk.act.data() + r0 * I;
        cpu::rms_norm(pool, xr, l.ffn_norm.data(), hr, n, H, eps);
        cpu::gemm_xwt(hr, l.w_gate_up.data(), gate_up, n, 2 * I, H, 0.0f, &pool);
        cpu::silu_and_mul(pool, gate_up, act, n, I);
        cpu::gemm_xwt(act, l.w_down.data(), xr, n, H, I, beta, &pool);
        comm.all_reduce_sum(xr, static_cast<size_t>(n * H));
        break;
      }
    }
  });
  // Final norm and LM head only for the sampled rows.
  grow(rk.rows, S * H);
  for (int64_t s = 0; s < S; ++s) std::copy_n(x + b.sample_rows[s] * H, H, rk.rows.data() + s * H);
  cpu::rms_norm(pool, rk.rows.data(), rk.final_norm.data(), rk.rows.data(), S, H, eps);
  const float* head = rk.lm_head.empty() ? rk.embed.data() : rk.lm_head.data();
  if (N == 1) {
    cpu::gemm_xwt(rk.rows.data(), head, logits.data(), S, V, H, 0.0f, &pool);
    return;
  }
  // Vocab-parallel LM head: this rank's [S, Vr] slice, gathered as [N, S, Vr], then rank 0
  // writes each slice's columns of the [S, V] logits (padding rows past V dropped).
  if (S == 0) return;
  grow(rk.logits, S * Vr);
  grow(rk.gathered, N * S * Vr);
  cpu::gemm_xwt(rk.rows.data(), head, rk.logits.data(), S, Vr, H, 0.0f, &pool);
  comm.all_gather(rk.logits.data(), rk.gathered.data(), static_cast<size_t>(S * Vr));
  if (comm.rank() != 0) return;
  for (int r = 0; r < N; ++r) {
    const int64_t begin = std::min<int64_t>(V, r * Vr),
                  width = std::min<int64_t>(V, begin + Vr) - begin;
    for (int64_t s = 0; s < S; ++s) {
      std::copy_n(rk.gathered.data() + (r * S + s) * Vr, width, logits.data() + s * V + begin);
    }
  }
}

}  // namespace nf
