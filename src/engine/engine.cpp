#include <nanoflow/engine.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <mutex>
#include <random>
#include <thread>
#include <unordered_map>
#include <unordered_set>

#include "common/log.h"
#include "common/status.h"
#include "engine/backend_factory.h"
#include "engine/kv_cache_manager.h"
#include "engine/kv_offload.h"
#include "engine/pipeline_tune.h"
#include "engine/scheduler.h"
#include "model/model_loader.h"
#include "runtime/executor.h"
#include "runtime/pipeline.h"
#include "tokenizer/tokenizer.h"

namespace nanoflow {

using nf::Request;
using nf::RequestState;

namespace {

// What names a model's weights for the KV offload tiers: the model argument, and for files
// their canonical paths, sizes and modification times (a changed checkpoint gets new blocks).
std::string model_identity(const std::string& model) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(model, ec)) return model;  // dummy:<preset>
  std::string id = fs::weakly_canonical(model, ec).string();
  auto add = [&](const fs::path& f) {
    const auto size = fs::file_size(f, ec);
    const auto t = fs::last_write_time(f, ec).time_since_epoch().count();
    id += fmt::format(";{}:{}:{}", f.filename().string(), static_cast<uint64_t>(size),
                      static_cast<int64_t>(t));
  };
  if (fs::is_directory(model, ec)) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(model, ec))
      if (e.is_regular_file()) files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& f : files) add(f);
  } else {
    add(model);
  }
  return id;
}

std::unique_ptr<nf::KvOffload> make_offload(const EngineConfig& c, const nf::Backend& backend) {
  const nf::KvOffloadConfig oc{c.kv_host_gb, c.kv_disk_dir, c.kv_disk_gb};
  if (!c.kv_disk_dir.empty() && c.kv_disk_gb <= 0)
    nf::log_warn("--kv-disk-dir {} without --kv-disk-gb: no disk tier", c.kv_disk_dir);
  if (!oc.enabled()) return nullptr;
  if (!c.enable_prefix_caching)
    nf::fail(
        "--kv-host-gb / --kv-disk-dir: the offload tiers extend the prefix cache, which is off");
  if (backend.kv_block_bytes() == 0)
    nf::fail("--kv-host-gb / --kv-disk-dir: the {} backend cannot copy KV blocks out yet",
             c.device);
  const std::string identity =
      fmt::format("nanoflow-kv;{};{}", model_identity(c.model), backend.kv_layout());
  return std::make_unique<nf::KvOffload>(oc, identity, backend.kv_block_bytes(),
                                         backend.block_size(), backend.host_allocator());
}

}  // namespace

// Design: one thread at a time owns the scheduler, the KV manager and the requests (the
// background loop after start(), else the caller of step()). Other threads reach it only
// through the input queue (new requests, aborts) and the output queue (deltas). Each step
// plans and submits step k, then waits for the results of step k-1 (async) or k (sync), so in
// async mode the host plans one step ahead of the executor.
struct Engine::Impl {
  EngineConfig config;
  std::unique_ptr<nf::Backend> backend;
  std::vector<int32_t> eos_ids;
  std::shared_ptr<const nf::Tokenizer> tokenizer;
  int64_t max_len;
  std::unique_ptr<nf::KvOffload> offload;  // before kv and executor: outlives both
  nf::KvCacheManager kv;
  nf::Scheduler scheduler;
  std::unique_ptr<nf::Executor> executor;

  std::unordered_map<RequestId, std::unique_ptr<Request>> requests;  // owner thread only
  std::vector<RequestId> finished_for_executor;                      // owner thread only
  EngineStats st;

  std::atomic<RequestId> next_id{1};
  mutable std::mutex in_mu;
  std::vector<std::unique_ptr<Request>> incoming;
  std::vector<RequestId> aborts;
  std::condition_variable in_cv;

  std::mutex out_mu;
  std::condition_variable out_cv;
  std::vector<RequestOutput> outputs;

  mutable std::mutex stats_mu;
  EngineStats published;

  std::thread loop;
  std::atomic<bool> running{false};

