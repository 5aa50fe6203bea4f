// The mlra.v1.Mlra service on the gRPC sync API: each Generate/Complete call holds one gRPC
// thread, converts and validates its request there, submits it to the Engine and drains a
// per-request ChunkQueue. The engine thread only pushes to that queue, so it never waits on a
// slow client. Invariant: every submitted request is cancelled in the engine if its RPC ends
// early (client cancel, disconnect, failed write), so its cache pages are freed.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>

#include "engine/engine.h"
#include "proto/mlra.grpc.pb.h"
#include "server/chunk_queue.h"
#include "server/proto_convert.h"
#include "server/request_log.h"
#include "server/request_registry.h"
#include "server/text_codec.h"

namespace mlra {

struct ServiceOptions {
  ServingLabels labels;
  size_t max_request_id_bytes = 256;
  size_t max_stop_string_bytes = 256;
  std::chrono::milliseconds poll_interval{20};   // how often a waiting call checks IsCancelled
  std::chrono::milliseconds cancel_wait{30000};  // a cancelled call waits this long for the end
  bool log_prompts = false;  // the request log line carries the prompt text (it may be private)
  // Called on the RPC thread when a Generate/Complete call ends (metrics); may be empty.
  std::function<void(const RequestOutcome&)> on_call_end;
};

class MlraService final : public v1::Mlra::Service {
 public:
  MlraService(Engine& engine, TextCodec codec, ServiceOptions options);

  grpc::Status Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* request,
                        grpc::ServerWriter<v1::GenerateResponse>* writer) override;
  grpc::Status Complete(grpc::ServerContext* ctx, const v1::GenerateRequest* request,
                        v1::CompleteResponse* response) override;
  grpc::Status Tokenize(grpc::ServerContext* ctx, const v1::TokenizeRequest* request,
                        v1::TokenizeResponse* response) override;
  grpc::Status Detokenize(grpc::ServerContext* ctx, const v1::DetokenizeRequest* request,
                          v1::DetokenizeResponse* response) override;
  grpc::Status ModelInfo(grpc::ServerContext* ctx, const v1::ModelInfoRequest* request,
                         v1::ModelInfoResponse* response) override;
  grpc::Status Cancel(grpc::ServerContext* ctx, const v1::CancelRequest* request,
                      v1::CancelResponse* response) override;
  grpc::Status Stats(grpc::ServerContext* ctx, const v1::StatsRequest* request,
                     v1::StatsResponse* response) override;

  // New Generate/Complete calls get UNAVAILABLE from now on; calls in flight continue.
  void stop_admitting();
  bool admitting() const { return admitting_.load(); }
  int64_t in_flight() const;
  // True when no Generate/Complete call is in flight before `deadline`.
  bool wait_idle(std::chrono::steady_clock::time_point deadline);

 private:
  // Called with each chunk in order; false when the client can no longer receive.
  using Emit = std::function<bool(GenerationChunk&&)>;

  grpc::Status to_request(const v1::GenerateRequest& proto, GenerationRequest& out) const;
  grpc::Status run(grpc::ServerContext* ctx, const v1::GenerateRequest& proto,
                   RequestOutcome& outcome, const Emit& emit);
  grpc::Status submit_and_drain(grpc::ServerContext* ctx, GenerationRequest&& request,
                                RequestOutcome& outcome, const Emit& emit);
  // Logs the call's line and reports it to on_call_end; returns status unchanged.
  grpc::Status end_call(const v1::GenerateRequest& proto, RequestOutcome& outcome,
                        grpc::Status status);
  void enter();
  void leave();

  Engine& engine_;
  TextCodec codec_;
  ServiceOptions options_;
  RequestRegistry registry_;
  std::atomic<bool> admitting_{true};
  mutable std::mutex flight_mutex_;
  std::condition_variable idle_;
  int64_t in_flight_ = 0;
};

}  // namespace mlra
