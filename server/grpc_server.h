// The running gRPC server: the Mlra service (callback API: a bounded number of gRPC threads
// whatever the number of open streams), the standard grpc.health.v1.Health service (SERVING
// while admitting and the engine is healthy, NOT_SERVING otherwise: at once when the engine
// reports a failure, else within one health poll) and server reflection, on one listening port,
// plaintext or TLS, with an optional API key (server/auth.h). shutdown() is the graceful path
// SIGTERM takes: stop admitting, let calls in flight (on every frontend sharing the gateway)
// finish for a grace period, abort the rest
// through the engine, stop the server.
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include <grpcpp/server.h>

#include "engine/engine.h"
#include "server/auth.h"
#include "server/mlra_service.h"
#include "server/request_gateway.h"
#include "server/text_codec.h"

namespace mlra {

struct GrpcServerOptions {
  std::string address = "127.0.0.1:50051";  // "host:0" picks a free port
  int max_receive_message_bytes = 4 << 20;  // larger requests get RESOURCE_EXHAUSTED
  int max_threads = 512;                    // gRPC's thread quota
  // gRPC's memory quota for its buffers (ResourceQuota::Resize): under pressure gRPC shrinks
  // flow-control windows and stops reading from sockets instead of buffering. 0: gRPC's default.
  int64_t memory_quota_bytes = 0;
  // HTTP/2 receive window per stream, fixed (no BDP growth): a large request is read only as
  // fast as the memory quota lets the transport buffer it.
  int stream_window_bytes = 65536;
  std::chrono::milliseconds health_poll{100};
  AuthOptions auth;  // API key and TLS (server/auth.h); empty: plaintext, no key
  // Called once when the engine fails (runner error, lost worker), after health turned
  // NOT_SERVING; `serve` uses it to exit non-zero so a supervisor restarts the server.
  std::function<void(const std::string& why)> on_engine_failure;
  GatewayOptions service;  // for the gateway the server builds itself (first constructor)
};

class GrpcServer {
 public:
  // Builds its own RequestGateway over `engine` and `codec`, then binds and starts serving.
  // Throws std::runtime_error when the address cannot be bound.
  GrpcServer(Engine& engine, TextCodec codec, GrpcServerOptions options);
  // Serves through a gateway shared with other frontends (the HTTP server).
  GrpcServer(Engine& engine, std::shared_ptr<RequestGateway> gateway, GrpcServerOptions options);
  ~GrpcServer();  // shutdown(0) if not done yet
  GrpcServer(const GrpcServer&) = delete;
  GrpcServer& operator=(const GrpcServer&) = delete;

  int port() const { return port_; }
  MlraService& service() { return service_; }
  RequestGateway& gateway() { return *gateway_; }

  // Stops admitting (health NOT_SERVING, new calls UNAVAILABLE), waits up to `grace` for calls
  // in flight, then shuts the engine down (aborting what is left: those calls end UNAVAILABLE)
  // and stops the gRPC server. Idempotent; blocks until done.
  void shutdown(std::chrono::milliseconds grace);

 private:
  void monitor_health();
  void set_serving(bool serving);
  void engine_failed(const std::string& why);

  Engine& engine_;
  GrpcServerOptions options_;
  std::shared_ptr<RequestGateway> gateway_;
  MlraService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  std::mutex mutex_;
  std::condition_variable stop_cv_;
  bool stopping_ = false;
  bool stopped_ = false;
  std::mutex health_mutex_;  // set_serving runs on the health, engine and shutdown threads
  int serving_ = -1;         // last status published: -1 none, 0 NOT_SERVING, 1 SERVING
  bool engine_failed_ = false;
  std::thread health_thread_;
};

}  // namespace mlra
