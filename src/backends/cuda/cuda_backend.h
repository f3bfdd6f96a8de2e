// The CUDA backend: bf16 weights and a paged bf16 KV cache on one GPU, cuBLASLt GEMMs (fp32
// accumulate) and our own kernels for the rest, all on one stream owned by the backend. Runs the
// same ScheduledBatch contract as the CPU backend. forward_sample() samples on the GPU (only
// tokens and requested log-probabilities come back); forward() leaves fp32 logits on the host.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "backends/cuda/gemm.h"
#include "backends/cuda/green_context.h"
#include "backends/cuda/sampling.h"
#include "backends/cuda/tensor.h"
#include "model/model_config.h"
#include "model/weight_source.h"
#include "runtime/backend.h"
#include "runtime/pipeline.h"

namespace nf::cuda::fi {
class BatchAttention;
}
namespace nf::cuda {
class NcclCommunicator;
class PeerAllReduce;
}

namespace nf {

struct CudaBackendConfig {
  int block_size = 16;
  double gpu_memory_utilization = 0.90;  // share of the GPU's memory the backend may hold
  int64_t num_kv_blocks = 0;             // exact KV pool size (tests); 0: fill the memory share
  int device = 0;                        // CUDA device index
  int max_batch_tokens = 2048;           // activations are sized for this many tokens per forward
  // Attention kernel: "auto" (FlashInfer when built in and the head_dim has a kernel, else our
  // own), "flashinfer" (required), or "native" (our own paged kernel, the test twin).
  std::string attention = "auto";
  // CUDA graphs: the token count is padded to a bucket (multiples of 8 up to 128, of 32 up to
  // 512, then of 128) and the work between two attentions is replayed from a graph captured
  // per bucket (attention itself runs eagerly: its plan changes every step). Off: every kernel
  // is launched eagerly on the exact token count.
  bool cuda_graphs = true;
  // Nano-batch schedules (runtime/pipeline.h). A split schedule runs its nano-operations on
  // their streams (one cuBLASLt handle and workspace per stream, SM-count targets as given),
  // ordered by CUDA events along the plan's row dependencies, attention as one FlashInfer batch
  // per run of decode or prefill requests of each attention nano-batch; eagerly (no graphs) and
  // without the op profile. Needs FlashInfer.
  PipelineConfig pipeline;
  // --attention tc on the whole GPU: the streaming kernel (true, the default: as fast in the
  // engine, ~11% fewer joules per GB) or the per-request one (false; comparisons). Inside an SM
  // partition the streaming kernel always runs.
  bool tc_decode_streams = true;
  // > 0: the N-th split iteration's timeline, each nano-operation's start and end on its stream
  // (CUDA events), as `TRACE {json}` lines on stderr (a diagnostic: it synchronizes).
  int pipeline_trace = 0;
  // Times every op of forwards [profile_first_step, +profile_steps) with CUDA events (-1: off);
  // op_profile_json() then reports per-op time, FLOPs and bytes.
  int profile_first_step = -1;
  int profile_steps = 5;
  // Tensor parallelism (CudaTpBackend makes the ranks): this backend is rank tp_rank of tp_size
  // on `device`. It holds its shard of the weights (whole heads of Q/K/V and O, a 1/tp_size
  // share of the FFN, a block of vocabulary rows of the embedding and LM head) and of the KV
  // cache (its KV heads), and `comm` carries the collectives: a bf16 all-reduce after the
  // embedding, o_proj and down_proj, and an all-gather of the LM head's logits. Rank 0 alone
  // returns logits and samples. tp_size 1: the whole model, no collectives.
  int tp_rank = 0, tp_size = 1;
  cuda::NcclCommunicator* comm = nullptr;
  // When set (--tp-allreduce peer), the bf16 all-reduces it accepts go through it instead of
  // NCCL (peer_allreduce.h); the all-gather stays NCCL's.
  cuda::PeerAllReduce* peer_allreduce = nullptr;
};

class CudaBackend final : public Backend {
 public:
  // Reads every weight from the source one tensor at a time (host fp32 -> bf16 -> device), then
  // sizes the KV pool. rope_inv_freq: [head_dim / 2], nf::rope_inv_freq(config.rope, head_dim)
  // (computed by the caller: this library links before the model code that defines it).
  // Throws nf::Error when there is no such device or the model does not fit.
  CudaBackend(const ModelConfig& config, const WeightSource& weights,
              std::span<const float> rope_inv_freq, const CudaBackendConfig& opts);
  ~CudaBackend() override;
  CudaBackend(const CudaBackend&) = delete;
  CudaBackend& operator=(const CudaBackend&) = delete;