  Impl(const EngineConfig& c, std::unique_ptr<nf::Backend> b, std::vector<int32_t> eos,
       std::shared_ptr<const nf::Tokenizer> tok)
      : config(c),
        backend(std::move(b)),
        eos_ids(std::move(eos)),
        tokenizer(std::move(tok)),
        max_len(backend->config().max_position_embeddings),
        offload(make_offload(c, *backend)),
        kv(backend->num_kv_blocks(), backend->block_size(), c.enable_prefix_caching),
        scheduler({c.max_batch_tokens, c.max_running_requests, static_cast<int>(max_len),
                   c.kv_admission == "peak"},
                  kv),
        executor(
            std::make_unique<nf::Executor>(*backend, eos_ids, c.async_schedule, sample_vocab())) {
    if (c.kv_admission != "peak" && c.kv_admission != "greedy")
      nf::fail("--kv-admission {}: peak or greedy", c.kv_admission);
    kv.set_offload(offload.get());
  }

  // Ids that can be sampled: the model's rows that the tokenizer also has (an embedding may be
  // padded past the tokenizer; such rows are never sampled). 0: all of the model's.
  int32_t sample_vocab() const {
    if (!tokenizer) return 0;
    return static_cast<int32_t>(
        std::min<int64_t>(tokenizer->vocab_size(), backend->config().vocab_size));
  }
  // Token ids a request may name: in both the model's and the tokenizer's vocabularies.
  int64_t id_limit() const {
    const int64_t s = sample_vocab();
    return s > 0 ? s : backend->config().vocab_size;
  }

  // The offload copies queued by the KV manager, for the executor to run before a forward.
  void take_kv_io(nf::StepInput& in) {
    in.kv_saves = kv.take_saves();
    in.kv_loads = kv.take_loads();
    in.kv_offload = offload.get();
  }

  void finish_kv_copies() {
    const nf::Executor::FinishedCopies done = executor->take_finished_copies();
    kv.finish_saves(done.saved);
    kv.finish_loads(done.loaded);
  }

  void emit(std::vector<RequestOutput>& deltas) {
    if (deltas.empty()) return;
    {
      std::lock_guard<std::mutex> lock(out_mu);
      for (auto& d : deltas) outputs.push_back(std::move(d));
    }
    out_cv.notify_all();
    deltas.clear();
  }

  RequestOutput delta_of(const Request& r) const {
    RequestOutput d;
    d.id = r.id;
    d.index = r.output.index;
    d.prompt_tokens = r.prompt_len;
    d.completion_tokens = r.num_resolved;
    d.cached_prompt_tokens = r.output.cached_prompt_tokens;
    return d;
  }

  void finish(Request& r, FinishReason reason, std::vector<RequestOutput>& deltas, RequestOutput* d,
              const std::string& error = "") {
    scheduler.finish(&r, reason != FinishReason::Abort && reason != FinishReason::Error);
    if (r.sent_to_executor) finished_for_executor.push_back(r.id);
    RequestOutput own;
    if (!d) {
      own = delta_of(r);
      d = &own;
    }
    d->finish_reason = reason;
    d->error = error;
    if (r.text) d->text += r.text->finish();
    if (r.leads_siblings) *r.prompt_ready = true;  // never leave the others waiting
    if (d == &own) deltas.push_back(std::move(own));
    const RequestId id = r.id;
    requests.erase(id);  // destroys r; results still in flight for it are discarded
  }

  void take_inputs(std::vector<RequestOutput>& deltas) {
    std::vector<std::unique_ptr<Request>> in;
    std::vector<RequestId> ab;
    {
      std::lock_guard<std::mutex> lock(in_mu);
      in.swap(incoming);
      ab.swap(aborts);
    }
    for (auto& r : in) {
      Request* raw = r.get();
      try {
        if (offload)
          raw->kv_prefetch =
              kv.prefetch_prefix(std::span<const int32_t>(raw->tokens).first(raw->prompt_len));
      } catch (const std::exception& e) {
        nf::log_error("request {}: {}", raw->id, e.what());
        RequestOutput d = delta_of(*raw);
        d.finish_reason = FinishReason::Error;
        d.error = e.what();
        deltas.push_back(std::move(d));
        if (raw->leads_siblings) *raw->prompt_ready = true;
        continue;
      }
      requests.emplace(r->id, std::move(r));
      scheduler.add(raw);
      st.prompt_tokens += raw->prompt_len;
    }
    for (RequestId id : ab) {
      auto it = requests.find(id);
      if (it != requests.end()) finish(*it->second, FinishReason::Abort, deltas, nullptr);
    }
  }

