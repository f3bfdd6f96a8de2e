// One HTTP/1.1 connection: reads requests, answers the small endpoints at once, and streams
// generations. Everything a connection does runs on its own strand.
#pragma once

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <memory>

#include "server/dispatcher.h"
#include "server/metrics.h"
#include "server/openai_api.h"
#include "server/server.h"

namespace nf::server {

// What all connections share; lives as long as the server.
struct ServerState {
  ServerState(const ServerConfig& c, nanoflow::Engine& e)
      : config(c), engine(e), dispatcher(e, metrics) {}
  ServerConfig config;
  nanoflow::Engine& engine;
  ApiContext api;
  Metrics metrics;
  Dispatcher dispatcher;
  std::atomic<bool> draining{false};  // SIGTERM: no new generations
  std::atomic<int> connections{0};    // open sessions (ServerConfig::max_connections)
};

// Starts serving one accepted connection; it keeps itself alive while it has work.
void start_session(boost::asio::ip::tcp::socket&& socket, ServerState& state);
// Answers an accepted connection over ServerConfig::max_connections with a 503 and closes it.
void refuse_connection(boost::asio::ip::tcp::socket&& socket, ServerState& state);

}  // namespace nf::server
