// One POST /v1/completions or /v1/chat/completions: the HTTP twin of the gRPC generation
// reactors over the same RequestGateway (same admission, validation, request log line and
// metrics). Each prompt x n is one engine request with its own ChunkChannel; the channels wake
// the connection's strand, which writes one merged server-sent-events piece per write (or, not
// streamed, one JSON object at the end). A client that disconnects or lags more than
// max_pending_bytes has every engine request of the call cancelled at once; the call ends (its
// log line, its slot in flight) only after each request's final chunk, so pages are free by then.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "server/http/chat_template.h"
#include "server/http/http_exchange.h"
#include "server/request_gateway.h"

namespace mlra::http {

struct ApiContext {
  std::shared_ptr<RequestGateway> gateway;
  std::string model_name;                     // what /v1/models lists and requests may name
  std::optional<ChatTemplate> chat_template;  // none: chat completions answer 400
  int32_t max_n = 16;                         // choices per prompt
  int32_t max_choices = 256;                  // prompts x n per call
};

// Serves the request on `exchange` (call on its strand).
void serve_completion(const ApiContext& api, std::shared_ptr<Exchange> exchange, bool chat);

}  // namespace mlra::http