  // The known prefix of a request's tokens: up to its first unresolved one.
  int64_t known_tokens(const Request& r) const { return r.prompt_len + r.num_resolved; }

  void commit(Request& r) {
    kv.commit_full_blocks(r.tokens, std::min<int64_t>(r.num_computed, known_tokens(r)), r.block_table,
                          r.block_hashes);
  }

  bool schedule_and_submit() {
    const auto t0 = std::chrono::steady_clock::now();
    nf::StepInput in;
    const auto sched = scheduler.schedule(in.batch);
    if (sched.empty()) return false;
    for (const nf::ScheduledRequest& s : sched) {
      Request& r = *s.request;
      if (r.leads_siblings && r.num_computed >= r.prompt_len) *r.prompt_ready = true;
      if (!r.sent_to_executor) {
        r.sent_to_executor = true;
        r.output.cached_prompt_tokens = std::max(r.output.cached_prompt_tokens,
                                                 std::min(r.prompt_len, r.num_computed - s.num_tokens));
        in.new_requests.push_back({r.id, std::vector<int32_t>(r.tokens.begin(), r.tokens.begin() + r.prompt_len),
                                   r.params, r.seed});
      }
      commit(r);
      st.scheduled_tokens += s.num_tokens;
      if (!s.sampled) continue;
      in.sample_ids.push_back(r.id);
      r.tokens.push_back(nf::kTokenFromDevice);
      if (r.num_generated() >= r.params.max_tokens || static_cast<int64_t>(r.tokens.size()) >= max_len)
        r.stop_pending = true;
    }
    in.finished.swap(finished_for_executor);
    take_kv_io(in);
    st.schedule_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    executor->submit(std::move(in));
    ++st.steps;
    return true;
  }

