// The routes of the HTTP listener: POST /v1/completions and /v1/chat/completions
// (completion_call.h), GET /v1/models, GET /health (200 while admitting and the engine is
// healthy, else 503), and GET /metrics when a scrape function is given. Other paths answer 404,
// other methods on these paths 405, all errors in OpenAI's JSON shape. With `authorize` set,
// every /v1/ route needs it to accept the Authorization header (else 401); /health and /metrics
// stay open like the gRPC health service.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "server/http/completion_call.h"
#include "server/http/http_exchange.h"

namespace mlra::http {

struct ApiRoutes {
  std::shared_ptr<ApiContext> api;
  std::function<std::string()> metrics;             // empty: no /metrics route
  std::function<bool(std::string_view)> authorize;  // empty: no authentication
};

Handler make_api_handler(ApiRoutes routes);

// Only GET /metrics (the separate metrics_port listener).
Handler make_metrics_handler(std::function<std::string()> scrape);

}  // namespace mlra::http
