// MetricsEndpoint: civetweb options for the Exposer and a Collectable that refreshes the
// scrape-time values before handing out the registry's families (header).
#include "server/metrics_endpoint.h"

#include <cstring>
#include <stdexcept>
#include <vector>

#include <CivetServer.h>
#include <civetweb.h>
#include <fmt/format.h>

namespace mlra {
namespace {

// civetweb 1.15 (Debian 12) crashes inside its own error page for some request targets
// ("GET /%%%% HTTP/1.1" takes the process down), so no request reaches its default handling:
// begin_request answers everything but GET /metrics itself, and http_error (parse errors,
// oversized headers) answers with a fixed response instead of civetweb's page.
void send_plain(mg_connection* conn, int status, const char* reason) {
  const std::string response = fmt::format(
      "HTTP/1.1 {} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: "
      "close\r\n\r\n{}\n",
      status, reason, std::strlen(reason) + 1, reason);
  mg_write(conn, response.data(), response.size());
}

int on_begin_request(mg_connection* conn) {
  const mg_request_info* info = mg_get_request_info(conn);
  const bool metrics = info != nullptr && info->request_method != nullptr &&
                       info->local_uri != nullptr &&
                       std::strcmp(info->request_method, "GET") == 0 &&
                       std::strcmp(info->local_uri, "/metrics") == 0;
  if (metrics) return 0;  // prometheus-cpp's handler serves it
  send_plain(conn, 404, "Not Found");
  return 404;
}

int on_http_error(mg_connection* conn, int status, const char*) {
  send_plain(conn, status, status == 413 ? "Request Too Large" : "Bad Request");
  return 0;  // handled: civetweb sends nothing else
}

const CivetCallbacks& hardened_callbacks() {
  static const CivetCallbacks callbacks = [] {
    CivetCallbacks c;
    c.begin_request = on_begin_request;
    c.http_error = on_http_error;
    return c;
  }();
  return callbacks;
}

}  // namespace

class MetricsEndpoint::Collector : public prometheus::Collectable {
 public:
  Collector(std::shared_ptr<prometheus::Registry> registry, std::function<void()> refresh)
      : registry_(std::move(registry)), refresh_(std::move(refresh)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    if (refresh_) refresh_();
    return registry_->Collect();
  }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::function<void()> refresh_;
};

MetricsEndpoint::MetricsEndpoint(const MetricsEndpointOptions& o,
                                 std::shared_ptr<prometheus::Registry> registry,
                                 std::function<void()> refresh)
    : collector_(std::make_shared<Collector>(std::move(registry), std::move(refresh))) {
  // civetweb wants IPv6 literals in brackets; "0.0.0.0" and names pass through as they are.
  const std::string host = o.host.find(':') != std::string::npos ? "[" + o.host + "]" : o.host;
  std::vector<std::string> civet = {
      "listening_ports",    fmt::format("{}:{}", host, o.port),
      "num_threads",        std::to_string(o.num_threads),
      "request_timeout_ms", std::to_string(o.request_timeout_ms),
      "max_request_size",   std::to_string(o.max_request_bytes),
      "enable_keep_alive",  "no",
  };
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(civet, &hardened_callbacks());
  } catch (const std::exception& e) {
    throw std::runtime_error(
        fmt::format("metrics endpoint: cannot listen on {}:{} ({})", o.host, o.port, e.what()));
  }
  const std::vector<int> ports = exposer_->GetListeningPorts();
  if (ports.empty()) {
    throw std::runtime_error(
        fmt::format("metrics endpoint: no port bound for {}:{}", o.host, o.port));
  }
  port_ = ports.front();
  exposer_->RegisterCollectable(collector_);
}

MetricsEndpoint::~MetricsEndpoint() = default;

}  // namespace mlra
