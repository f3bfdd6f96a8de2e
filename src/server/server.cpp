#include "server/server.h"

#include <algorithm>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <thread>
#include <vector>

#include "common/status.h"
#include "model/model_config.h"
#include "server/http_session.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace nf::server {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

class Listener {
 public:
  Listener(net::io_context& ioc, ServerState& st)
      : ioc_(ioc), st_(st), acceptor_(ioc), timer_(ioc), accept_timer_(ioc) {}

  void listen(const std::string& host, int port) {
    try {
      const tcp::endpoint ep(net::ip::make_address(host), static_cast<unsigned short>(port));
      acceptor_.open(ep.protocol());
      acceptor_.set_option(net::socket_base::reuse_address(true));
      acceptor_.bind(ep);
      acceptor_.listen(net::socket_base::max_listen_connections);
    } catch (const boost::system::system_error& e) {
      nf::fail("cannot listen on {}:{}: {}", host, port, e.code().message());
    }
  }
  unsigned short port() const { return acceptor_.local_endpoint().port(); }

  // Accepts connections until the acceptor closes. Over max_connections a connection gets a
  // 503 and is closed; an accept error (no file descriptor left, say) waits a while, doubling
  // up to a second, instead of spinning on the error.
  void accept() {
    acceptor_.async_accept(net::make_strand(ioc_),
                           [this](boost::system::error_code ec, tcp::socket socket) {
                             if (!acceptor_.is_open()) return;
                             if (ec) return back_off(ec);
                             backoff_ms_ = 0;
                             socket.set_option(tcp::no_delay(true), ec);
                             if (st_.connections.load() >= st_.config.max_connections)
                               refuse_connection(std::move(socket), st_);
                             else
                               start_session(std::move(socket), st_);
                             accept();
                           });
  }

  void back_off(const boost::system::error_code& ec) {
    backoff_ms_ = std::clamp(backoff_ms_ * 2, 10, 1000);
    if (!warned_accept_) {
      warned_accept_ = true;
      std::fprintf(stderr, "nanoflow serve: accept failed (%s); backing off\n",
                   ec.message().c_str());
    }
    accept_timer_.expires_after(std::chrono::milliseconds(backoff_ms_));
    accept_timer_.async_wait([this](boost::system::error_code) { accept(); });
  }

  // SIGTERM: stop admitting, let in-flight requests finish until the timeout, abort the rest,
  // give the connections a moment to flush, then stop the io_context.
  void begin_shutdown() {
    if (st_.draining.exchange(true)) return;
    std::fprintf(stderr, "nanoflow serve: shutting down (%d requests in flight)\n",
                 st_.dispatcher.in_flight());
    boost::system::error_code ec;
    acceptor_.close(ec);
    accept_timer_.cancel();
    deadline_ = Clock::now() + std::chrono::milliseconds(
                                   static_cast<int64_t>(st_.config.shutdown_timeout_s * 1000));
    tick();
  }

 private:
  void tick() {
    const auto now = Clock::now();
    if (st_.dispatcher.in_flight() == 0) {
      if (!flushing_) {
        flushing_ = true;
        flush_until_ = now + std::chrono::milliseconds(200);
      }
      if (now >= flush_until_) return ioc_.stop();
    } else if (now >= deadline_ && !aborted_) {
      std::fprintf(stderr, "nanoflow serve: aborting %d requests\n", st_.dispatcher.in_flight());
      st_.dispatcher.abort_all();
      aborted_ = true;
    } else if (now >= deadline_ + std::chrono::seconds(5)) {
      return ioc_.stop();
    }
    timer_.expires_after(std::chrono::milliseconds(20));
    timer_.async_wait([this](boost::system::error_code) { tick(); });
  }

  net::io_context& ioc_;
  ServerState& st_;
  tcp::acceptor acceptor_;
  net::steady_timer timer_;
  net::steady_timer accept_timer_;  // back-off after an accept error
  int backoff_ms_ = 0;
  bool warned_accept_ = false;
  Clock::time_point deadline_, flush_until_;
  bool aborted_ = false, flushing_ = false;
};

}  // namespace

namespace {

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  const long long x = std::strtoll(v, &end, 10);
  if (*end || x <= 0) nf::fail("{}={}: expected a positive integer", name, v);
  return static_cast<int64_t>(x);
}

}  // namespace

int run_server(const nanoflow::EngineConfig& engine_config, const ServerConfig& cfg) {
  ServerConfig config = cfg;
  config.max_connection_buffer_bytes =
      env_int("NANOFLOW_SERVE_MAX_CONNECTION_BUFFER", config.max_connection_buffer_bytes);
  config.test_merge_deltas =
      static_cast<int>(env_int("NANOFLOW_SERVE_TEST_MERGE_DELTAS", config.test_merge_deltas));
  auto engine = nanoflow::Engine::create(engine_config);
  ServerState st(config, *engine);
  std::unique_ptr<nf::ChatTemplate> chat;
  st.api.tokenizer = engine->tokenizer();
  if (!st.api.tokenizer) {
    st.api.chat_template_error = "the model has no tokenizer";
  } else if (st.api.tokenizer->chat_template().empty()) {
    st.api.chat_template_error = "the model has no chat template";
  } else {
    try {
      chat = std::make_unique<nf::ChatTemplate>(st.api.tokenizer->chat_template());
      st.api.chat_template = chat.get();
    } catch (const nf::Error& e) {
      st.api.chat_template_error = e.what();
      std::fprintf(stderr, "nanoflow serve: chat disabled: %s\n", e.what());
    }
  }
  st.api.model_name =
      config.served_model_name.empty() ? engine_config.model : config.served_model_name;
  st.api.max_context = engine->model_config().max_position_embeddings;

  const int threads = std::max(1, config.network_threads);
  net::io_context ioc(threads);
  Listener listener(ioc, st);
  listener.listen(config.host, config.port);
  net::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](boost::system::error_code ec, int) {
    if (!ec) listener.begin_shutdown();
  });
  std::signal(SIGPIPE, SIG_IGN);

  engine->start();
  st.dispatcher.set_merge_deltas(config.test_merge_deltas);
  st.dispatcher.start();
  listener.accept();
  std::fprintf(stderr, "nanoflow serve: model %s, listening on http://%s:%u\n",
               st.api.model_name.c_str(), config.host.c_str(), listener.port());
  std::vector<std::thread> pool;
  for (int i = 1; i < threads; ++i) pool.emplace_back([&] { ioc.run(); });
  ioc.run();
  for (auto& t : pool) t.join();
  st.dispatcher.stop();
  engine->stop();
  std::fprintf(stderr, "nanoflow serve: stopped\n");
  return 0;
}

}  // namespace nf::server
