// The HTTP side of the metrics: GET /metrics in the Prometheus text format (prometheus-cpp's
// registry and serializer) from our own small HTTP/1.1 listener. Before each scrape it calls
// `refresh` (the serve command passes one that copies Engine::stats() into the gauges), so the
// engine thread does no work for them.
// Why not prometheus-cpp's Exposer: it runs on civetweb, whose worker threads get a fixed small
// stack; with cuBLAS loaded (about 94 KB of static TLS) pthread_create fails and the endpoint
// cannot start in the CUDA build ("Cannot create threads"), and civetweb 1.15's error page
// crashed on some request targets. The listener here is one poll() thread with default stacks.
// Hardening: every connection has a read deadline (a client that never finishes its request is
// dropped, never holding anything up), a request size limit and a cap on open connections.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <prometheus/registry.h>

namespace mlra {

struct MetricsEndpointOptions {
  std::string host = "0.0.0.0";
  int port = 0;                   // 0: any free port (port() tells which)
  int max_connections = 64;       // open connections beyond this are closed at once
  int request_timeout_ms = 5000;  // a connection that sends no complete request is dropped
  int max_request_bytes = 16384;  // larger request headers are refused (413)
};

class MetricsEndpoint {
 public:
  // Binds and starts serving; throws std::runtime_error when the address cannot be bound.
  MetricsEndpoint(const MetricsEndpointOptions& options,
                  std::shared_ptr<prometheus::Registry> registry, std::function<void()> refresh);
  ~MetricsEndpoint();
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  int port() const { return port_; }

 private:
  class Listener;
  std::string scrape();

  std::shared_ptr<prometheus::Registry> registry_;
  std::function<void()> refresh_;
  std::unique_ptr<Listener> listener_;
  int port_ = 0;
};

}  // namespace mlra
