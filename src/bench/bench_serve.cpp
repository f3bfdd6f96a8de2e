#include "bench/bench_serve.h"

#include <fmt/format.h>
#include <sys/resource.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <ctime>
#include <deque>
#include <fstream>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <sstream>

#include "bench/datasets.h"
#include "common/shell.h"
#include "common/status.h"

namespace nf::server {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// ---------------------------------------------------------------------------------------------
// Where requests go.

struct ServerUrl {
  std::string host;  // for connecting (no brackets)
  std::string port;
  std::string prefix;  // path before /v1, without a trailing slash
};

ServerUrl parse_base_url(const std::string& url) {
  const std::string scheme = "http://";
  if (url.rfind("https://", 0) == 0)
    fail("--base-url {}: https is not supported; give the server's plain http:// address", url);
  if (url.rfind(scheme, 0) != 0) fail("--base-url {}: expected http://HOST[:PORT][/PATH]", url);
  const std::string rest = url.substr(scheme.size());
  const size_t slash = rest.find('/');
  const std::string authority = rest.substr(0, slash);
  ServerUrl u;
  u.prefix = slash == std::string::npos ? "" : rest.substr(slash);
  while (!u.prefix.empty() && u.prefix.back() == '/') u.prefix.pop_back();
  // OpenAI clients take base URLs ending in /v1; the endpoints below carry their own /v1.
  if (u.prefix.size() >= 3 && u.prefix.compare(u.prefix.size() - 3, 3, "/v1") == 0)
    u.prefix.resize(u.prefix.size() - 3);
  size_t colon = authority.rfind(':');
  if (!authority.empty() && authority[0] == '[') {  // [IPv6]:port
    const size_t close = authority.find(']');
    if (close == std::string::npos) fail("--base-url {}: unterminated IPv6 address", url);
    u.host = authority.substr(1, close - 1);
    colon = authority.find(':', close);
  } else {
    u.host = authority.substr(0, colon);
  }
  u.port = colon == std::string::npos ? "80" : authority.substr(colon + 1);
  if (u.host.empty() || u.port.empty()) fail("--base-url {}: expected http://HOST[:PORT]", url);
  return u;
}

// What every request of a run shares.
struct Connection {
  tcp::resolver::results_type endpoints;
  std::string host_header;
  std::string target;  // the endpoint's path
  std::string api_key;
  double timeout_s = 600;
};

// ---------------------------------------------------------------------------------------------
// One streaming request on its own connection.

class StreamClient : public std::enable_shared_from_this<StreamClient> {
 public:
  using Done = std::function<void(RequestResult)>;

  StreamClient(net::io_context& ioc, const Connection& conn, std::string body, int prompt_len,
               Done done)
      : stream_(ioc), conn_(conn), done_(std::move(done)) {
    req_ = http::request<http::string_body>(http::verb::post, conn.target, 11);
    req_.set(http::field::host, conn.host_header);
    req_.set(http::field::user_agent, "nanoflow-bench");
    req_.set(http::field::content_type, "application/json");
    req_.set(http::field::accept, "text/event-stream");
    if (!conn.api_key.empty()) req_.set(http::field::authorization, "Bearer " + conn.api_key);
    req_.keep_alive(false);
    req_.body() = std::move(body);
    req_.prepare_payload();
    result_.prompt_len = prompt_len;
  }

  void start() {
    start_ = Clock::now();  // as vLLM: connecting is part of the request's latency
    arm_timer();
    stream_.async_connect(
        conn_.endpoints, [self = shared_from_this()](beast::error_code ec, const tcp::endpoint&) {
          if (ec) return self->finish("connect: " + ec.message());
          self->arm_timer();
          http::async_write(self->stream_, self->req_,
                            [self](beast::error_code ec, size_t) { self->on_write(ec); });
        });
  }

 private:
  void arm_timer() {
    stream_.expires_after(std::chrono::duration_cast<std::chrono::nanoseconds>(
        std::chrono::duration<double>(conn_.timeout_s)));
  }

