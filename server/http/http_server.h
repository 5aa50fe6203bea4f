// An HTTP/1.1 server on Boost.Beast/Asio: a few I/O threads serve every connection (no thread
// per connection or per stream), requests are parsed by Beast's parser (never by hand) with
// limits checked before anything large is buffered: a head over max_header_bytes gets 431, a
// declared body over max_body_bytes gets 413 before a byte of it is read (chunked bodies stop at
// the limit), and a request that does not arrive within request_timeout is dropped. At most
// max_connections are open; at the cap a new connection closes the longest-idle one that is
// only waiting for a request, so idle connections can never lock out a scrape or a client.
// Keep-alive, pipelining-safe (one request answered at a time), Expect: 100-continue.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "server/http/http_exchange.h"

namespace mlra::http {

struct ServerOptions {
  std::string host = "0.0.0.0";
  int port = 0;  // 0: any free port (port() tells which)
  int threads = 2;
  size_t max_connections = 16384;
  size_t max_header_bytes = 16384;
  size_t max_body_bytes = size_t(4) << 20;
  std::chrono::milliseconds request_timeout{10000};  // first byte of a request -> all of it
  std::chrono::milliseconds idle_timeout{60000};     // keep-alive connection without a request
  std::chrono::milliseconds write_timeout{60000};    // one write that makes no progress
};

class Server {
 public:
  // Binds, listens and starts the I/O threads; throws std::runtime_error when the address
  // cannot be bound.
  Server(const ServerOptions& options, Handler handler);
  ~Server();  // stop()
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  int port() const;
  size_t connections() const;
  // Closes the listener and every connection, joins the I/O threads. Idempotent.
  void stop();

  struct State;

 private:
  std::shared_ptr<State> state_;
};

}  // namespace mlra::http
