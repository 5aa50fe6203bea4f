// An in-process mlra-serve with both frontends over one gateway, as `serve --http-port` wires
// them: Engine (fake or tiny runner) -> RequestGateway -> GrpcServer + http::Server (OpenAI API,
// /health, /metrics on the same listener), Prometheus metrics counting both protocols.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "grpc_test_server.h"
#include "server/http/http_server.h"
#include "server/http/openai_api.h"
#include "server/metrics_endpoint.h"
#include "server/prometheus_metrics.h"

namespace mlra::testing {

struct HttpServerUnderTest {
  explicit HttpServerUnderTest(std::unique_ptr<ModelRunner> runner,
                               std::optional<http::ChatTemplate> chat_template = std::nullopt,
                               EngineOptions engine_options = {}, http::ServerOptions http = {},
                               TextCodec codec = byte_codec()) {
    metrics = std::make_shared<PrometheusMetrics>("test-model");
    engine_options.metrics = metrics;
    engine = std::make_unique<Engine>(std::move(runner), fake_decoder_factory(), engine_options);
    metrics->describe(metrics_model_info(*engine, "fp32"));
    GatewayOptions g;
    g.on_call_end = [m = metrics](const RequestOutcome& o) {
      m->count_call(o.protocol, o.method, status_code_name(o.code));
    };
    gateway = std::make_shared<RequestGateway>(*engine, std::move(codec), g);
    GrpcServerOptions grpc_options;
    grpc_options.address = "127.0.0.1:0";
    grpc = std::make_unique<GrpcServer>(*engine, gateway, grpc_options);
    channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(grpc->port()),
                                  grpc::InsecureChannelCredentials());
    stub = v1::Mlra::NewStub(channel);
    auto api = std::make_shared<http::ApiContext>();
    api->gateway = gateway;
    api->model_name = "test-model";
    api->chat_template = std::move(chat_template);
    http::ApiRoutes routes;
    routes.api = api;
    Engine& e = *engine;
    routes.metrics = [m = metrics, &e] {
      return scrape_metrics(*m->registry(), [&] { m->refresh(e.stats(), e.healthy()); });
    };
    http.host = "127.0.0.1";
    http.port = 0;
    server = std::make_unique<http::Server>(http, http::make_api_handler(std::move(routes)));
  }
  ~HttpServerUnderTest() {
    grpc->shutdown(std::chrono::milliseconds(0));
    server->stop();
  }
  int port() const { return server->port(); }

  std::shared_ptr<PrometheusMetrics> metrics;
  std::unique_ptr<Engine> engine;
  std::shared_ptr<RequestGateway> gateway;
  std::unique_ptr<GrpcServer> grpc;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::Mlra::Stub> stub;
  std::unique_ptr<http::Server> server;
};

}  // namespace mlra::testing