  void on_write(beast::error_code ec) {
    if (ec) return finish("send: " + ec.message());
    parser_.emplace();
    parser_->body_limit(boost::none);  // a stream is as long as the server makes it
    arm_timer();
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->finish("response header: " + ec.message());
                              self->status_ = self->parser_->get().result_int();
                              self->read_body();
                            });
  }

  void read_body() {
    if (parser_->is_done()) return finish("");
    parser_->get().body().data = chunk_;
    parser_->get().body().size = sizeof chunk_;
    arm_timer();
    http::async_read_some(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->on_body(ec); });
  }

  void on_body(beast::error_code ec) {
    const size_t got = sizeof chunk_ - parser_->get().body().size;
    if (got > 0) {
      if (status_ == 200) {
        feed(chunk_, got);
      } else if (error_body_.size() < 2000) {
        error_body_.append(chunk_, std::min(got, 2000 - error_body_.size()));
      }
    }
    if (ec == http::error::need_buffer) ec = {};
    if (ec == http::error::end_of_stream || ec == net::error::eof) {
      return finish(saw_done_ || parser_->is_done() ? "" : "connection closed mid-stream");
    }
    if (ec) return finish("response body: " + ec.message());
    read_body();
  }

  // SSE: "data: <json>" lines, events separated by blank lines, ':' comments.
  void feed(const char* data, size_t n) {
    sse_.append(data, n);
    size_t start = 0, nl;
    while ((nl = sse_.find('\n', start)) != std::string::npos) {
      std::string_view line(sse_.data() + start, nl - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      handle_line(line);
      start = nl + 1;
    }
    sse_.erase(0, start);
  }

  void handle_line(std::string_view line) {
    if (line.rfind("data:", 0) != 0) return;  // blank, comment, event:, id:, retry:
    line.remove_prefix(5);
    while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    if (line == "[DONE]") {
      saw_done_ = true;
      return;
    }
    const Clock::time_point now = Clock::now();
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      if (stream_error_.empty()) stream_error_ = "bad JSON in the event stream";
      return;
    }
    if (const auto e = j.find("error"); e != j.end() && !e->is_null()) {
      stream_error_ = e->is_object() && e->contains("message") && (*e)["message"].is_string()
                          ? (*e)["message"].get<std::string>()
                          : e->dump();
      return;
    }
    if (const auto u = j.find("usage"); u != j.end() && u->is_object()) {
      if (const auto c = u->find("completion_tokens"); c != u->end() && c->is_number_integer())
        usage_tokens_ = c->get<int>();
    }
    const auto choices = j.find("choices");
    if (choices == j.end() || !choices->is_array() || choices->empty()) return;
    if (!carries_token((*choices)[0])) return;
    if (chunks_ == 0) {
      result_.ttft = seconds_between(start_, now);
    } else {
      result_.itl.push_back(seconds_between(last_, now));
    }
    last_ = now;
    ++chunks_;
  }

  // Servers may close a stream with a chunk that only carries finish_reason (empty text, no
  // token ids); that chunk is not a token, so it must not add an inter-token gap. Any other
  // chunk is (empty text included: a special token, or bytes of an unfinished UTF-8 character).
  static bool carries_token(const json& c) {
    if (!c.is_object()) return false;
    const auto text = c.find("text");
    if (text != c.end() && text->is_string() && !text->get_ref<const std::string&>().empty())
      return true;
    const auto ids = c.find("token_ids");
    if (ids != c.end() && ids->is_array() && !ids->empty()) return true;
    const auto fr = c.find("finish_reason");
    return fr == c.end() || fr->is_null();
  }

  void finish(const std::string& transport_error) {
    if (finished_) return;
    finished_ = true;
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
    if (!transport_error.empty()) {
      result_.error = transport_error;
    } else if (status_ != 200) {
      std::string body = error_body_;
      const json j = json::parse(body, nullptr, false);
      if (!j.is_discarded() && j.is_object() && j.contains("error") && j["error"].is_object() &&
          j["error"].contains("message"))
        body = j["error"]["message"].dump();
      result_.error = fmt::format("HTTP {}: {}", status_, body);
    } else if (!stream_error_.empty()) {
      result_.error = stream_error_;
    } else if (chunks_ == 0) {
      result_.error = "no tokens were streamed";
    } else {
      result_.success = true;
      result_.latency = seconds_between(start_, last_);
      result_.output_tokens = usage_tokens_ >= 0 ? usage_tokens_ : chunks_;
    }
    auto done = std::move(done_);
    done(std::move(result_));
  }

  beast::tcp_stream stream_;
  const Connection& conn_;
  Done done_;
  http::request<http::string_body> req_;
  beast::flat_buffer buffer_;
  std::optional<http::response_parser<http::buffer_body>> parser_;
  char chunk_[16384];
  std::string sse_;         // bytes after the last complete line
  std::string error_body_;  // a non-200 response's body (its first 2000 bytes)
  std::string stream_error_;
  unsigned status_ = 0;
  bool saw_done_ = false;
  bool finished_ = false;
  int chunks_ = 0;  // chunks carrying tokens
  int usage_tokens_ = -1;
  Clock::time_point start_, last_;
  RequestResult result_;
};

