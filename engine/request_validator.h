// Checks a GenerationRequest against the model and engine limits before it is queued. Every
// rejection names the offending field and the allowed range, so clients can fix the request.
#pragma once

#include <cstdint>
#include <optional>

#include "engine/request.h"

namespace mlra {

struct RequestLimits {
  int64_t text_vocab_size = 0;  // valid token ids are [0, text_vocab_size)
  int64_t max_context = 0;      // prompt + max_tokens must fit
  int32_t max_stop_strings = 16;
  int32_t max_logprobs = 20;
};

// nullopt when valid; kInvalidArgument for bad fields, kOutOfRange when the context is exceeded.
std::optional<RequestError> validate_request(const GenerationRequest& request,
                                             const RequestLimits& limits);

}  // namespace mlra
