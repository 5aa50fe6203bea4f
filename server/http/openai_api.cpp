// Routing by path then method; every answer but the completions is computed inline (cheap).
#include "server/http/openai_api.h"

#include <chrono>

#include <spdlog/spdlog.h>

#include "server/http/openai_protocol.h"

namespace mlra::http {
namespace {

using Json = nlohmann::json;
constexpr const char* kJson = "application/json";
constexpr const char* kPrometheus = "text/plain; version=0.0.4; charset=utf-8";

std::string path_of(const Request& request) {
  const auto raw = request.target();
  const std::string_view target(raw.data(), raw.size());
  return std::string(target.substr(0, target.find('?')));
}

void answer_error(Exchange& exchange, unsigned status, const std::string& message,
                  const std::string& type = "invalid_request_error") {
  exchange.respond(status, kJson, error_json(ApiError{status, message, type, "", ""}));
}

// false (answered 405) when the method is not the route's.
bool method_is(Exchange& exchange, boost::beast::http::verb verb) {
  if (exchange.request().method() == verb) return true;
  answer_error(exchange, 405,
               std::string("method ") + std::string(exchange.request().method_string()) +
                   " is not allowed here (use " + std::string(boost::beast::http::to_string(verb)) +
                   ")");
  return false;
}

void serve_metrics(Exchange& exchange, const std::function<std::string()>& scrape) {
  if (!method_is(exchange, boost::beast::http::verb::get)) return;
  try {
    exchange.respond(200, kPrometheus, scrape());
  } catch (const std::exception& e) {
    spdlog::error("metrics: scrape failed: {}", e.what());
    answer_error(exchange, 500, "scrape failed", "server_error");
  }
}

Json models(const ApiContext& api) {
  const int64_t created = std::chrono::duration_cast<std::chrono::seconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
  Json model = {{"id", api.model_name},
                {"object", "model"},
                {"created", created},
                {"owned_by", "mlra-serve"},
                {"max_model_len", api.gateway->engine().options().max_context}};
  return Json{{"object", "list"}, {"data", Json::array({model})}};
}

}  // namespace

Handler make_api_handler(ApiRoutes routes) {
  return [routes = std::move(routes)](std::shared_ptr<Exchange> exchange) {
    using boost::beast::http::verb;
    const std::string path = path_of(exchange->request());
    const ApiContext& api = *routes.api;
    if (path == "/health") {
      if (!method_is(*exchange, verb::get)) return;
      const bool serving = api.gateway->admitting() && api.gateway->engine().healthy();
      return exchange->respond(
          serving ? 200 : 503, kJson,
          serving ? "{}" : error_json(ApiError{503, "not serving", "service_unavailable", "", ""}));
    }
    if (path == "/metrics" && routes.metrics) return serve_metrics(*exchange, routes.metrics);
    const bool v1 = path.rfind("/v1/", 0) == 0;
    if (v1 && routes.authorize) {
      const auto header = exchange->request()[boost::beast::http::field::authorization];
      if (!routes.authorize(std::string_view(header.data(), header.size()))) {
        return exchange->respond(
            401, kJson,
            error_json(ApiError{401, "missing or wrong API key (Authorization: Bearer ...)",
                                "invalid_request_error", "", "invalid_api_key"}));
      }
    }
    if (path == "/v1/models") {
      if (!method_is(*exchange, verb::get)) return;
      return exchange->respond(200, kJson, dump(models(api)));
    }
    if (path == "/v1/completions" || path == "/v1/chat/completions") {
      if (!method_is(*exchange, verb::post)) return;
      return serve_completion(api, exchange, path == "/v1/chat/completions");
    }
    answer_error(*exchange, 404, "no route for " + path);
  };
}

Handler make_metrics_handler(std::function<std::string()> scrape) {
  return [scrape = std::move(scrape)](std::shared_ptr<Exchange> exchange) {
    if (path_of(exchange->request()) != "/metrics") {
      return answer_error(*exchange, 404, "not found (only /metrics here)");
    }
    serve_metrics(*exchange, scrape);
  };
}

}  // namespace mlra::http
