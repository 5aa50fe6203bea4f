// ServerUnderTest plus what `mlra-serve serve --metrics-port` adds: PrometheusMetrics fed by the
// engine and the RPC layer, and the HTTP /metrics endpoint on a free loopback port.
#pragma once

#include <memory>
#include <string>

#include "grpc_test_server.h"
#include "server/metrics_endpoint.h"
#include "server/prometheus_metrics.h"

namespace mlra::testing {

// An in-process server with the Prometheus metrics wired as `serve` wires them.
struct MeteredServer {
  explicit MeteredServer(std::unique_ptr<ModelRunner> runner, MetricsEndpointOptions http = {}) {
    metrics = std::make_shared<PrometheusMetrics>("test-model");
    EngineOptions eo;
    eo.metrics = metrics;
    eo.max_running_seqs = 64;
    GrpcServerOptions so;
    so.service.on_call_end = [m = metrics](const RequestOutcome& o) {
      m->count_call(o.protocol, o.method, status_code_name(o.code));
    };
    server = std::make_unique<ServerUnderTest>(std::move(runner), eo, so);
    Engine& engine = *server->engine;
    metrics->describe(metrics_model_info(engine, "fp32"));
    http.host = "127.0.0.1";
    http.port = 0;
    endpoint = std::make_unique<MetricsEndpoint>(http, metrics->registry(), [m = metrics, &engine] {
      m->refresh(engine.stats(), engine.healthy());
    });
  }
  std::string grpc_target() const { return "127.0.0.1:" + std::to_string(server->server->port()); }
  std::string metrics_target() const { return "127.0.0.1:" + std::to_string(endpoint->port()); }

  std::shared_ptr<PrometheusMetrics> metrics;
  std::unique_ptr<ServerUnderTest> server;
  std::unique_ptr<MetricsEndpoint> endpoint;  // destroyed before the engine it reads
};

}  // namespace mlra::testing
