#include "server/http_session.h"

#include <fmt/format.h>

#include <boost/asio/dispatch.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "common/json_file.h"
#include "common/log.h"
#include "common/status.h"

namespace nf::server {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

std::string http_response(int status, const std::string& content_type, std::string body,
                          bool keep_alive,
                          const std::vector<std::pair<std::string, std::string>>& extra = {}) {
  http::response<http::string_body> res{static_cast<http::status>(status), 11};
  res.set(http::field::server, "nanoflow");
  res.set(http::field::content_type, content_type);
  for (const auto& [k, v] : extra) res.set(k, v);
  res.keep_alive(keep_alive);
  res.body() = std::move(body);
  res.prepare_payload();
  std::ostringstream os;
  os << res;
  return os.str();
}

std::string chunk(const std::string& data) {
  return fmt::format("{:x}\r\n", data.size()) + data + "\r\n";
}

// The request field an Engine::add_request error names ("logit_bias token id 9 is outside
// ..."); the prompt when it names none.
std::string engine_error_param(const std::string& msg, bool chat) {
  static const char* const kFields[] = {
      "max_tokens", "min_tokens", "temperature", "top_p", "min_p",         "repetition_penalty",
      "logprobs",   "logit_bias", "n",           "stop",  "stop_token_ids"};
  std::string word = msg.substr(0, msg.find(' '));
  if (!word.empty() && word.back() == ':') word.pop_back();
  for (const char* f : kFields)
    if (word == f) return chat && word == "logprobs" ? "top_logprobs" : word;
  return chat ? "messages" : "prompt";
}

class Session;

// The engine requests of one HTTP request. deliver() runs on the dispatcher thread and only
// queues; the session drains the queue on its strand.
struct Generation final : Sink, std::enable_shared_from_this<Generation> {
  GenSpec spec;
  std::vector<nanoflow::RequestId> ids;      // every engine request (prompts x n)
  std::vector<nanoflow::RequestOutput> acc;  // [prompts x n] everything generated so far
  std::vector<bool> started;                 // [prompts x n] a chunk was sent
  int remaining = 0;                         // choices not finished
  // Keeps the connection alive until the generation finishes (every engine request finishes,
  // aborted ones too); cleared then, which breaks the cycle with Session::gen_. Read and written
  // on the strand only.
  std::shared_ptr<Session> session;
  net::any_io_executor strand;  // set before the first submit, then constant

  std::mutex mu;
  std::vector<std::pair<int, nanoflow::RequestOutput>> pending;  // guarded by mu
  bool posted = false;                                           // guarded by mu

  void deliver(int choice, nanoflow::RequestOutput&& delta) override;
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(tcp::socket&& socket, ServerState& st) : stream_(std::move(socket)), st_(st) {
    ++st_.connections;
  }
  ~Session() { --st_.connections; }

  void run() {
    net::dispatch(stream_.get_executor(),
                  beast::bind_front_handler(&Session::do_read, shared_from_this()));
  }

  // On the strand: applies the deltas queued for g. Formatting never throws on engine data
  // (unknown ids print as token_id:N); should it, the generation fails alone.
  void drain(const std::shared_ptr<Generation>& g) {
    try {
      drain_queued(g);
    } catch (const std::exception& e) {
      nf::log_error("serve: sending a response failed: {}", e.what());
      for (auto id : g->ids) st_.engine.abort(id);
      g->remaining = 0;
      g->session.reset();
      if (g == gen_) {
        gen_.reset();
        close();
      }
    }
  }

  void drain_queued(const std::shared_ptr<Generation>& g) {
    std::vector<std::pair<int, nanoflow::RequestOutput>> batch;
    {
      std::lock_guard<std::mutex> lock(g->mu);
      batch.swap(g->pending);
      g->posted = false;
    }
    if (g == gen_ && g->spec.stream) too_slow();
    for (auto& [choice, d] : batch) {
      const bool finished = d.finished();
      // Aborted (client gone or too slow): only count the finishing requests down.
      if (g == gen_) {
        auto& acc = g->acc[static_cast<size_t>(choice)];
        acc.prompt_tokens = d.prompt_tokens;
        acc.index = choice;
        acc.append(d);
        if (g->spec.stream) {
          for (auto& piece : split_delta(std::move(d), st_.api)) {
            const bool first = !g->started[static_cast<size_t>(choice)];
            g->started[static_cast<size_t>(choice)] = true;
            enqueue(chunk(stream_chunk(g->spec, choice, piece, first, st_.api)));
          }
        }
      }
      if (finished && g->remaining > 0) --g->remaining;
    }
    if (g->remaining > 0) return;
    if (g == gen_)
      finish_generation();
    else
      g->session.reset();
  }

