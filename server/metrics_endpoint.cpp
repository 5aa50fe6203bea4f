// MetricsEndpoint: an http::Server with the one /metrics route (header).
#include "server/metrics_endpoint.h"

#include <stdexcept>

#include <prometheus/text_serializer.h>

#include "server/http/http_server.h"
#include "server/http/openai_api.h"

namespace mlra {

std::string scrape_metrics(prometheus::Registry& registry, const std::function<void()>& refresh) {
  if (refresh) refresh();
  return prometheus::TextSerializer().Serialize(registry.Collect());
}

MetricsEndpoint::MetricsEndpoint(const MetricsEndpointOptions& o,
                                 std::shared_ptr<prometheus::Registry> registry,
                                 std::function<void()> refresh)
    : registry_(std::move(registry)), refresh_(std::move(refresh)) {
  if (o.max_connections < 1 || o.request_timeout_ms < 1 || o.max_request_bytes < 64) {
    throw std::invalid_argument("metrics endpoint: limits must be positive");
  }
  http::ServerOptions options;
  options.host = o.host;
  options.port = o.port;
  options.threads = 1;
  options.max_connections = size_t(o.max_connections);
  options.max_header_bytes = size_t(o.max_request_bytes);
  options.max_body_bytes = 0;  // a scrape has no body
  options.request_timeout = std::chrono::milliseconds(o.request_timeout_ms);
  options.idle_timeout = std::chrono::milliseconds(o.request_timeout_ms);
  options.write_timeout = std::chrono::seconds(10);
  server_ = std::make_unique<http::Server>(
      options, http::make_metrics_handler([this] { return scrape_metrics(*registry_, refresh_); }));
  port_ = server_->port();
}

MetricsEndpoint::~MetricsEndpoint() = default;

}  // namespace mlra
