// Request validation: field ranges follow vLLM / OpenAI conventions (header).
#include "engine/request_validator.h"

#include <cmath>

#include <fmt/format.h>

namespace mlra {

namespace {

RequestError invalid(const std::string& message) {
  return RequestError(ErrorCode::kInvalidArgument, message);
}

bool finite(float x) {
  return std::isfinite(x);
}

std::optional<RequestError> check_params(const SamplingParams& p, const RequestLimits& limits) {
  if (p.prompt_logprobs >= 0 ? p.max_tokens < 0 : p.max_tokens < 1) {
    return invalid(fmt::format(
        "max_tokens must be >= 1, or 0 when prompt logprobs are asked for (got {})", p.max_tokens));
  }
  if (!finite(p.temperature) || p.temperature < 0.0f) {
    return invalid(fmt::format("temperature must be finite and >= 0 (got {})", p.temperature));
  }
  if (p.top_k < -1)
    return invalid(fmt::format("top_k must be >= 0, or -1/0 for off (got {})", p.top_k));
  if (!finite(p.top_p) || p.top_p <= 0.0f || p.top_p > 1.0f) {
    return invalid(fmt::format("top_p must be in (0, 1] (got {})", p.top_p));
  }
  if (!finite(p.min_p) || p.min_p < 0.0f || p.min_p > 1.0f) {
    return invalid(fmt::format("min_p must be in [0, 1] (got {})", p.min_p));
  }
  if (!finite(p.repetition_penalty) || p.repetition_penalty <= 0.0f) {
    return invalid(
        fmt::format("repetition_penalty must be finite and > 0 (got {})", p.repetition_penalty));
  }
  if (!finite(p.frequency_penalty) || std::fabs(p.frequency_penalty) > 2.0f) {
    return invalid(
        fmt::format("frequency_penalty must be in [-2, 2] (got {})", p.frequency_penalty));
  }
  if (!finite(p.presence_penalty) || std::fabs(p.presence_penalty) > 2.0f) {
    return invalid(fmt::format("presence_penalty must be in [-2, 2] (got {})", p.presence_penalty));
  }
  if (static_cast<int64_t>(p.stop.size()) > limits.max_stop_strings) {
    return invalid(fmt::format("too many stop strings: {} (at most {})", p.stop.size(),
                               limits.max_stop_strings));
  }
  for (size_t i = 0; i < p.stop.size(); ++i) {
    if (p.stop[i].empty()) return invalid(fmt::format("stop string {} is empty", i));
  }
  for (int32_t t : p.stop_token_ids) {
    if (t < 0 || t >= limits.text_vocab_size) {
      return invalid(fmt::format("stop_token_ids: {} is outside the vocabulary [0, {})", t,
                                 limits.text_vocab_size));
    }
  }
  if (p.logprobs < 0 || p.logprobs > limits.max_logprobs) {
    return invalid(
        fmt::format("logprobs must be in [0, {}] (got {})", limits.max_logprobs, p.logprobs));
  }
  if (p.prompt_logprobs < -1 || p.prompt_logprobs > limits.max_logprobs) {
    return invalid(fmt::format("prompt_logprobs must be in [0, {}], or -1 for none (got {})",
                               limits.max_logprobs, p.prompt_logprobs));
  }
  return std::nullopt;
}

}  // namespace

std::optional<RequestError> validate_request(const GenerationRequest& request,
                                             const RequestLimits& limits) {
  const auto& prompt = request.prompt_tokens;
  if (prompt.empty()) return invalid("prompt is empty");
  for (size_t i = 0; i < prompt.size(); ++i) {
    if (prompt[i] < 0 || prompt[i] >= limits.text_vocab_size) {
      return invalid(fmt::format("prompt token {} at index {} is outside the vocabulary [0, {})",
                                 prompt[i], i, limits.text_vocab_size));
    }
  }
  if (auto error = check_params(request.params, limits)) return error;
  const int64_t total = static_cast<int64_t>(prompt.size()) + request.params.max_tokens;
  if (total > limits.max_context) {
    return RequestError(
        ErrorCode::kOutOfRange,
        fmt::format(
            "prompt ({} tokens) + max_tokens ({}) = {} exceeds the maximum context of {} tokens",
            prompt.size(), request.params.max_tokens, total, limits.max_context));
  }
  return std::nullopt;
}

}  // namespace mlra