// ---------------------------------------------------------------------------------------------
// One run: arrivals on a timer, a cap on requests in flight.

struct PreparedRequest {
  std::string body;
  int prompt_len = 0;
  int output_len = 0;
  double send_at_s = 0;  // offset from the run's start
};

class Run {
 public:
  Run(net::io_context& ioc, const Connection& conn, std::vector<PreparedRequest> reqs,
      int max_concurrency, bool progress)
      : ioc_(ioc),
        conn_(conn),
        reqs_(std::move(reqs)),
        results_(reqs_.size()),
        max_concurrency_(max_concurrency),
        progress_(progress),
        timer_(ioc) {}

  // Runs to the last completion; returns the wall time in seconds.
  double execute() {
    t0_ = Clock::now();
    end_ = t0_;
    arrive();
    ioc_.run();
    ioc_.restart();
    if (progress_) std::fprintf(stderr, "\n");
    return seconds_between(t0_, end_);
  }
  std::vector<RequestResult>& results() { return results_; }

 private:
  // Like vLLM, a request arrives on schedule and then waits for a concurrency slot; its clock
  // starts when it is sent.
  void arrive() {
    const double now = seconds_between(t0_, Clock::now());
    while (next_ < reqs_.size() && reqs_[next_].send_at_s <= now) waiting_.push_back(next_++);
    pump();
    if (next_ >= reqs_.size()) return;
    timer_.expires_at(t0_ + std::chrono::duration_cast<Clock::duration>(
                                std::chrono::duration<double>(reqs_[next_].send_at_s)));
    timer_.async_wait([this](beast::error_code ec) {
      if (!ec) arrive();
    });
  }

  void pump() {
    while (!waiting_.empty() && (max_concurrency_ <= 0 || in_flight_ < max_concurrency_)) {
      const size_t i = waiting_.front();
      waiting_.pop_front();
      ++in_flight_;
      PreparedRequest& r = reqs_[i];
      std::make_shared<StreamClient>(ioc_, conn_, std::move(r.body), r.prompt_len,
                                     [this, i](RequestResult res) { on_done(i, std::move(res)); })
          ->start();
    }
  }

  void on_done(size_t i, RequestResult res) {
    results_[i] = std::move(res);
    --in_flight_;
    ++done_;
    end_ = Clock::now();
    if (progress_) std::fprintf(stderr, "\r  %zu/%zu requests done", done_, reqs_.size());
    pump();
  }

  net::io_context& ioc_;
  const Connection& conn_;
  std::vector<PreparedRequest> reqs_;
  std::vector<RequestResult> results_;
  const int max_concurrency_;
  const bool progress_;
  net::steady_timer timer_;
  Clock::time_point t0_, end_;
  size_t next_ = 0, done_ = 0;
  int in_flight_ = 0;
  std::deque<size_t> waiting_;
};

// ---------------------------------------------------------------------------------------------
// Setup helpers.

std::string completion_body(const std::string& model, const std::vector<int32_t>& prompt,
                            int max_tokens) {
  const json j = {{"model", model},
                  {"prompt", prompt},
                  {"max_tokens", max_tokens},
                  {"temperature", 0.0},
                  {"ignore_eos", true},
                  {"stream", true},
                  {"stream_options", {{"include_usage", true}}}};
  return j.dump();
}

