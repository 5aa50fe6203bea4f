// The HTTP side of the metrics: prometheus-cpp's Exposer (civetweb) serving GET /metrics in the
// Prometheus text format. Before each scrape it calls `refresh` (the serve command passes one
// that copies Engine::stats() into the gauges), so the engine thread does no work for them.
// Hardening: a bounded worker pool, a per-request read timeout (a client that never finishes
// its request is dropped instead of holding a worker) and a request size limit.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <prometheus/exposer.h>
#include <prometheus/registry.h>

namespace mlra {

struct MetricsEndpointOptions {
  std::string host = "0.0.0.0";
  int port = 0;                   // 0: any free port (port() tells which)
  int num_threads = 4;            // concurrent HTTP connections served
  int request_timeout_ms = 5000;  // a connection that sends no complete request is dropped
  int max_request_bytes = 16384;  // larger request headers are refused
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
  class Collector;
  std::shared_ptr<Collector> collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_ = 0;
};

}  // namespace mlra