  void process(const nf::StepOutput& out, std::vector<RequestOutput>& deltas) {
    st.forward_ms += out.forward_ms;
    for (size_t i = 0; i < out.ids.size(); ++i) {
      auto it = requests.find(out.ids[i]);
      if (it == requests.end()) continue;  // finished one step ago: the extra token is dropped
      Request& r = *it->second;
      const nf::SampleResult& s = out.results[i];
      r.tokens[known_tokens(r)] = s.token;
      ++r.num_resolved;
      ++st.generated_tokens;
      RequestOutput d = delta_of(r);
      d.token_ids.push_back(s.token);
      d.token_logprobs.push_back(s.logprob);
      if (r.params.logprobs > 0) d.top_logprobs.push_back(s.top);
      const auto& p = r.params;
      const bool is_eos = std::find(eos_ids.begin(), eos_ids.end(), s.token) != eos_ids.end();
      const bool is_stop = std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), s.token) != p.stop_token_ids.end();
      bool stop_string = false;
      try {
        if (r.text) d.text = r.text->push(s.token, stop_string);
      } catch (const std::exception& e) {
        // One request's data (an id its tokenizer lacks, say) fails that request alone.
        nf::log_error("request {}: {}", r.id, e.what());
        finish(r, FinishReason::Error, deltas, &d, e.what());
        deltas.push_back(std::move(d));
        continue;
      }
      if ((is_eos && !p.ignore_eos) || is_stop || stop_string) {
        finish(r, FinishReason::Stop, deltas, &d);
      } else if (r.num_resolved >= p.max_tokens || known_tokens(r) >= max_len) {
        finish(r, FinishReason::Length, deltas, &d);
      } else {
        commit(r);
      }
      deltas.push_back(std::move(d));
    }
  }

  // One iteration; what it finished before a failure is still sent.
  bool step() {
    std::vector<RequestOutput> deltas;
    try {
      return step_into(deltas);
    } catch (...) {
      emit(deltas);
      throw;
    }
  }

  bool step_into(std::vector<RequestOutput>& deltas) {
    if (offload) finish_kv_copies();
    take_inputs(deltas);
    const bool submitted = schedule_and_submit();
    const int depth = config.async_schedule ? 2 : 1;
    while (executor->in_flight() >= depth || (!submitted && executor->in_flight() > 0)) {
      process(executor->wait(), deltas);
      if (!submitted) break;
    }
    // Idle with saves queued (the last requests finished): run them here, nothing is in flight.
    if (!submitted && executor->in_flight() == 0 && kv.has_pending_io()) {
      nf::StepInput io;
      take_kv_io(io);
      executor->kv_io_now(std::move(io));
    }
    // Idle with copies running: they hold blocks, or a request waits for its loads.
    if (!submitted && executor->in_flight() == 0 && kv.num_copying() > 0) {
      executor->wait_copies();
      finish_kv_copies();
    }
    emit(deltas);
    publish_stats();
#ifdef NANOFLOW_DEBUG
    check_integrity();
#endif
    return submitted || executor->in_flight() > 0 || !scheduler.empty();
  }

  void publish_stats() {
    st.num_running = static_cast<int>(scheduler.num_running());
    st.num_waiting = static_cast<int>(scheduler.num_waiting());
    st.kv_blocks_used = kv.num_used_blocks();
    st.kv_blocks_total = kv.num_blocks();
    st.cached_prompt_tokens = kv.stats().prefix_hits;
    st.kv_host_hit_tokens = kv.stats().host_hit_tokens;
    st.kv_disk_hit_tokens = kv.stats().disk_hit_tokens;
    st.kv_saved_blocks = kv.stats().saved_blocks;
    if (offload) {
      const nf::KvTierStats ts = offload->stats();
      st.kv_host_blocks = ts.host_blocks;
      st.kv_disk_blocks = ts.disk_blocks;
      st.kv_disk_enabled = ts.disk_enabled;
    }
    st.preemptions = scheduler.num_preemptions();
    std::lock_guard<std::mutex> lock(stats_mu);
    published = st;
  }

  void check_integrity() const { scheduler.check_integrity(); }

  bool has_work() const {
    std::lock_guard<std::mutex> lock(in_mu);
    return !incoming.empty() || !aborts.empty() || !scheduler.empty() || executor->in_flight() > 0;
  }

  // A step that threw (the executor or the device failed; no single request's data does
  // that, see process()): every request fails with the error and the engine goes on.
  void fail_all(const std::string& error) {
    nf::log_error("engine step failed; failing {} requests: {}", requests.size(), error);
    while (executor->in_flight() > 0) {
      try {
        executor->wait();
      } catch (...) {  // the failed step's error, already being reported
      }
    }
    std::vector<RequestOutput> deltas;
    std::vector<RequestId> ids;
    for (const auto& [id, r] : requests) ids.push_back(id);
    for (RequestId id : ids) {
      auto it = requests.find(id);
      if (it != requests.end()) finish(*it->second, FinishReason::Error, deltas, nullptr, error);
    }
    finished_for_executor.clear();  // recover() forgets them all
    executor->recover();
    emit(deltas);
    publish_stats();
  }

  bool step_fenced() {
    try {
      return step();
    } catch (const std::exception& e) {
      fail_all(e.what());
      return false;
    }
  }

  void run_loop() {
    while (running.load()) {
      if (!step_fenced()) {
        std::unique_lock<std::mutex> lock(in_mu);
        in_cv.wait_for(lock, std::chrono::milliseconds(50),
                       [&] { return !running.load() || !incoming.empty() || !aborts.empty(); });
      }
    }
  }
};

std::unique_ptr<Engine> Engine::create(const EngineConfig& config) {
  if (config.device != "cpu" && config.device != "cuda")
    nf::fail("--device {}: unknown device (cpu or cuda)", config.device);
  nf::PipelineConfig pipeline;
  const bool tune = config.pipeline_file == "auto";
  if (!config.pipeline_file.empty() && !tune) pipeline = nf::load_pipeline_file(config.pipeline_file);
  if (config.pipeline_one_stream) pipeline = nf::one_stream(std::move(pipeline));
  nf::LoadedModel model = nf::load_model(config.model).take();
  std::unique_ptr<nf::Backend> backend = nf::make_backend(config, model, pipeline);
  if (tune && config.device == "cuda") {
    // --pipeline auto: time the candidate schedules on this backend (the CPU backend has nothing
    // to overlap: serial).
    nf::TuneOptions to;
    to.max_batch_tokens = config.max_batch_tokens;
    to.budget_s = config.tune_budget_s;
    const nf::TuneResult r = nf::tune_pipeline(*backend, to);
    for (const auto& [kind, best] : r.report["best"].items())
      nf::log_info("--pipeline auto: {} iterations: {} ({:.2f} ms)", kind,
                   best["schedule"].get<std::string>(), best["ms"].get<double>());
  }
  std::vector<int32_t> eos = model.generation.eos_token_ids;
  if (eos.empty()) eos = model.config.eos_token_ids;
  std::shared_ptr<const nf::Tokenizer> tok;
  if (model.format != "dummy") tok = nf::Tokenizer::load(config.model);
  if (tok)
    for (int32_t e : tok->eos_ids())
      if (std::find(eos.begin(), eos.end(), e) == eos.end()) eos.push_back(e);
  return std::make_unique<Engine>(config, std::move(backend), std::move(eos), std::move(tok));
}