// GET a small JSON document (e.g. /v1/models) synchronously.
json http_get_json(const Connection& conn, const std::string& target) {
  net::io_context ioc;
  beast::tcp_stream stream(ioc);
  stream.expires_after(std::chrono::seconds(30));
  stream.connect(conn.endpoints);
  http::request<http::empty_body> req(http::verb::get, target, 11);
  req.set(http::field::host, conn.host_header);
  req.set(http::field::user_agent, "nanoflow-bench");
  if (!conn.api_key.empty()) req.set(http::field::authorization, "Bearer " + conn.api_key);
  http::write(stream, req);
  beast::flat_buffer buf;
  http::response<http::string_body> res;
  http::read(stream, buf, res);
  beast::error_code ignored;
  stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
  if (res.result_int() != 200) fail("HTTP {}: {}", res.result_int(), res.body().substr(0, 300));
  const json j = json::parse(res.body(), nullptr, false);
  if (j.is_discarded()) fail("the response is not JSON");
  return j;
}

std::string utc_now() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// Thousands of requests at once need thousands of sockets: lift the soft limit to the hard one.
void raise_fd_limit() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// A rate: "inf", "trace" or a positive number of requests per second.
struct Rate {
  std::string text;
  double per_s = 0;  // 0 for inf and trace
  bool trace = false;
};

Rate parse_rate(const std::string& s) {
  Rate r{s};
  if (s == "inf") return r;
  if (s == "trace") {
    r.trace = true;
    return r;
  }
  try {
    size_t used = 0;
    r.per_s = std::stod(s, &used);
    if (used != s.size() || !(r.per_s > 0) || !std::isfinite(r.per_s))
      throw std::invalid_argument(s);
  } catch (const std::exception&) {
    fail("request rate '{}': expected a positive number, 'inf' or 'trace'", s);
  }
  return r;
}

// The requests' lengths and trace arrivals, before prompts are drawn.
struct Workload {
  std::vector<TraceRequest> requests;
  bool has_timestamps = false;
};

Workload load_workload(const BenchServeConfig& c) {
  Workload w;
  if (c.dataset.empty()) {
    w.requests.assign(static_cast<size_t>(c.num_prompts),
                      TraceRequest{c.random_input_len, c.random_output_len, 0, {}});
    return w;
  }
  // Read the whole trace when requests may be filtered out; else only what is used.
  std::vector<TraceRequest> all = load_trace(c.dataset, c.max_model_len > 0 ? 0 : c.num_prompts);
  for (auto& r : all) {
    if (c.max_model_len > 0 && r.input_len + r.output_len > c.max_model_len) continue;
    w.has_timestamps = w.has_timestamps || r.arrival_s != 0;
    w.requests.push_back(std::move(r));
    if (static_cast<int>(w.requests.size()) == c.num_prompts) break;
  }
  if (w.requests.empty())
    fail("{}: no request fits --max-model-len {}", c.dataset, c.max_model_len);
  if (static_cast<int>(w.requests.size()) < c.num_prompts)
    std::fprintf(stderr, "bench serve: %s has only %zu usable requests; using them all\n",
                 c.dataset.c_str(), w.requests.size());
  // Arrivals relative to the first request used.
  const double t0 = w.requests.front().arrival_s;
  for (auto& r : w.requests) r.arrival_s -= t0;
  return w;
}