  const ModelConfig& config() const override { return config_; }
  int block_size() const override { return opts_.block_size; }
  int64_t num_kv_blocks() const override { return num_blocks_; }
  void forward(const ScheduledBatch& batch, std::span<float> logits) override;
  bool samples_on_device() const override { return true; }
  void forward_sample(const ScheduledBatch& batch, const DeviceSampleBatch& sampling,
                      DeviceSampleResult& out) override;
  static constexpr int kMaxLogprobs = 20;
  std::string op_profile_json() const override;
  DeviceTime device_time() const override;
  // Replaces the nano-batch schedules (`nanoflow tune` times candidates one after another).
  void set_pipeline(const PipelineConfig& pipeline) override;
  // KV offload: one block's [layers, 2, kv_heads, block_size, head_dim] bf16. Saves and loads
  // each have a lane (a lowest-priority stream and a staging area), so that both directions of
  // the link are busy at once; each lane serves one thread at a time. A save gathers up to
  // kKvCopyMaxBlocks blocks into its staging with one kernel, then copies each block to its
  // pinned host buffer; a load is the reverse. Neither waits for stream_: the caller starts a
  // copy once no forward still writes the blocks. read/write_kv_block are the same, waited for.
  // With tensor parallelism the host block is still the whole model's (as kv_layout() says):
  // each rank copies its KV heads' share of it.
  size_t kv_block_bytes() const override;
  std::string kv_layout() const override;
  void read_kv_block(int32_t block, std::span<std::byte> out) override;
  void write_kv_block(int32_t block, std::span<const std::byte> in) override;
  uint64_t start_kv_save(std::span<const int32_t> blocks, std::span<std::byte* const> dst) override;
  uint64_t start_kv_load(std::span<const int32_t> blocks,
                         std::span<const std::byte* const> src) override;
  void wait_kv_copy(uint64_t ticket) override;
  HostAllocator host_allocator() const override;
  // The attention kernel in use: "tc" (decode rows; FlashInfer prefill), "flashinfer" or "native".
  const char* attention_kernel() const {
    return tc_decode_ ? "tc" : fi_attn_ ? "flashinfer" : "native";
  }

 private:
  struct Layer {
    cuda::DeviceBuffer attn_norm;  // [hidden] bf16
    cuda::DeviceBuffer w_qkv;      // [(heads + 2 * kv_heads) * head_dim, hidden] bf16
    cuda::DeviceBuffer b_qkv;      // [(heads + 2 * kv_heads) * head_dim] bf16; empty without bias
    cuda::DeviceBuffer q_norm;     // [head_dim] bf16 (Qwen3); empty without q/k norm
    cuda::DeviceBuffer k_norm;     // [head_dim] bf16
    cuda::DeviceBuffer w_o;        // [hidden, heads * head_dim] bf16
    cuda::DeviceBuffer ffn_norm;   // [hidden] bf16
    cuda::DeviceBuffer w_gate_up;  // [2 * intermediate, hidden] bf16: gate rows, then up rows
    cuda::DeviceBuffer w_down;     // [hidden, intermediate] bf16
    cuda::DeviceBuffer kv;         // [num_blocks, 2, kv_heads, block_size, head_dim] bf16
  };
  struct PinnedFree {
    void operator()(void* p) const;
  };

