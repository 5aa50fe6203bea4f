// MlraService: the small methods, each parse -> answer -> Finish on gRPC's default reactor; an
// undecodable request of any method logs a request line and counts like a refused call.
#include "server/mlra_service.h"

#include <fmt/format.h>
#include <grpcpp/server_context.h>

#include "server/grpc_generation_call.h"
#include "server/utf8.h"

namespace mlra {
namespace {

grpc::Status invalid(const std::string& message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, message);
}

// Parses `raw` as Request, runs `answer(request, response)` and finishes the call; an
// undecodable request ends INVALID_ARGUMENT and gets its log line.
template <typename Request, typename Response, typename Answer>
grpc::ServerUnaryReactor* unary(RequestGateway& gateway, grpc::CallbackServerContext* ctx,
                                const grpc::ByteBuffer* raw, grpc::ByteBuffer* out,
                                const char* method, const char* request_name, Answer answer) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  Request request;
  if (!parse_message(*raw, request)) {
    RequestOutcome outcome;
    outcome.method = method;
    const grpc::Status status = undecodable(request_name);
    outcome.code = status.error_code();
    outcome.error_message = status.error_message();
    gateway.end_call(outcome);
    reactor->Finish(status);
    return reactor;
  }
  Response response;
  const grpc::Status status = answer(request, response);
  if (status.ok()) serialize_message(response, out);
  reactor->Finish(status);
  return reactor;
}

}  // namespace

grpc::ServerWriteReactor<grpc::ByteBuffer>* MlraService::Generate(grpc::CallbackServerContext* ctx,
                                                                  const grpc::ByteBuffer* request) {
  return start_generate_call(gateway_, ctx, request);
}

grpc::ServerUnaryReactor* MlraService::Complete(grpc::CallbackServerContext* ctx,
                                                const grpc::ByteBuffer* request,
                                                grpc::ByteBuffer* response) {
  return start_complete_call(gateway_, ctx, request, response);
}

grpc::ServerUnaryReactor* MlraService::Tokenize(grpc::CallbackServerContext* ctx,
                                                const grpc::ByteBuffer* request,
                                                grpc::ByteBuffer* response) {
  v1::TokenizeRequest parsed;
  if (!parse_message(*request, parsed)) {
    return unary<v1::TokenizeRequest, v1::TokenizeResponse>(
        gateway_, ctx, request, response, "Tokenize", "TokenizeRequest",
        [](const auto&, auto&) { return grpc::Status::OK; });
  }
  // Tokenizing is bounded by the prompt byte limit but may still take milliseconds: off the
  // gRPC thread.
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  gateway_.post_admission([this, reactor, response, text = parsed.text()] {
    v1::TokenizeResponse out;
    std::vector<int32_t> ids;
    grpc::Status status = gateway_.tokenize(text, ids);
    if (status.ok()) {
      for (int32_t t : ids) out.add_token_ids(t);
      serialize_message(out, response);
    }
    reactor->Finish(status);
  });
  return reactor;
}

grpc::ServerUnaryReactor* MlraService::Detokenize(grpc::CallbackServerContext* ctx,
                                                  const grpc::ByteBuffer* request,
                                                  grpc::ByteBuffer* response) {
  return unary<v1::DetokenizeRequest, v1::DetokenizeResponse>(
      gateway_, ctx, request, response, "Detokenize", "DetokenizeRequest",
      [this](const v1::DetokenizeRequest& in, v1::DetokenizeResponse& out) {
        const int64_t vocab = gateway_.engine().model_config().text_vocab_size;
        std::vector<int32_t> ids(in.token_ids().begin(), in.token_ids().end());
        for (size_t i = 0; i < ids.size(); ++i) {
          if (ids[i] < 0 || ids[i] >= vocab) {
            return invalid(fmt::format("token id {} at index {} is outside the vocabulary [0, {})",
                                       ids[i], i, vocab));
          }
        }
        try {
          // Ids may split a character: a proto string must be UTF-8, so U+FFFD stands in.
          out.set_text(valid_utf8(gateway_.codec().decode(ids)));
        } catch (const std::exception& e) {
          return invalid(fmt::format("token ids could not be decoded: {}", e.what()));
        }
        return grpc::Status::OK;
      });
}

grpc::ServerUnaryReactor* MlraService::ModelInfo(grpc::CallbackServerContext* ctx,
                                                 const grpc::ByteBuffer* request,
                                                 grpc::ByteBuffer* response) {
  return unary<v1::ModelInfoRequest, v1::ModelInfoResponse>(
      gateway_, ctx, request, response, "ModelInfo", "ModelInfoRequest",
      [this](const v1::ModelInfoRequest&, v1::ModelInfoResponse& out) {
        fill_model_info(gateway_.engine(), gateway_.options().labels, &out);
        return grpc::Status::OK;
      });
}

grpc::ServerUnaryReactor* MlraService::Cancel(grpc::CallbackServerContext* ctx,
                                              const grpc::ByteBuffer* request,
                                              grpc::ByteBuffer* response) {
  return unary<v1::CancelRequest, v1::CancelResponse>(
      gateway_, ctx, request, response, "Cancel", "CancelRequest",
      [this](const v1::CancelRequest& in, v1::CancelResponse& out) {
        if (in.request_id().empty()) return invalid("request_id is empty");
        bool found = false;
        if (std::optional<uint64_t> handle =
                gateway_.registry().request_cancel(in.request_id(), found)) {
          gateway_.engine().cancel(*handle);
        }
        out.set_found(found);
        return grpc::Status::OK;
      });
}

grpc::ServerUnaryReactor* MlraService::Stats(grpc::CallbackServerContext* ctx,
                                             const grpc::ByteBuffer* request,
                                             grpc::ByteBuffer* response) {
  return unary<v1::StatsRequest, v1::StatsResponse>(
      gateway_, ctx, request, response, "Stats", "StatsRequest",
      [this](const v1::StatsRequest&, v1::StatsResponse& out) {
        fill_stats(gateway_.engine().stats(), gateway_.engine().healthy(), &out);
        return grpc::Status::OK;
      });
}

}  // namespace mlra