 private:
  void do_read() {
    parser_.emplace();
    parser_->body_limit(static_cast<uint64_t>(st_.config.max_body_bytes));
    parser_->header_limit(64 * 1024);
    // An idle keep-alive connection, or a client that sends its request too slowly, is closed
    // after this long (a slowloris holds a socket for at most that).
    stream_.expires_after(
        std::chrono::milliseconds(static_cast<int64_t>(st_.config.idle_timeout_s * 1000)));
    http::async_read(stream_, buffer_, *parser_,
                     beast::bind_front_handler(&Session::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, size_t) {
    if (closed_) return;
    if (ec == http::error::body_limit) {
      keep_alive_ = false;
      linger_ = true;
      counted_ = true;
      return send_error(
          {413, fmt::format("the request body is larger than {} bytes", st_.config.max_body_bytes),
           "", "body_too_large"});
    }
    if (ec == http::error::end_of_stream || ec == net::error::eof ||
        ec == net::error::connection_reset || ec == beast::error::timeout ||
        ec == net::error::operation_aborted) {
      return close();
    }
    if (ec) {
      if (ec.category() != http::make_error_code(http::error::bad_target).category())
        return close();
      keep_alive_ = false;
      return send_error(
          {400, fmt::format("malformed HTTP request: {}", ec.message()), "", "bad_request"});
    }
    stream_.expires_never();
    // The fence: whatever one request's data makes any step throw becomes that request's
    // error response, and the connection (and the server) go on.
    try {
      handle(parser_->release());
    } catch (const ApiError& e) {
      fail_request(e);
    } catch (const nf::Error& e) {
      fail_request({400, e.what(), "", "invalid_request"});
    } catch (const std::exception& e) {
      nf::log_error("serve: request failed: {}", e.what());
      fail_request({500, fmt::format("internal error: {}", e.what()), "", "internal_error"});
    }
  }

  // An error response for the request being handled, unless one was already queued; requests
  // it had submitted are aborted.
  void fail_request(const ApiError& e) {
    if (gen_) {
      for (auto id : gen_->ids) st_.engine.abort(id);
      gen_->session.reset();
      gen_.reset();
    }
    if (request_done_ || closed_) return;
    keep_alive_ = false;
    send_error(e);
  }

  void handle(http::request<http::string_body>&& req) {
    keep_alive_ = req.keep_alive();
    arrival_ = Clock::now();
    std::string path(req.target());
    if (auto q = path.find('?'); q != std::string::npos) path.resize(q);
    const bool get = req.method() == http::verb::get, post = req.method() == http::verb::post;
    if (path == "/health") {
      if (!get) return method_not_allowed();
      if (st_.draining.load()) return respond(503, "application/json", "{}");
      return respond(200, "application/json", "{}");
    }
    if (path == "/metrics") {
      if (!get) return method_not_allowed();
      return respond(200, "text/plain; version=0.0.4", st_.metrics.render(st_.engine.stats()));
    }
    counted_ = path.rfind("/v1/", 0) == 0;
    if (counted_ && !st_.config.api_key.empty()) {
      const auto auth = req[http::field::authorization];
      if (auth != "Bearer " + st_.config.api_key)
        return send_error({401, "Incorrect or missing API key; send 'Authorization: Bearer <key>'",
                           "", "invalid_api_key"});
    }
    if (path == "/v1/models") {
      if (!get) return method_not_allowed();
      return respond(200, "application/json", json_dump(models_response(st_.api)));
    }
    if (path == "/v1/completions" || path == "/v1/chat/completions") {
      if (!post) return method_not_allowed();
      return start_generation(req.body(), path == "/v1/chat/completions");
    }
    send_error({404, fmt::format("no route for {} {}", std::string(req.method_string()), path), "",
                "not_found"});
  }

  void method_not_allowed() { send_error({405, "method not allowed", "", "method_not_allowed"}); }

  void start_generation(const std::string& text, bool chat) {
    json body;
    try {
      body = nf::parse_json(text);
    } catch (const nf::JsonError& e) {
      switch (e.kind()) {
        case nf::JsonError::Kind::kUtf8:
          return send_error({400, "the request body is not valid UTF-8", "", "invalid_utf8"});
        case nf::JsonError::Kind::kDepth:
          return send_error(
              {400,
               fmt::format("the request body is nested deeper than {} levels", nf::kMaxJsonDepth),
               "", "json_too_deep"});
        case nf::JsonError::Kind::kNumber:
          return send_error({400, e.what(), "", "number_out_of_range"});
        case nf::JsonError::Kind::kSyntax:
          break;
      }
      return send_error({400, e.what(), "", "invalid_json"});
    }
    if (!body.is_object())
      return send_error({400, "the request body must be a JSON object", "", "invalid_json"});
    if (st_.draining.load())
      return send_error({503, "the server is shutting down", "", "shutting_down"}, true);
    auto g = std::make_shared<Generation>();
    try {
      g->spec = parse_generation(body, chat, st_.api);
    } catch (const ApiError& e) {
      return send_error(e);
    }
    // The queue limit counts sequences (prompts x n), which is what waits in the engine.
    const int n = g->spec.params.n;
    const size_t choices = g->spec.prompts.size() * static_cast<size_t>(n);
    if (choices > static_cast<size_t>(st_.config.max_waiting_requests))
      return send_error(
          {400,
           fmt::format("the request asks for {} sequences ({} prompts x n = {}); "
                       "the server queues at most {}",
                       choices, g->spec.prompts.size(), n, st_.config.max_waiting_requests),
           chat ? "n" : "prompt", "too_many_sequences"});
    const int waiting = st_.dispatcher.in_flight() - st_.engine.stats().num_running;
    if (static_cast<size_t>(std::max(0, waiting)) + choices >
        static_cast<size_t>(st_.config.max_waiting_requests))
      return send_error(
          {503,
           fmt::format(
               "the waiting queue is full ({} sequences waiting, {} asked for, at most {}); "
               "retry later",
               waiting, choices, st_.config.max_waiting_requests),
           "", "queue_full"},
          true);
    g->acc.resize(choices);
    g->started.assign(choices, false);
    g->remaining = static_cast<int>(choices);
    g->session = shared_from_this();
    g->strand = stream_.get_executor();
    gen_ = g;
    for (size_t p = 0; p < g->spec.prompts.size(); ++p) {
      try {
        const auto first = st_.dispatcher.submit(g->spec.prompts[p], g->spec.params, g,
                                                 static_cast<int>(p) * n, arrival_);
        for (int i = 0; i < n; ++i) g->ids.push_back(first + static_cast<nanoflow::RequestId>(i));
      } catch (const std::exception& e) {
        for (auto id : g->ids) st_.engine.abort(id);
        g->remaining = static_cast<int>(g->ids.size());
        if (g->remaining == 0) g->session.reset();
        gen_.reset();
        return send_error({400, e.what(), engine_error_param(e.what(), chat), ""});
      }
      st_.metrics.add_prompt_tokens(static_cast<int64_t>(g->spec.prompts[p].size()) * n);
    }
    if (g->spec.stream) {
      st_.metrics.count_response(200);
      enqueue(fmt::format(
          "HTTP/1.1 200 OK\r\nServer: nanoflow\r\nContent-Type: text/event-stream\r\n"
          "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: {}\r\n\r\n",
          keep_alive_ ? "keep-alive" : "close"));
    }
    watch_disconnect(g);
  }

  void finish_generation() {
    auto g = std::move(gen_);
    gen_.reset();
    g->session.reset();
    // A choice the engine could not finish (FinishReason::Error) fails the whole response:
    // a 500, or on a stream an error event before [DONE] (as vLLM does).
    const nanoflow::RequestOutput* failed = nullptr;
    for (const auto& o : g->acc)
      if (o.finish_reason == nanoflow::FinishReason::Error) failed = &o;
    if (failed) {
      const ApiError e{500, "the engine failed on this request: " + failed->error, "",
                       "internal_error"};
      if (!g->spec.stream) return send_error(e);
      enqueue(chunk("data: " + e.body() + "\n\n"));
    }
    if (g->spec.stream) {
      if (g->spec.include_usage) enqueue(chunk(stream_usage_chunk(g->spec, g->acc, st_.api)));
      enqueue(chunk("data: [DONE]\n\n") + "0\r\n\r\n");
      request_done_ = true;
      close_after_write_ = !keep_alive_;
      flush_done();
      return;
    }
    respond(200, "application/json", json_dump(completion_response(g->spec, g->acc, st_.api)));
  }

  // While a generation runs nothing else is read, so readability means the peer closed (or
  // pipelined the next request, which then waits in the socket).
  void watch_disconnect(const std::shared_ptr<Generation>& g) {
    stream_.socket().async_wait(
        tcp::socket::wait_read, [self = shared_from_this(), g](beast::error_code ec) {
          if (ec || self->gen_ != g || self->closed_) return;
          char c;
          beast::error_code pec;
          // Non-blocking, or a spurious wake-up would block this network thread in receive().
          self->stream_.socket().non_blocking(true, pec);
          const size_t n =
              self->stream_.socket().receive(net::buffer(&c, 1), tcp::socket::message_peek, pec);
          if (pec == net::error::would_block) return self->watch_disconnect(g);
          if (n == 0 || pec) self->client_gone();
        });
  }

  void client_gone() {
    if (closed_) return;
    if (gen_) {
      for (auto id : gen_->ids) st_.engine.abort(id);
      st_.metrics.count_disconnect();
      gen_.reset();
    }
    close();
  }

  // A client that does not read its stream must not make the server buffer without bound: when
  // new deltas arrive while more than max_connection_buffer_bytes of earlier chunks are still
  // queued (not taken by the socket), the request is aborted (its KV blocks are freed at the
  // engine's next step) and the connection closed. So a connection holds at most the limit plus
  // one batch of deltas; one large batch alone (n x prompts chunks) never trips it.
  bool too_slow() {
    const size_t queued = pending_out_.size() + (writing_ ? writing_buf_.size() : 0);
    if (static_cast<int64_t>(queued) <= st_.config.max_connection_buffer_bytes) return false;
    for (auto id : gen_->ids) st_.engine.abort(id);
    st_.metrics.count_slow_client();
    gen_.reset();
    close();
    return true;
  }

  void respond(int status, const std::string& type, std::string body,
               const std::vector<std::pair<std::string, std::string>>& extra = {}) {
    if (counted_) st_.metrics.count_response(status);
    request_done_ = true;
    close_after_write_ = !keep_alive_;
    enqueue(http_response(status, type, std::move(body), keep_alive_, extra));
  }

  void send_error(const ApiError& e, bool retry_after = false) {
    std::vector<std::pair<std::string, std::string>> extra;
    if (retry_after) extra.emplace_back("Retry-After", "1");
    respond(e.status, "application/json", e.body(), extra);
  }

  void enqueue(std::string data) {
    if (closed_) return;
    pending_out_ += data;
    if (!writing_) start_write();
  }

  void start_write() {
    writing_buf_.swap(pending_out_);
    pending_out_.clear();
    writing_ = true;
    net::async_write(stream_, net::buffer(writing_buf_),
                     beast::bind_front_handler(&Session::on_write, shared_from_this()));
  }

  void on_write(beast::error_code ec, size_t) {
    writing_ = false;
    if (closed_) return;
    if (ec) return client_gone();
    if (!pending_out_.empty()) return start_write();
    flush_done();
  }

  // Everything queued is written: read the next request, or close.
  void flush_done() {
    if (writing_ || gen_ || !request_done_) return;
    request_done_ = false;
    if (close_after_write_) return linger_ ? linger_close() : close();
    do_read();
  }

  // After an early error response (the body was not read): stop sending, and read and drop
  // what the client still sends for a while so that it can read the response.
  void linger_close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.expires_after(std::chrono::seconds(2));
    discard_.resize(64 * 1024);
    discard_more();
  }

  void discard_more() {
    stream_.async_read_some(net::buffer(discard_),
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (ec) return self->close();
                              self->discard_more();
                            });
  }