// Prompts and send times of one run. Each run of a sweep draws fresh prompt ids (so a server's
// prefix cache does not carry one run's prompts into the next) but the same lengths, hash-block
// structure and, scaled by the rate, the same arrival pattern.
std::vector<PreparedRequest> prepare_run(const BenchServeConfig& c, const Workload& w,
                                         const Rate& rate, const std::string& model, int run) {
  const PromptVocab vocab = prompt_vocab(c.vocab_size);
  const uint64_t run_seed = c.seed + 0x9e3779b97f4a7c15ULL * static_cast<uint64_t>(run + 1);
  std::mt19937_64 prompt_rng(run_seed);
  std::mt19937_64 arrival_rng(c.seed);
  std::exponential_distribution<double> gap(1.0);
  std::vector<PreparedRequest> out;
  out.reserve(w.requests.size());
  double t = 0;
  for (const TraceRequest& tr : w.requests) {
    PreparedRequest p;
    p.prompt_len = tr.input_len;
    p.output_len = tr.output_len;
    p.body = completion_body(model, trace_prompt(tr, vocab, run_seed, prompt_rng), tr.output_len);
    if (rate.trace) {
      p.send_at_s = tr.arrival_s;
    } else if (rate.per_s > 0) {
      // Poisson process: the first request at 0, then exponential gaps of mean 1/rate.
      p.send_at_s = t;
      t += gap(arrival_rng) / rate.per_s;
    }
    out.push_back(std::move(p));
  }
  return out;
}

void print_table(const json& m, const Rate& rate, int max_concurrency, const Slo& slo) {
  auto line = [](const std::string& name, const std::string& value) {
    std::printf("%-40s %-10s\n", name.c_str(), value.c_str());
  };
  auto num = [&](const char* key, int digits = 2) {
    return fmt::format("{:.{}f}", m[key].get<double>(), digits);
  };
  auto section = [](const std::string& title) {
    const int pad = std::max(0, 50 - static_cast<int>(title.size()));
    std::printf("%s%s%s\n", std::string(pad / 2, '-').c_str(), title.c_str(),
                std::string(pad - pad / 2, '-').c_str());
  };
  std::printf("============ Serving Benchmark Result ============\n");
  line("Request rate (req/s):", rate.text);
  line("Maximum request concurrency:",
       max_concurrency > 0 ? std::to_string(max_concurrency) : "none");
  line("Successful requests:", std::to_string(m["completed"].get<int>()));
  line("Failed requests:", std::to_string(m["failed"].get<int>()));
  line("Benchmark duration (s):", num("duration"));
  line("Total input tokens:", std::to_string(m["total_input_tokens"].get<int64_t>()));
  line("Total generated tokens:", std::to_string(m["total_output_tokens"].get<int64_t>()));
  line("Request throughput (req/s):", num("request_throughput"));
  if (!slo.empty()) line("Request goodput (req/s):", num("request_goodput"));
  line("Output token throughput (tok/s):", num("output_throughput"));
  line("Total token throughput (tok/s):", num("total_token_throughput"));
  const struct {
    const char* key;
    const char* title;
    const char* label;
  } groups[] = {{"ttft", "Time to First Token", "TTFT"},
                {"tpot", "Time per Output Token (excl. 1st token)", "TPOT"},
                {"itl", "Inter-token Latency", "ITL"},
                {"e2el", "End-to-end Latency", "E2EL"}};
  for (const auto& g : groups) {
    section(g.title);
    line(fmt::format("Mean {} (ms):", g.label), num(fmt::format("mean_{}_ms", g.key).c_str()));
    line(fmt::format("Median {} (ms):", g.label), num(fmt::format("median_{}_ms", g.key).c_str()));
    line(fmt::format("P99 {} (ms):", g.label), num(fmt::format("p99_{}_ms", g.key).c_str()));
  }
  std::printf("==================================================\n");
  std::fflush(stdout);
}