  // Part of one tensor (HF name, [rows, cols] row-major) for upload: rows [r0, r1) and columns
  // [c0, c1), then pad_rows zero rows.
  struct WeightPart {
    std::string name;
    int64_t rows = 0, cols = 0, r0 = 0, r1 = 0, c0 = 0, c1 = 0, pad_rows = 0;
  };
  // Reads the parts as consecutive row ranges of one new bf16 device matrix.
  cuda::DeviceBuffer upload(const WeightSource& w, const std::vector<WeightPart>& parts);
  void allocate_kv_pool();
  size_t local_kv_block_bytes() const;  // this rank's share of a block, all layers
  // Copies the batch's integer metadata to the device in one transfer; returns the max context.
  int64_t upload_metadata(const ScheduledBatch& b);
  void run_layers(const ScheduledBatch& b, int64_t max_context);
  // The layers (and the final norm) as the nano-operations of `plan` on their streams; the
  // batch's metadata is uploaded and the embedding not yet run.
  void run_pipelined(const ScheduledBatch& b, const PipelinePlan& plan);
  // stream_sms: the SMs of the stream's green partition (0: the whole GPU); for attention, the
  // decode grid (NanoOp::sm_target or the partition's). runs: for attention, which of its runs
  // (decode and prefill, decode only, prefill only).
  enum class Runs { kAll, kDecode, kPrefill };
  void run_nano_op(const ScheduledBatch& b, const PipelinePlan& plan, const NanoOp& op,
                   size_t layer, cudaStream_t stream, int stream_sms, cuda::Gemm& gemm,
                   Runs runs = Runs::kAll);
  bool run_model(const ScheduledBatch& b);
  // The token count the dense ops run on: T, or its CUDA-graph bucket.
  int64_t padded_tokens(int64_t T) const;
  // Segment s of the dense ops over Tp rows: s = 0 the embedding and layer 0 up to its K/V
  // write; 0 < s < L the rest of layer s-1 after attention and layer s up to its K/V write;
  // s = L the rest of the last layer and the final norm. Attention runs between segments.
  void run_segment(int s, int64_t Tp);
  // Runs segment s, from its graph when graphs are on (captured on the second use of a bucket,
  // after one eager run has loaded its kernels and planned its GEMMs).
  void launch_segment(int s, int64_t Tp);
  // Tensor parallel: sums the bf16 `x` over the ranks in place, on `stream` (a no-op for one
  // rank); profiled as `op` when on stream_.
  void all_reduce(const cuda::TensorView& x, cudaStream_t stream, const char* op);
  // Attention of layer li over the batch's T rows (FlashInfer's two batches, or our kernel).
  void run_attention(const ScheduledBatch& b, size_t li);
  void size_attention_splits(int64_t rows, int64_t max_context);
  // --attention tc: the tensor-core decode kernel (decode_attention.cu) over the decode
  // requests [r0, r1) of the batch (their rows are contiguous), on layer li's cache, with
  // FlashInfer's page lists: qo_indptr and page_indptr are device arrays of r1 - r0 + 1 entries
  // rebased to the run. splits > 1 needs `workspace` for r1 - r0 rows.
  void run_tc_decode(const ScheduledBatch& b, int r0, int r1, const int32_t* qo_indptr,
                     const int32_t* page_indptr, size_t li, int splits,
                     const cuda::TensorView& workspace, cudaStream_t stream, int stream_sms = 0);
  bool tc_decode_ = false;
  void clear_graphs();
  void finish_step();
  // Op profiling: mark() records an event after an op when this step is profiled; the time
  // since the previous mark is the op's. finish_step() folds the marks into op_stats_.
  void mark(const char* op, double flops, double bytes);
  struct OpStat {
    double ms = 0, flops = 0, bytes = 0;
    int64_t calls = 0;
  };
  int64_t step_ = 0;
  bool profiling_ = false;
  // Device timeline: events at each forward's start and end (the previous end kept).
  cudaEvent_t step_start_ = nullptr, step_end_ = nullptr, prev_end_ = nullptr;
  bool have_prev_end_ = false;
  DeviceTime device_time_;  // guarded by profile_mu_
  std::vector<cudaEvent_t> events_;
  struct Mark {
    const char* op;
    double flops, bytes;
  };
  std::vector<Mark> marks_;
  std::map<std::string, OpStat> op_stats_;
  double profiled_ms_ = 0;
  int64_t profiled_steps_ = 0, profiled_tokens_ = 0, profiled_decode_rows_ = 0;
  mutable std::mutex profile_mu_;
  ModelConfig config_;  // the model
  // This rank's shapes (config_ when tp_size is 1): heads, KV heads and intermediate size over
  // tp_size, vocab_size the rank's vocabulary rows (ceil(vocab / tp_size)), the first of which
  // is token vocab_begin_.
  ModelConfig local_;
  int64_t vocab_begin_ = 0;
  CudaBackendConfig opts_;
  // The nano-batch pipeline's collectives: one stream (NCCL needs one order of collectives on
  // every rank) and, per nano-operation and layer parity, the event its GEMM records for it.
  cudaStream_t comm_stream_ = nullptr;
  std::vector<cudaEvent_t> comm_events_;
  cudaStream_t stream_ = nullptr;
  // KV offload copies (start_kv_save, start_kv_load): a lane per direction, the layers' pool
  // bases, and one event per copy in flight (by ticket; finished ones are reused), under kv_mu_.
  struct CopyLane {
    cudaStream_t stream = nullptr;
    cuda::DeviceBuffer stage;  // kKvCopyMaxBlocks blocks
  };
  CopyLane kv_lanes_[2];  // saves, loads
  std::vector<std::byte*> kv_layer_ptrs_;
  std::mutex kv_mu_;
  uint64_t kv_tickets_ = 0;
  std::unordered_map<uint64_t, cudaEvent_t> kv_copies_;
  std::vector<cudaEvent_t> kv_free_events_;
  // Copies blocks between the pool and host buffers on a lane; returns the ticket of their event.
  uint64_t kv_copy(CopyLane& lane, std::span<const int32_t> blocks,
                   std::span<std::byte* const> host, bool save);
  int sm_count_ = 0;
  int64_t num_blocks_ = 0;
  std::unique_ptr<cuda::Gemm> gemm_;
  // Requests regrouped for a schedule with groups (run_model); kept for the step.
  ScheduledBatch grouped_;
  std::vector<float> staging_f32_;  // host staging of one tensor while loading, then freed
  std::vector<uint16_t> staging_bf16_;
  cuda::DeviceBuffer embed_;       // [vocab, hidden] bf16
  cuda::DeviceBuffer final_norm_;  // [hidden] bf16
  cuda::DeviceBuffer lm_head_;     // [vocab, hidden] bf16; empty when tied to embed_
  cuda::DeviceBuffer inv_freq_;    // [head_dim / 2] f32
  std::vector<Layer> layers_;