  void close() {
    if (closed_) return;
    closed_ = true;
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
    stream_.socket().close(ec);
  }

  beast::tcp_stream stream_;
  ServerState& st_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::string pending_out_, writing_buf_;  // bytes queued / being written
  bool writing_ = false, closed_ = false, keep_alive_ = true, close_after_write_ = false;
  bool linger_ = false;        // close with linger_close()
  std::string discard_;        // linger_close() reads into this
  bool request_done_ = false;  // the current request's response is fully queued
  bool counted_ = false;       // an API endpoint (counted in the metrics by status)
  std::shared_ptr<Generation> gen_;
  Clock::time_point arrival_;
};

void Generation::deliver(int choice, nanoflow::RequestOutput&& delta) {
  {
    std::lock_guard<std::mutex> lock(mu);
    pending.emplace_back(choice, std::move(delta));
    if (posted) return;
    posted = true;
  }
  net::post(strand, [g = shared_from_this()] {
    if (auto s = g->session) s->drain(g);
  });
}

}  // namespace

void start_session(tcp::socket&& socket, ServerState& state) {
  std::make_shared<Session>(std::move(socket), state)->run();
}

void refuse_connection(tcp::socket&& socket, ServerState& state) {
  state.metrics.count_response(503);
  const std::string res =
      http_response(503, "application/json",
                    ApiError{503,
                             fmt::format("too many open connections (at most {}); retry later",
                                         state.config.max_connections),
                             "", "too_many_connections"}
                        .body(),
                    false, {{"Retry-After", "1"}});
  beast::error_code ec;
  socket.non_blocking(true, ec);
  net::write(socket, net::buffer(res), ec);  // a fresh socket's send buffer takes it whole
  socket.shutdown(tcp::socket::shutdown_both, ec);
  socket.close(ec);
}

}  // namespace nf::server
