// The one path every generation request takes into the engine, whichever frontend (gRPC
// reactors, HTTP sessions) it arrived on: admission (shutdown, in-flight count), text -> tokens
// with the prompt byte bound checked first, the wire-independent edge checks and
// Engine::validate, request ids, submission with a ChunkChannel, and the end of a call (its one
// request log line and on_call_end). Frontends only parse their wire format and write replies.
// Work that may take long (tokenizing a large prompt) runs on the gateway's own small admission
// pool, turning engine output into messages on its delivery pool: never on a network thread,
// never on the engine thread.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include <grpcpp/support/status.h>

#include "engine/engine.h"
#include "server/chunk_channel.h"
#include "server/proto_convert.h"
#include "server/request_log.h"
#include "server/request_registry.h"
#include "server/text_codec.h"

namespace boost::asio {
class thread_pool;
}

namespace mlra {

struct GatewayOptions {
  ServingLabels labels;
  size_t max_request_id_bytes = 256;
  size_t max_stop_string_bytes = 256;
  // Unsent output of one request before it is cancelled as too slow a reader (chunk_channel.h).
  size_t max_pending_bytes = size_t(16) << 20;
  // Text prompts over this many bytes are refused untokenized; 0: max_context x the codec's
  // max_token_bytes (never refuses a prompt that could fit), or no bound if the codec has none.
  int64_t max_prompt_bytes = 0;
  int admission_threads = 2;  // tokenize / validate / submit off the network threads
  int delivery_threads = 2;   // turn engine output into wire messages (never the engine thread)
  bool log_prompts = false;   // the request log line carries the prompt text (it may be private)
  // Called when a generation call ends (metrics); may be empty. Any thread.
  std::function<void(const RequestOutcome&)> on_call_end;
};

// The status a call ends with once the engine sent its final chunk.
grpc::Status final_status(FinishReason reason, const std::string& error_message);

class RequestGateway {
 public:
  RequestGateway(Engine& engine, TextCodec codec, GatewayOptions options);
  ~RequestGateway();  // waits for posted work
  RequestGateway(const RequestGateway&) = delete;
  RequestGateway& operator=(const RequestGateway&) = delete;

  Engine& engine() { return engine_; }
  const TextCodec& codec() const { return codec_; }
  const GatewayOptions& options() const { return options_; }
  RequestRegistry& registry() { return registry_; }

  // Runs `work` on an admission thread (may take long) / a delivery thread (must be short).
  void post_admission(std::function<void()> work);
  void post_delivery(std::function<void()> work);

  // A generation call starts: false (UNAVAILABLE) once shutdown began; else counted in flight
  // until leave().
  bool enter();
  void leave();
  void stop_admitting();
  bool admitting() const { return admitting_.load(); }
  int64_t in_flight() const;
  bool wait_idle(std::chrono::steady_clock::time_point deadline);

  int64_t max_prompt_bytes() const { return max_prompt_bytes_; }
  // Text -> ids; refuses (OUT_OF_RANGE) a text over max_prompt_bytes() before tokenizing it.
  grpc::Status tokenize(std::string_view text, std::vector<int32_t>& ids) const;
  grpc::Status check_request_id(std::string_view id) const;
  // Stop-string sizes, then Engine::validate.
  grpc::Status check(const GenerationRequest& request) const;
  // Queues the request; its chunks go to `channel`. On error nothing was queued.
  grpc::Status submit(GenerationRequest request, std::shared_ptr<ChunkChannel> channel,
                      uint64_t& handle);

  // Ends a call: fills its duration, logs its line, reports it to on_call_end.
  void end_call(RequestOutcome& outcome);

 private:
  Engine& engine_;
  TextCodec codec_;
  GatewayOptions options_;
  int64_t max_prompt_bytes_ = 0;
  RequestRegistry registry_;
  std::unique_ptr<boost::asio::thread_pool> admission_pool_, delivery_pool_;
  std::atomic<bool> admitting_{true};
  mutable std::mutex flight_mutex_;
  std::condition_variable idle_;
  int64_t in_flight_ = 0;
};

}  // namespace mlra
