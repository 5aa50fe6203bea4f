// A minimal blocking HTTP/1.0 GET over a plain TCP socket, for scraping /metrics from the
// benchmark and the tests without an HTTP client dependency. Reads until the server closes.
#pragma once

#include <chrono>
#include <string>

namespace mlra {

struct HttpResponse {
  int status = 0;    // e.g. 200
  std::string body;  // without headers
};

// "host:port" + path. Throws std::runtime_error on connection failure, timeout (for the whole
// exchange) or a response that is not HTTP.
HttpResponse http_get(const std::string& host_port, const std::string& path,
                      std::chrono::milliseconds timeout);

}  // namespace mlra