Engine::Engine(const EngineConfig& config, std::unique_ptr<nf::Backend> backend, std::vector<int32_t> eos_ids,
               std::shared_ptr<const nf::Tokenizer> tokenizer)
    : impl_(std::make_unique<Impl>(config, std::move(backend), std::move(eos_ids), std::move(tokenizer))) {}

const nf::Tokenizer* Engine::tokenizer() const { return impl_->tokenizer.get(); }

Engine::~Engine() { stop(); }

const nf::ModelConfig& Engine::model_config() const { return impl_->backend->config(); }
const std::vector<int32_t>& Engine::eos_ids() const { return impl_->eos_ids; }

RequestId Engine::add_request(std::vector<int32_t> prompt, const SamplingParams& params) {
  Impl& m = *impl_;
  const auto& mc = m.backend->config();
  if (prompt.empty()) nf::fail("the prompt is empty");
  // Ids must be in the model's vocabulary and, with a tokenizer, in its too (the rows of an
  // embedding padded past the tokenizer are no tokens).
  const int64_t ids = m.id_limit();
  for (int32_t t : prompt) {
    if (t < 0 || t >= ids)
      nf::fail("prompt token id {} is outside the vocabulary (size {})", t, ids);
  }
  if (static_cast<int64_t>(prompt.size()) >= mc.max_position_embeddings)
    nf::fail("the prompt has {} tokens; the model's context is {}", prompt.size(), mc.max_position_embeddings);
  if (params.max_tokens < 1) nf::fail("max_tokens must be at least 1, got {}", params.max_tokens);
  if (params.min_tokens < 0) nf::fail("min_tokens must be >= 0, got {}", params.min_tokens);
  if (params.min_tokens > params.max_tokens)
    nf::fail("min_tokens ({}) must not exceed max_tokens ({})", params.min_tokens,
             params.max_tokens);
  if (!(params.temperature >= 0)) nf::fail("temperature must be >= 0, got {}", params.temperature);
  if (!(params.top_p > 0 && params.top_p <= 1)) nf::fail("top_p must be in (0, 1], got {}", params.top_p);
  if (!(params.min_p >= 0 && params.min_p <= 1)) nf::fail("min_p must be in [0, 1], got {}", params.min_p);
  if (!(params.repetition_penalty > 0)) nf::fail("repetition_penalty must be > 0, got {}", params.repetition_penalty);
  if (params.logprobs < 0 || params.logprobs > 20) nf::fail("logprobs must be in [0, 20], got {}", params.logprobs);
  for (const auto& [id, bias] : params.logit_bias)
    if (id < 0 || id >= ids)
      nf::fail("logit_bias token id {} is outside the vocabulary (size {})", id, ids);
  for (int32_t id : params.stop_token_ids)
    if (id < 0 || id >= ids)
      nf::fail("stop_token_ids: token id {} is outside the vocabulary (size {})", id, ids);
  // A request must fit the KV pool on its own, or preemption could never make room for it.
  const int64_t max_len = std::min<int64_t>(static_cast<int64_t>(prompt.size()) + params.max_tokens,
                                            mc.max_position_embeddings);
  if (m.kv.blocks_for(max_len) > m.kv.num_blocks())
    nf::fail("the request needs up to {} tokens of KV cache but the pool holds {} (raise --kv-cache-gb)",
             max_len, m.kv.num_blocks() * m.kv.block_size());

  if (params.n < 1 || params.n > 128) nf::fail("n must be in [1, 128], got {}", params.n);
  if (!params.stop.empty() && !m.tokenizer) nf::fail("stop strings need a model with a tokenizer");

  const RequestId first = m.next_id.fetch_add(static_cast<RequestId>(params.n));
  auto ready = params.n > 1 ? std::make_shared<bool>(false) : nullptr;
  std::vector<std::unique_ptr<Request>> made;
  for (int i = 0; i < params.n; ++i) {
    auto r = std::make_unique<Request>();
    r->id = first + static_cast<RequestId>(i);
    r->params = params;
    r->params.n = 1;
    r->prompt_len = static_cast<int>(prompt.size());
    r->tokens = prompt;
    r->seed = params.seed ? *params.seed + static_cast<uint64_t>(i)
                          : (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
    r->output.id = r->id;
    r->output.index = i;
    r->output.prompt_tokens = r->prompt_len;
    r->prompt_ready = ready;
    r->leads_siblings = ready && i == 0;
    if (m.tokenizer) r->text = std::make_unique<nf::TextStream>(*m.tokenizer, params.stop);
    made.push_back(std::move(r));
  }
  {
    std::lock_guard<std::mutex> lock(m.in_mu);
    for (auto& r : made) m.incoming.push_back(std::move(r));
  }
  m.in_cv.notify_all();
  return first;
}

void Engine::abort(RequestId id) {
  {
    std::lock_guard<std::mutex> lock(impl_->in_mu);
    impl_->aborts.push_back(id);
  }
  impl_->in_cv.notify_all();
}

bool Engine::poll_outputs(std::vector<RequestOutput>& out, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(impl_->out_mu);
  impl_->out_cv.wait_for(lock, timeout, [&] { return !impl_->outputs.empty(); });
  if (impl_->outputs.empty()) return false;
  for (auto& o : impl_->outputs) out.push_back(std::move(o));
  impl_->outputs.clear();
  return true;
}

void Engine::start() {
  if (impl_->running.exchange(true)) return;
  impl_->loop = std::thread([this] { impl_->run_loop(); });
}

void Engine::stop() {
  if (!impl_->running.exchange(false)) return;
  impl_->in_cv.notify_all();
  impl_->loop.join();
}

bool Engine::step() {
  NF_CHECK(!impl_->running.load(), "step() while the background loop runs");
  return impl_->step_fenced();
}

bool Engine::has_unfinished() const { return impl_->has_work(); }

std::vector<RequestOutput> Engine::generate(const std::vector<GenerateRequest>& batch) {
  std::vector<RequestId> ids;  // one per completion, in input order
  for (const auto& g : batch) {
    const RequestId first = add_request(g.prompt, g.params);
    for (int i = 0; i < std::max(1, g.params.n); ++i) ids.push_back(first + static_cast<RequestId>(i));
  }
  std::unordered_map<RequestId, RequestOutput> acc;
  for (RequestId id : ids) acc[id].id = id;
  size_t done = 0;
  std::vector<RequestOutput> deltas;
  while (done < ids.size()) {
    if (!impl_->running.load()) step();
    deltas.clear();
    poll_outputs(deltas, std::chrono::milliseconds(impl_->running.load() ? 100 : 0));
    for (const auto& d : deltas) {
      auto it = acc.find(d.id);
      if (it == acc.end()) continue;
      it->second.prompt_tokens = d.prompt_tokens;
      it->second.index = d.index;
      it->second.append(d);
      done += d.finished();
    }
  }
  std::vector<RequestOutput> outs;
  outs.reserve(ids.size());
  for (RequestId id : ids) outs.push_back(std::move(acc[id]));
  return outs;
}

std::string Engine::op_profile_json() const {
  return impl_->backend->op_profile_json();
}

EngineStats Engine::stats() const {
  EngineStats s;
  {
    std::lock_guard<std::mutex> lock(impl_->stats_mu);
    s = impl_->published;
  }
  const nf::Backend::DeviceTime d = impl_->backend->device_time();
  s.device_busy_ms = d.busy_ms;
  s.device_idle_ms = d.idle_ms;
  return s;
}

void Engine::check_integrity() const { impl_->check_integrity(); }

}  // namespace nanoflow