class BenchServeApp : public CLI::App {
 public:
  BenchServeApp()
      : CLI::App(
            "Serving benchmark: Poisson arrivals of streaming /v1/completions requests "
            "against any OpenAI-compatible server",
            "serve") {
    BenchServeConfig& c = config;
    add_option("--base-url", c.base_url, "Server address, e.g. http://127.0.0.1:8000")->required();
    add_option("--endpoint", c.endpoint, "Completions path")->capture_default_str();
    add_option("--model", c.model, "Model name in the requests (default: the first of /v1/models)");
    add_option("--api-key", c.api_key, "Send 'Authorization: Bearer KEY'");
    auto* ds = add_option("--dataset", c.dataset,
                          "Trace: Azure LLM inference CSV, ShareGPT length CSV or Mooncake JSONL "
                          "(lengths, timestamps and prefix hash blocks from the file)");
    auto* ri = add_option("--random-input-len", c.random_input_len, "Prompt tokens (random ids)")
                   ->check(CLI::PositiveNumber);
    auto* ro = add_option("--random-output-len", c.random_output_len, "Output tokens per request")
                   ->check(CLI::PositiveNumber);
    ds->excludes(ri)->excludes(ro);
    ri->needs(ro);
    ro->needs(ri);
    auto* rr = add_option("--request-rate", rate,
                          "Requests/s of the Poisson arrivals, 'inf' (all at once) or 'trace' "
                          "(the dataset's timestamps)");
    auto* sw = add_option("--sweep", c.request_rates, "Rates to run in turn, e.g. 1,4,inf")
                   ->delimiter(',');
    rr->excludes(sw);
    add_option("--max-concurrency", c.max_concurrency, "Requests in flight at most (0: no cap)")
        ->check(CLI::NonNegativeNumber)
        ->capture_default_str();
    add_option("--num-prompts", c.num_prompts, "Requests per run")
        ->check(CLI::PositiveNumber)
        ->required();
    add_option("--seed", c.seed, "Seed of the prompts and arrivals")->capture_default_str();
    add_option("--slo", c.slo, "Goodput SLOs in ms, e.g. ttft=500,tpot=50 (also e2el=)");
    add_option("--result-json", c.result_json, "Write the results (with command, commit, date)");
    add_option("--vocab-size", c.vocab_size, "Prompt ids are drawn from [1000, vocab-size)")
        ->check(CLI::Range(2, 1 << 30))
        ->capture_default_str();
    add_option("--max-model-len", c.max_model_len,
               "Skip dataset requests with input + output longer than this (0: keep all)")
        ->check(CLI::NonNegativeNumber);
    add_option("--timeout", c.timeout_s, "Fail a request after this many seconds without data")
        ->check(CLI::PositiveNumber)
        ->capture_default_str();
  }

  BenchServeConfig config;
  std::string rate;
};

}  // namespace


// ---------------------------------------------------------------------------------------------
// The command.

