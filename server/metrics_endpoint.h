// GET /metrics in the Prometheus text format (prometheus-cpp's registry and serializer) on its
// own port (metrics_port), served by the same Beast HTTP server as the OpenAI API
// (http/http_server.h). Before each scrape it calls `refresh` (the serve command passes one that
// copies Engine::stats() into the gauges), so the engine thread does no work for them.
// Why not prometheus-cpp's Exposer: it runs on civetweb, whose worker threads get a fixed small
// stack; with cuBLAS loaded (about 94 KB of static TLS) pthread_create fails and the endpoint
// cannot start in the CUDA build, and civetweb 1.15's error page crashed on some request targets.
// Idle or half-sent connections cannot starve scrapes: at the connection cap a new connection
// closes the longest-idle one, and requests must arrive within request_timeout_ms.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include <prometheus/registry.h>

namespace mlra {

namespace http {
class Server;
}

struct MetricsEndpointOptions {
  std::string host = "0.0.0.0";
  int port = 0;                   // 0: any free port (port() tells which)
  int max_connections = 1024;     // at the cap, the longest-idle connection makes room
  int request_timeout_ms = 5000;  // a connection that sends no complete request is dropped
  int max_request_bytes = 16384;  // larger request heads are refused (431)
};

// The Prometheus text of `registry` after `refresh` (the body of GET /metrics).
std::string scrape_metrics(prometheus::Registry& registry, const std::function<void()>& refresh);

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
  std::shared_ptr<prometheus::Registry> registry_;
  std::function<void()> refresh_;
  std::unique_ptr<http::Server> server_;
  int port_ = 0;
};

}  // namespace mlra
