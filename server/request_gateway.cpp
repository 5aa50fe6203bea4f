// RequestGateway: the checks in the order that keeps refusals cheap (ids and sizes, then the
// byte bound, then tokenizing, then the engine's own validation), and the call bookkeeping.
#include "server/request_gateway.h"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>

namespace mlra {
namespace {

grpc::Status invalid(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

}  // namespace

grpc::Status final_status(FinishReason reason, const std::string& error_message) {
  switch (reason) {
    case FinishReason::kCancelled:
      return grpc::Status(grpc::StatusCode::CANCELLED, "request cancelled");
    case FinishReason::kAborted:
      return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                          "request aborted: the server is shutting down");
    case FinishReason::kError:
      return grpc::Status(grpc::StatusCode::INTERNAL, "generation failed: " + error_message);
    default:
      return grpc::Status::OK;
  }
}

RequestGateway::RequestGateway(Engine& engine, TextCodec codec, GatewayOptions options)
    : engine_(engine),
      codec_(std::move(codec)),
      options_(std::move(options)),
      admission_pool_(
          std::make_unique<boost::asio::thread_pool>(std::max(1, options_.admission_threads))),
      delivery_pool_(
          std::make_unique<boost::asio::thread_pool>(std::max(1, options_.delivery_threads))) {
  max_prompt_bytes_ = options_.max_prompt_bytes;
  if (max_prompt_bytes_ == 0 && codec_.max_token_bytes > 0) {
    max_prompt_bytes_ = engine_.options().max_context * int64_t(codec_.max_token_bytes);
  }
}

RequestGateway::~RequestGateway() {
  admission_pool_->join();
  delivery_pool_->join();
}

void RequestGateway::post_admission(std::function<void()> work) {
  boost::asio::post(*admission_pool_, std::move(work));
}

void RequestGateway::post_delivery(std::function<void()> work) {
  boost::asio::post(*delivery_pool_, std::move(work));
}

bool RequestGateway::enter() {
  if (!admitting_) return false;
  std::lock_guard lock(flight_mutex_);
  ++in_flight_;
  return true;
}

void RequestGateway::leave() {
  {
    std::lock_guard lock(flight_mutex_);
    --in_flight_;
  }
  idle_.notify_all();
}

void RequestGateway::stop_admitting() {
  admitting_ = false;
}

int64_t RequestGateway::in_flight() const {
  std::lock_guard lock(flight_mutex_);
  return in_flight_;
}

bool RequestGateway::wait_idle(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(flight_mutex_);
  return idle_.wait_until(lock, deadline, [this] { return in_flight_ == 0; });
}

grpc::Status RequestGateway::tokenize(std::string_view text, std::vector<int32_t>& ids) const {
  if (max_prompt_bytes_ > 0 && int64_t(text.size()) > max_prompt_bytes_) {
    return grpc::Status(
        grpc::StatusCode::OUT_OF_RANGE,
        fmt::format("prompt text is {} bytes long: more than fit the maximum context of {} tokens "
                    "({} bytes at most)",
                    text.size(), engine_.options().max_context, max_prompt_bytes_));
  }
  try {
    ids = codec_.encode(text);
  } catch (const std::exception& e) {
    return invalid(fmt::format("prompt text could not be tokenized: {}", e.what()));
  }
  return grpc::Status::OK;
}

grpc::Status RequestGateway::check_request_id(std::string_view id) const {
  if (id.size() > options_.max_request_id_bytes) {
    return invalid(fmt::format("request_id is {} bytes long (at most {})", id.size(),
                               options_.max_request_id_bytes));
  }
  return grpc::Status::OK;
}

grpc::Status RequestGateway::check(const GenerationRequest& request) const {
  const std::vector<std::string>& stop = request.params.stop;
  for (size_t i = 0; i < stop.size(); ++i) {
    if (stop[i].size() > options_.max_stop_string_bytes) {
      return invalid(fmt::format("stop string {} is {} bytes long (at most {})", i, stop[i].size(),
                                 options_.max_stop_string_bytes));
    }
  }
  if (auto error = engine_.validate(request)) return to_grpc_status(*error);
  return grpc::Status::OK;
}

grpc::Status RequestGateway::submit(GenerationRequest request,
                                    std::shared_ptr<ChunkChannel> channel, uint64_t& handle) {
  try {
    handle =
        engine_.submit(std::move(request), [channel = std::move(channel)](GenerationChunk&& chunk) {
          channel->push(std::move(chunk));
        });
  } catch (const RequestError& e) {
    return to_grpc_status(e);
  }
  return grpc::Status::OK;
}

void RequestGateway::end_call(RequestOutcome& outcome) {
  outcome.duration_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - outcome.start).count();
  spdlog::info("{}", format_request_log(outcome));
  if (options_.on_call_end) options_.on_call_end(outcome);
}

}  // namespace mlra
