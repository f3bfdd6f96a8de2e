#include <nanoflow/engine.h>

#include <algorithm>
#include <map>
#include <random>

#include "backends/cpu/cpu_backend.h"
#include "common/status.h"
#include "engine/kv_cache_manager.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "model/model_loader.h"

namespace nanoflow {

using nf::Request;
using nf::RequestState;

struct Engine::Impl {
  EngineConfig config;
  std::unique_ptr<nf::Backend> backend;
  std::vector<int32_t> eos_ids;
  nf::KvCacheManager kv;
  nf::Scheduler scheduler;
  nf::Sampler sampler;
  std::map<RequestId, std::unique_ptr<Request>> requests;
  RequestId next_id = 1;
  nf::ScheduledBatch batch;
  std::vector<float> logits;  // [S, vocab]

  Impl(const EngineConfig& c, std::unique_ptr<nf::Backend> b, std::vector<int32_t> eos)
      : config(c),
        backend(std::move(b)),
        eos_ids(std::move(eos)),
        kv(backend->num_kv_blocks(), backend->block_size()),
        scheduler({c.max_batch_tokens, c.max_running_requests,
                   static_cast<int>(backend->config().max_position_embeddings)},
                  kv) {}

  void finish(Request& r, FinishReason reason) {
    scheduler.finish(&r);
    r.output.finish_reason = reason;
  }

  // Records a sampled token and decides whether the request is done.
  void on_token(Request& r, const nf::SampleResult& s) {
    r.tokens.push_back(s.token);
    r.output.token_ids.push_back(s.token);
    r.output.token_logprobs.push_back(s.logprob);
    if (r.params.logprobs > 0) r.output.top_logprobs.push_back(s.top);
    const auto& p = r.params;
    const bool is_eos = std::find(eos_ids.begin(), eos_ids.end(), s.token) != eos_ids.end();
    const bool is_stop = std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), s.token) !=
                         p.stop_token_ids.end();
    if ((is_eos && !p.ignore_eos) || is_stop) {
      finish(r, FinishReason::Stop);
    } else if (r.num_generated() >= p.max_tokens ||
               static_cast<int64_t>(r.tokens.size()) >= backend->config().max_position_embeddings) {
      finish(r, FinishReason::Length);
    }
  }
};

std::unique_ptr<Engine> Engine::create(const EngineConfig& config) {
  nf::LoadedModel model = nf::load_model(config.model).take();
  if (config.device != "cpu") {
    nf::fail("--device {}: this build runs models on the CPU only (the CUDA backend is not "
             "implemented yet)", config.device);
  }
  nf::CpuBackendConfig cpu;
  cpu.block_size = config.block_size;
  cpu.kv_cache_gb = config.kv_cache_gb;
  cpu.num_kv_blocks = config.num_kv_blocks;
  cpu.threads = config.threads;
  auto backend = std::make_unique<nf::CpuBackend>(model.config, *model.weights, cpu);
  std::vector<int32_t> eos = model.generation.eos_token_ids;
  if (eos.empty()) eos = model.config.eos_token_ids;
  return std::make_unique<Engine>(config, std::move(backend), std::move(eos));
}

Engine::Engine(const EngineConfig& config, std::unique_ptr<nf::Backend> backend,
               std::vector<int32_t> eos_ids)
    : impl_(std::make_unique<Impl>(config, std::move(backend), std::move(eos_ids))) {}

Engine::~Engine() = default;

const nf::ModelConfig& Engine::model_config() const { return impl_->backend->config(); }
const std::vector<int32_t>& Engine::eos_ids() const { return impl_->eos_ids; }

