// GrpcServer: ServerBuilder setup (credentials, limits, receive windows, memory quota, health,
// reflection), the engine's failure callback and a small thread that mirror Engine::healthy()
// into the health service, and the ordered shutdown sequence.
#include "server/grpc_server.h"

#include <malloc.h>

#include <stdexcept>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/resource_quota.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_builder.h>
#include <spdlog/spdlog.h>

namespace mlra {
namespace {

constexpr int kMaxMetadataBytes = 16 << 10;  // request headers; the API key is one of them
constexpr auto kTrimInterval = std::chrono::seconds(1);

}  // namespace

GrpcServer::GrpcServer(Engine& engine, TextCodec codec, GrpcServerOptions options)
    : GrpcServer(engine,
                 std::make_shared<RequestGateway>(engine, std::move(codec), options.service),
                 options) {}

GrpcServer::GrpcServer(Engine& engine, std::shared_ptr<RequestGateway> gateway,
                       GrpcServerOptions options)
    : engine_(engine),
      options_(std::move(options)),
      gateway_(std::move(gateway)),
      service_(*gateway_) {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.address, make_server_credentials(options_.auth), &port_);
  // Without this, gRPC sets SO_REUSEPORT and a second server on a busy port starts silently.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Receive windows stay small and fixed (no BDP growth), so a large request is read only as
  // fast as the memory quota lets the transport buffer it; over the quota gRPC refuses streams
  // (RESOURCE_EXHAUSTED) instead of buffering them.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, options_.stream_window_bytes);
  builder.SetMaxReceiveMessageSize(options_.max_receive_message_bytes);
  grpc::ResourceQuota quota("mlra-serve");
  quota.SetMaxThreads(options_.max_threads);
  if (options_.memory_quota_bytes > 0) quota.Resize(size_t(options_.memory_quota_bytes));
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_METADATA_SIZE, kMaxMetadataBytes);
  builder.RegisterService(&service_);
  server_ = builder.BuildAndStart();
  if (!server_ || port_ == 0) {
    throw std::runtime_error(
        "cannot listen on " + options_.address +
        (options_.auth.tls() ? " (port in use, address not local, or TLS key/certificate refused)"
                             : " (port in use, or the address is not local)"));
  }
  set_serving(engine_.healthy());
  engine_.set_failure_callback([this](const std::string& why) { engine_failed(why); });
  health_thread_ = std::thread([this] { monitor_health(); });
}

GrpcServer::~GrpcServer() {
  shutdown(std::chrono::milliseconds(0));
}

void GrpcServer::set_serving(bool serving) {
  std::lock_guard lock(health_mutex_);
  if (engine_failed_) serving = false;
  if (serving_ == static_cast<int>(serving)) return;
  serving_ = serving;
  grpc::HealthCheckServiceInterface* health = server_->GetHealthCheckService();
  health->SetServingStatus(serving);
  health->SetServingStatus(v1::Mlra::service_full_name(), serving);
  spdlog::info("health: {}", serving ? "SERVING" : "NOT_SERVING");
}

void GrpcServer::monitor_health() {
  std::unique_lock lock(mutex_);
  auto last_trim = std::chrono::steady_clock::now();
  while (!stopping_) {
    // Return the heap pages a burst of large requests left free to the OS (glibc keeps them
    // otherwise), so RSS comes back down after a flood.
    if (std::chrono::steady_clock::now() - last_trim > kTrimInterval) {
      ::malloc_trim(0);
      last_trim = std::chrono::steady_clock::now();
    }
    const bool healthy = engine_.healthy();
    set_serving(gateway_->admitting() && healthy);
    if (!healthy) {
      lock.unlock();  // engine_failed may call back into whoever stops this server
      engine_failed("the model runner reports unhealthy (a worker was lost)");
      lock.lock();
    }
    stop_cv_.wait_for(lock, options_.health_poll);
  }
}

void GrpcServer::engine_failed(const std::string& why) {
  {
    std::lock_guard lock(health_mutex_);
    if (engine_failed_) return;
    engine_failed_ = true;
  }
  set_serving(false);
  spdlog::error("engine failed: {}", why);
  if (options_.on_engine_failure) options_.on_engine_failure(why);
}

void GrpcServer::shutdown(std::chrono::milliseconds grace) {
  {
    std::lock_guard lock(mutex_);
    if (stopped_) return;
    stopping_ = true;
    stopped_ = true;
  }
  stop_cv_.notify_all();
  if (health_thread_.joinable()) health_thread_.join();
  engine_.set_failure_callback(nullptr);  // the engine may outlive this server
  gateway_->stop_admitting();
  set_serving(false);
  const auto deadline = std::chrono::steady_clock::now() + grace;
  if (!gateway_->wait_idle(deadline)) {
    spdlog::warn("shutdown: {} request(s) still in flight after the grace period; aborting",
                 gateway_->in_flight());
  }
  // Aborts what is left; each such call gets its final chunk and ends UNAVAILABLE.
  engine_.shutdown(false);
  server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server_->Wait();
}

}  // namespace mlra
