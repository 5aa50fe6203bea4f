// MlraService: edge checks (prompt form, id, wire-only limits), Engine::validate on the RPC
// thread, then submit and drain. A call that ends early always cancels its engine request and
// waits (bounded) for the engine's final chunk, so "RPC finished" implies "pages freed".
#include "server/mlra_service.h"

#include <memory>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

namespace mlra {
namespace {

grpc::Status invalid(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

// The status a call ends with once the engine sent its final chunk.
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

}  // namespace

MlraService::MlraService(Engine& engine, TextCodec codec, ServiceOptions options)
    : engine_(engine), codec_(std::move(codec)), options_(std::move(options)) {}

grpc::Status MlraService::to_request(const v1::GenerateRequest& proto,
                                     GenerationRequest& out) const {
  switch (proto.prompt_case()) {
    case v1::GenerateRequest::kText:
      if (proto.text().empty()) return invalid("prompt is empty");
      try {
        out.prompt_tokens = codec_.encode(proto.text());
      } catch (const std::exception& e) {
        return invalid(fmt::format("prompt text could not be tokenized: {}", e.what()));
      }
      break;
    case v1::GenerateRequest::kTokenIds:
      out.prompt_tokens.assign(proto.token_ids().ids().begin(), proto.token_ids().ids().end());
      break;
    default:
      return invalid("prompt is empty: set either text or token_ids");
  }
  out.params = to_sampling_params(proto.sampling());
  for (size_t i = 0; i < out.params.stop.size(); ++i) {
    if (out.params.stop[i].size() > options_.max_stop_string_bytes) {
      return invalid(fmt::format("stop string {} is {} bytes long (at most {})", i,
                                 out.params.stop[i].size(), options_.max_stop_string_bytes));
    }
  }
  return grpc::Status::OK;
}

grpc::Status MlraService::run(grpc::ServerContext* ctx, const v1::GenerateRequest& proto,
                              RequestOutcome& outcome, const Emit& emit) {
  if (!admitting_) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        "the server is shutting down and admits no new requests");
  }
  enter();
  struct Leave {
    MlraService* self;
    ~Leave() { self->leave(); }
  } leave_guard{this};

  if (proto.request_id().size() > options_.max_request_id_bytes) {
    return invalid(fmt::format("request_id is {} bytes long (at most {})",
                               proto.request_id().size(), options_.max_request_id_bytes));
  }
  GenerationRequest request;
  if (grpc::Status s = to_request(proto, request); !s.ok()) return s;
  if (auto error = engine_.validate(request)) return to_grpc_status(*error);

  const std::string id = proto.request_id().empty() ? registry_.next_id() : proto.request_id();
  outcome.request_id = id;
  request.request_id = id;
  if (!registry_.reserve(id)) {
    return grpc::Status(grpc::StatusCode::ALREADY_EXISTS,
                        fmt::format("request_id '{}' is already in flight", id));
  }
  grpc::Status status = submit_and_drain(ctx, std::move(request), outcome, emit);
  registry_.release(id);
  return status;
}

grpc::Status MlraService::submit_and_drain(grpc::ServerContext* ctx, GenerationRequest&& request,
                                           RequestOutcome& outcome, const Emit& emit) {
  const std::string& id = outcome.request_id;
  // Shared with the engine's callback: the queue outlives this call if the engine is late.
  auto queue = std::make_shared<ChunkQueue>();
  uint64_t handle = 0;
  try {
    handle = engine_.submit(std::move(request),
                            [queue](GenerationChunk&& chunk) { queue->push(std::move(chunk)); });
  } catch (const RequestError& e) {
    return to_grpc_status(e);
  }
  if (registry_.attach(id, handle)) engine_.cancel(handle);

  bool abandoned = false;  // the client is gone: stop writing, wait for the engine's last chunk
  auto give_up_at = std::chrono::steady_clock::time_point::max();
  auto abandon = [&] {
    engine_.cancel(handle);
    abandoned = true;
    give_up_at = std::chrono::steady_clock::now() + options_.cancel_wait;
  };
  for (;;) {
    std::optional<GenerationChunk> chunk = queue->pop_for(options_.poll_interval);
    if (!chunk) {
      if (!abandoned && ctx->IsCancelled()) abandon();
      if (abandoned && std::chrono::steady_clock::now() > give_up_at) {
        spdlog::warn("request {}: engine did not confirm cancellation in time", id);
        return grpc::Status(grpc::StatusCode::CANCELLED, "request cancelled");
      }
      continue;
    }
    const FinishReason reason = chunk->finish_reason;
    const std::string error = chunk->error_message;
    if (outcome.ttft_s < 0 && !chunk->token_ids.empty()) {
      outcome.ttft_s =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - outcome.start).count();
    }
    if (reason != FinishReason::kNone) {
      outcome.finish_reason = reason;
      outcome.usage = chunk->usage;
    }
    if (!abandoned && !emit(std::move(*chunk))) abandon();
    if (reason == FinishReason::kNone) continue;
    if (abandoned) return grpc::Status(grpc::StatusCode::CANCELLED, "request cancelled");
    return final_status(reason, error);
  }
}