RequestId Engine::add_request(std::vector<int32_t> prompt, const SamplingParams& params) {
  Impl& m = *impl_;
  const auto& mc = m.backend->config();
  if (prompt.empty()) nf::fail("the prompt is empty");
  for (int32_t t : prompt) {
    if (t < 0 || t >= mc.vocab_size)
      nf::fail("prompt token id {} is outside the vocabulary (size {})", t, mc.vocab_size);
  }
  if (static_cast<int64_t>(prompt.size()) >= mc.max_position_embeddings)
    nf::fail("the prompt has {} tokens; the model's context is {}", prompt.size(),
             mc.max_position_embeddings);
  if (params.max_tokens < 1) nf::fail("max_tokens must be at least 1, got {}", params.max_tokens);
  if (params.temperature < 0) nf::fail("temperature must be >= 0, got {}", params.temperature);
  if (params.top_p <= 0 || params.top_p > 1) nf::fail("top_p must be in (0, 1], got {}", params.top_p);
  if (params.min_p < 0 || params.min_p > 1) nf::fail("min_p must be in [0, 1], got {}", params.min_p);
  if (params.logprobs < 0) nf::fail("logprobs must be >= 0, got {}", params.logprobs);
  // A request must fit the KV pool on its own, or preemption could never make room for it.
  const int64_t max_len = std::min<int64_t>(static_cast<int64_t>(prompt.size()) + params.max_tokens,
                                            mc.max_position_embeddings);
  if (m.kv.blocks_for(max_len) > m.kv.num_blocks())
    nf::fail("the request needs up to {} tokens of KV cache but the pool holds {} (raise "
             "--kv-cache-gb)", max_len, m.kv.num_blocks() * m.kv.block_size());

  auto r = std::make_unique<Request>();
  r->id = m.next_id++;
  r->params = params;
  r->prompt_len = static_cast<int>(prompt.size());
  r->tokens = std::move(prompt);
  r->seed = params.seed ? *params.seed
                        : (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  r->output.id = r->id;
  r->output.prompt_tokens = r->prompt_len;
  Request* raw = r.get();
  m.requests.emplace(r->id, std::move(r));
  m.scheduler.add(raw);
  return raw->id;
}

void Engine::abort(RequestId id) {
  auto it = impl_->requests.find(id);
  if (it == impl_->requests.end() || it->second->state == RequestState::Finished) return;
  impl_->finish(*it->second, FinishReason::Abort);
}

bool Engine::has_unfinished() const { return !impl_->scheduler.empty(); }

std::vector<RequestOutput> Engine::step() {
  Impl& m = *impl_;
  const auto scheduled = m.scheduler.schedule(m.batch);
  std::vector<RequestOutput> outs;
  if (scheduled.empty()) return outs;
  const int64_t V = m.backend->config().vocab_size;
  m.logits.resize(m.batch.sample_rows.size() * V);
  m.backend->forward(m.batch, m.logits);
  size_t row = 0;
  std::vector<int32_t> banned;
  for (const nf::ScheduledRequest& s : scheduled) {
    Request& r = *s.request;
    r.num_computed += s.num_tokens;
    if (!s.sampled) continue;
    banned.clear();
    if (r.num_generated() < r.params.min_tokens) {
      banned = r.params.stop_token_ids;
      if (!r.params.ignore_eos) banned.insert(banned.end(), m.eos_ids.begin(), m.eos_ids.end());
    }
    const std::span<const float> lrow(m.logits.data() + row * V, static_cast<size_t>(V));
    ++row;
    nf::SampleContext ctx;
    ctx.params = &r.params;
    ctx.prompt = std::span<const int32_t>(r.tokens.data(), r.prompt_len);
    ctx.output = std::span<const int32_t>(r.tokens.data() + r.prompt_len, r.num_generated());
    ctx.banned = banned;
    ctx.seed = r.seed;
    m.on_token(r, m.sampler.sample(lrow, ctx));
    outs.push_back(r.output);
  }
#ifdef NANOFLOW_DEBUG
  m.scheduler.check_integrity();
#endif
  return outs;
}

std::vector<RequestOutput> Engine::generate(const std::vector<GenerateRequest>& batch) {
  std::vector<RequestId> ids;
  ids.reserve(batch.size());
  for (const auto& g : batch) ids.push_back(add_request(g.prompt, g.params));
  while (has_unfinished()) step();
  std::vector<RequestOutput> outs;
  outs.reserve(ids.size());
  for (RequestId id : ids) {
    auto it = impl_->requests.find(id);
    outs.push_back(it->second->output);
    impl_->requests.erase(it);
  }
  return outs;
}

}  // namespace nanoflow