  // Activations for up to max_batch_tokens tokens (T below).
  cuda::DeviceBuffer residual_;        // [T, hidden] bf16, the residual stream
  cuda::DeviceBuffer h_;               // [T, hidden] bf16, normed input / GEMM output
  cuda::DeviceBuffer qkv_;             // [T, (heads + 2 * kv_heads) * head_dim] bf16
  cuda::DeviceBuffer attn_;            // [T, heads * head_dim] bf16
  cuda::DeviceBuffer gate_up_;         // [T, 2 * intermediate] bf16
  cuda::DeviceBuffer act_;             // [T, intermediate] bf16
  cuda::DeviceBuffer rows_;            // [S <= T, hidden] bf16, the final-normed sample rows
  cuda::DeviceBuffer logits_;          // [S <= T, vocab] f32 (tensor parallel: rank 0 only)
  cuda::DeviceBuffer logits_local_;    // tensor parallel: [S, vocab rows] f32, this rank's
  cuda::DeviceBuffer logits_gathered_;  // tensor parallel: [tp_size, S, vocab rows] f32
  cuda::DeviceBuffer error_;           // [1] i32, the embedding lookups' out-of-range flag
  cuda::DeviceBuffer attn_workspace_;  // u8, grown to the largest split-K need seen

  // Batch metadata, host (pinned) and device, same layout (see upload_metadata), grown on need.
  std::unique_ptr<std::byte, PinnedFree> meta_host_;
  size_t meta_host_bytes_ = 0;
  cuda::DeviceBuffer meta_dev_;
  cuda::TensorView ids_, positions_, seq_indptr_, block_indptr_, block_ids_, sample_rows_, slots_;
  // FlashInfer's view of the batch (in the same blob): per request the pages that hold its
  // context (ceil(context / block_size) of its blocks) and the fill of the last one.
  cuda::TensorView fi_page_indptr_, fi_page_ids_, fi_last_page_len_;
  std::vector<int32_t> fi_page_indptr_host_, fi_page_ids_host_, fi_last_page_len_host_;
  // The batch runs as two FlashInfer batches, each with its own plan (and so its own CTA tile):
  // the leading single-token requests (decodes; the scheduler puts them first) and the rest
  // (prefill chunks), whose query and page indptrs are rebased to start at 0.
  int64_t fi_decodes_ = 0;
  cuda::TensorView fi_prefill_qo_indptr_, fi_prefill_page_indptr_;
  std::vector<int32_t> fi_prefill_qo_indptr_host_, fi_prefill_page_indptr_host_;
  std::unique_ptr<cuda::fi::BatchAttention> fi_attn_;     // decodes; null: our own kernel
  std::unique_ptr<cuda::fi::BatchAttention> fi_prefill_;  // prefill chunks
  // Per-step attention state set by run_layers for run_attention.
  int attn_splits_ = 1;
  cuda::TensorView attn_ws_view_;
  double attn_flops_[2] = {0, 0}, attn_bytes_[2] = {0, 0};
  // CUDA graphs per padded token count: one executable graph per segment (null until captured)
  // and how often the bucket was run. They bake in the metadata blob's address: cleared when it
  // is reallocated.
  struct GraphSet {
    std::vector<cudaGraphExec_t> segments;
    int64_t uses = 0;
  };
  std::map<int64_t, GraphSet> graphs_;
  // Nano-batch pipeline state (run_pipelined): streams 1.. with their GEMM handles (stream 0 is
  // stream_ with gemm_), one event per nano-operation of a layer and one per stream to join, the
  // FlashInfer batches of the attention runs, and their rebased indptrs (host and device).
  struct NanoStream {
    cudaStream_t stream = nullptr;
    std::unique_ptr<cuda::Gemm> gemm;
    cudaEvent_t done = nullptr;
  };
  std::vector<NanoStream> nano_streams_;
  // Streams in hard SM partitions, per PipelineSchedule::stream_sms (created on first use; a
  // failed creation is kept as `error`, warned about once, and the plan runs on nano_streams_).
  struct GreenSet {
    std::unique_ptr<cuda::GreenPartitions> parts;
    std::vector<NanoStream> streams;  // one per partition, in stream_sms order
    std::string error;
  };
  std::map<std::vector<int>, GreenSet> green_sets_;
  std::vector<cudaEvent_t> nano_events_;
  // Per attention nano-operation and layer parity: its prefill runs done on another stream.
  std::vector<cudaEvent_t> nano_prefill_events_;
  int64_t pipelined_calls_ = 0;  // run_pipelined calls (CudaBackendConfig::pipeline_trace)
  cudaEvent_t nano_fork_ = nullptr;
  struct AttnRun {
    int req_begin = 0, req_end = 0;  // requests of one kind (decode or prefill), contiguous
    size_t index_offset = 0;         // into nano_meta_: qo indptr, then page indptr
    size_t fi = 0;                   // its FlashInfer batch in fi_runs_
  };
  std::vector<std::vector<AttnRun>> attn_runs_;  // per attention nano-batch
  std::vector<std::unique_ptr<cuda::fi::BatchAttention>> fi_runs_;  // one per run, grown
  std::vector<int32_t> nano_meta_host_;
  cuda::DeviceBuffer nano_meta_dev_;
  int64_t graph_captures_ = 0;
  std::unique_ptr<int32_t, PinnedFree> error_host_;  // [1] i32
  std::unique_ptr<cuda::GpuSampler> sampler_;
  // Sampling's per-step transfers (row parameters up; tokens and logprobs down), grown on need.
  std::unique_ptr<std::byte, PinnedFree> sample_host_;
  size_t sample_host_bytes_ = 0;
  cuda::DeviceBuffer sample_dev_;
};

}  // namespace nf