int run_bench_serve(const BenchServeConfig& c, const std::string& command) {
  if (c.dataset.empty() && (c.random_input_len <= 0 || c.random_output_len <= 0))
    fail("bench serve: give --dataset FILE or --random-input-len N --random-output-len M");
  if (c.request_rates.empty()) fail("bench serve: give --request-rate R or --sweep R1,R2,...");
  std::vector<Rate> rates;
  for (const auto& s : c.request_rates) rates.push_back(parse_rate(s));
  const Slo slo = parse_slo(c.slo);
  const Workload workload = load_workload(c);
  for (const Rate& r : rates)
    if (r.trace && !workload.has_timestamps)
      fail("--request-rate trace: {} has no timestamps",
           c.dataset.empty() ? "random input" : c.dataset);

  const ServerUrl url = parse_base_url(c.base_url);
  Connection conn;
  conn.host_header = url.port == "80" ? url.host : url.host + ":" + url.port;
  conn.target = url.prefix + c.endpoint;
  conn.api_key = c.api_key;
  conn.timeout_s = c.timeout_s;
  {
    net::io_context ioc;
    tcp::resolver resolver(ioc);
    beast::error_code ec;
    conn.endpoints = resolver.resolve(url.host, url.port, ec);
    if (ec) fail("--base-url {}: cannot resolve {}: {}", c.base_url, url.host, ec.message());
  }
  std::signal(SIGPIPE, SIG_IGN);
  raise_fd_limit();

  std::string model = c.model;
  if (model.empty()) {
    const std::string target = url.prefix + "/v1/models";
    try {
      const json models = http_get_json(conn, target);
      if (!models.contains("data") || !models["data"].is_array() || models["data"].empty() ||
          !models["data"][0].contains("id"))
        fail("no model listed");
      model = models["data"][0]["id"].get<std::string>();
    } catch (const std::exception& e) {
      fail("GET {}{}: {} (is the server up? or pass --model)", c.base_url, "/v1/models", e.what());
    }
  }

  net::io_context ioc;
  // A first request checks the server and the request format before anything is measured
  // (as vLLM does). Its prompt is drawn apart, so it warms nothing the runs will reuse.
  {
    std::mt19937_64 rng(c.seed ^ 0x5bd1e995ULL);
    const TraceRequest& first = workload.requests.front();
    const auto prompt =
        random_prompt(std::min(first.input_len, 32), prompt_vocab(c.vocab_size), rng);
    std::vector<PreparedRequest> test(1);
    test[0].prompt_len = static_cast<int>(prompt.size());
    test[0].output_len = std::min(first.output_len, 4);
    test[0].body = completion_body(model, prompt, test[0].output_len);
    Run run(ioc, conn, std::move(test), 0, false);
    run.execute();
    const RequestResult& r = run.results()[0];
    if (!r.success) fail("test request to {}{} failed: {}", c.base_url, c.endpoint, r.error);
  }

  const bool progress = isatty(fileno(stderr));
  const std::string commit = git_commit();
  json runs = json::array();
  for (size_t i = 0; i < rates.size(); ++i) {
    std::fprintf(stderr, "bench serve: %zu requests to %s at rate %s (max concurrency %s)\n",
                 workload.requests.size(), c.base_url.c_str(), rates[i].text.c_str(),
                 c.max_concurrency > 0 ? std::to_string(c.max_concurrency).c_str() : "none");
    Run run(ioc, conn, prepare_run(c, workload, rates[i], model, static_cast<int>(i)),
            c.max_concurrency, progress);
    const double duration = run.execute();
    json m = compute_serve_metrics(run.results(), duration, slo);
    print_table(m, rates[i], c.max_concurrency, slo);
    json meta;
    meta["command"] = command;
    meta["git_commit"] = commit;
    meta["date"] = utc_now();
    meta["base_url"] = c.base_url;
    meta["endpoint"] = c.endpoint;
    meta["model"] = model;
    meta["dataset"] = c.dataset.empty() ? "random" : c.dataset;
    if (c.dataset.empty()) {
      meta["random_input_len"] = c.random_input_len;
      meta["random_output_len"] = c.random_output_len;
    }
    meta["request_rate"] = rates[i].per_s > 0 ? json(rates[i].per_s) : json(rates[i].text);
    meta["max_concurrency"] = c.max_concurrency > 0 ? json(c.max_concurrency) : json(nullptr);
    meta["num_prompts"] = static_cast<int>(workload.requests.size());
    meta["seed"] = c.seed;
    meta["slo"] = {{"ttft_ms", slo.ttft_ms ? json(*slo.ttft_ms) : json(nullptr)},
                   {"tpot_ms", slo.tpot_ms ? json(*slo.tpot_ms) : json(nullptr)},
                   {"e2el_ms", slo.e2el_ms ? json(*slo.e2el_ms) : json(nullptr)}};
    meta["failed_requests"] = m["failed"];
    meta.update(m);
    runs.push_back(std::move(meta));
  }
  if (!c.result_json.empty()) {
    json out;
    if (rates.size() == 1) {
      out = runs[0];
    } else {
      out = {{"command", command},
             {"git_commit", commit},
             {"date", utc_now()},
             {"base_url", c.base_url},
             {"model", model},
             {"dataset", c.dataset.empty() ? "random" : c.dataset},
             {"request_rates", c.request_rates},
             {"sweep", runs}};
    }
    std::ofstream f(c.result_json);
    if (!f) fail("{}: cannot write", c.result_json);
    f << out.dump(2) << "\n";
    if (!f) fail("{}: cannot write", c.result_json);
  }
  return 0;
}

CLI::App* add_bench_serve_command(CLI::App* bench) {
  return bench->add_subcommand(std::make_shared<BenchServeApp>());
}

int run_bench_serve_command(CLI::App* serve, const std::string& command) {
  auto* app = dynamic_cast<BenchServeApp*>(serve);
  NF_CHECK(app != nullptr, "run_bench_serve_command needs the app of add_bench_serve_command");
  BenchServeConfig c = app->config;
  if (!app->rate.empty()) c.request_rates = {app->rate};
  return run_bench_serve(c, command);
}

}  // namespace nf::server