grpc::Status MlraService::Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* request,
                                   grpc::ServerWriter<v1::GenerateResponse>* writer) {
  RequestOutcome outcome;
  outcome.method = "Generate";
  grpc::Status status = run(ctx, *request, outcome, [&](GenerationChunk&& chunk) {
    v1::GenerateResponse response;
    response.set_request_id(outcome.request_id);
    append_chunk(chunk, &response);
    return writer->Write(response);
  });
  return end_call(*request, outcome, std::move(status));
}

grpc::Status MlraService::Complete(grpc::ServerContext* ctx, const v1::GenerateRequest* request,
                                   v1::CompleteResponse* response) {
  RequestOutcome outcome;
  outcome.method = "Complete";
  v1::CompleteResponse collected;
  grpc::Status status = run(ctx, *request, outcome, [&](GenerationChunk&& chunk) {
    append_chunk(chunk, &collected);
    return true;
  });
  if (status.ok()) {
    *response = std::move(collected);
    response->set_request_id(outcome.request_id);
  }
  return end_call(*request, outcome, std::move(status));
}

grpc::Status MlraService::end_call(const v1::GenerateRequest& proto, RequestOutcome& outcome,
                                   grpc::Status status) {
  outcome.code = status.error_code();
  outcome.error_message = status.error_message();
  outcome.duration_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - outcome.start).count();
  if (outcome.request_id.empty()) {  // rejected before an id was assigned; ids may be oversized
    outcome.request_id = proto.request_id().substr(0, options_.max_request_id_bytes);
  }
  if (options_.log_prompts && proto.prompt_case() == v1::GenerateRequest::kText) {
    outcome.prompt_text = proto.text();
  }
  spdlog::info("{}", format_request_log(outcome));
  if (options_.on_call_end) options_.on_call_end(outcome);
  return status;
}

grpc::Status MlraService::Tokenize(grpc::ServerContext*, const v1::TokenizeRequest* request,
                                   v1::TokenizeResponse* response) {
  try {
    for (int32_t t : codec_.encode(request->text())) response->add_token_ids(t);
  } catch (const std::exception& e) {
    return invalid(fmt::format("text could not be tokenized: {}", e.what()));
  }
  return grpc::Status::OK;
}

grpc::Status MlraService::Detokenize(grpc::ServerContext*, const v1::DetokenizeRequest* request,
                                     v1::DetokenizeResponse* response) {
  const int64_t vocab = engine_.model_config().text_vocab_size;
  std::vector<int32_t> ids(request->token_ids().begin(), request->token_ids().end());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab) {
      return invalid(fmt::format("token id {} at index {} is outside the vocabulary [0, {})",
                                 ids[i], i, vocab));
    }
  }
  try {
    response->set_text(codec_.decode(ids));
  } catch (const std::exception& e) {
    return invalid(fmt::format("token ids could not be decoded: {}", e.what()));
  }
  return grpc::Status::OK;
}

grpc::Status MlraService::ModelInfo(grpc::ServerContext*, const v1::ModelInfoRequest*,
                                    v1::ModelInfoResponse* response) {
  fill_model_info(engine_, options_.labels, response);
  return grpc::Status::OK;
}

grpc::Status MlraService::Cancel(grpc::ServerContext*, const v1::CancelRequest* request,
                                 v1::CancelResponse* response) {
  if (request->request_id().empty()) return invalid("request_id is empty");
  bool found = false;
  if (std::optional<uint64_t> handle = registry_.request_cancel(request->request_id(), found)) {
    engine_.cancel(*handle);
  }
  response->set_found(found);
  return grpc::Status::OK;
}

grpc::Status MlraService::Stats(grpc::ServerContext*, const v1::StatsRequest*,
                                v1::StatsResponse* response) {
  fill_stats(engine_.stats(), engine_.healthy(), response);
  return grpc::Status::OK;
}

void MlraService::stop_admitting() {
  admitting_ = false;
}

int64_t MlraService::in_flight() const {
  std::lock_guard lock(flight_mutex_);
  return in_flight_;
}

bool MlraService::wait_idle(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock lock(flight_mutex_);
  return idle_.wait_until(lock, deadline, [this] { return in_flight_ == 0; });
}

void MlraService::enter() {
  std::lock_guard lock(flight_mutex_);
  ++in_flight_;
}

void MlraService::leave() {
  {
    std::lock_guard lock(flight_mutex_);
    --in_flight_;
  }
  idle_.notify_all();
}

}  // namespace mlra
