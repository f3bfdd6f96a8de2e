// The OpenAI-compatible HTTP server behind `nanoflow serve`.
//
// Threads: a small pool runs the Boost.Asio io_context (accept, parse, tokenize, format, write;
// each connection on its own strand); the Engine runs its own loop (Engine::start); one
// dispatcher thread moves the engine's output deltas to the connections. No network thread
// waits for the engine, and the engine never waits for a client: each connection buffers what
// it has not written yet.
#pragma once

#include <nanoflow/engine.h>

#include <cstdint>
#include <string>

namespace nf::server {

struct ServerConfig {
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string api_key;               // when set, /v1/* needs "Authorization: Bearer <key>"
  std::string served_model_name;     // the model id clients use; default: the --model path
  int network_threads = 2;           // io_context threads
  int64_t max_body_bytes = 4 << 20;  // larger request bodies get 413
  int max_waiting_requests = 1024;   // beyond this many queued requests: 503 + Retry-After
  double shutdown_timeout_s = 10;    // SIGTERM: in-flight requests get this long, then abort
  // A connection that sends no request (or too slowly: a slowloris) for this long is closed.
  double idle_timeout_s = 30;
  // Open connections beyond this get a 503 and are closed at once; accept errors (out of file
  // descriptors) back off instead of spinning.
  int max_connections = 1024;
  // Per connection: stream bytes queued for a client that does not read them. Beyond this the
  // request is aborted (its KV blocks freed) and the connection closed. Environment override:
  // NANOFLOW_SERVE_MAX_CONNECTION_BUFFER=BYTES.
  int64_t max_connection_buffer_bytes = 1 << 20;
  // Test hook (environment NANOFLOW_SERVE_TEST_MERGE_DELTAS=K): the dispatcher hands every K
  // consecutive engine deltas of a request to the connection as one multi-token delta, to test
  // that streaming still sends one token per chunk.
  int test_merge_deltas = 1;
};

// Loads the model, serves until SIGTERM/SIGINT, drains and returns 0. Throws nf::Error for
// user errors (bad model, port in use).
int run_server(const nanoflow::EngineConfig& engine_config, const ServerConfig& config);

}  // namespace nf::server
