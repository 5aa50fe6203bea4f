// The OpenAI wire format of /v1/completions and /v1/chat/completions: request JSON -> a
// CompletionRequest of engine types (type and shape errors name the field; value ranges are
// left to the one validator the gRPC path uses, engine/request_validator.h), gateway/engine
// refusals -> OpenAI error JSON with the HTTP status, and the response / stream-chunk objects.
// Field names and defaults follow OpenAI; top_k, min_p, repetition_penalty, ignore_eos and
// stop_token_ids are vLLM's extensions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <grpcpp/support/status.h>
#include <nlohmann/json.hpp>

#include "engine/request.h"
#include "server/http/chat_template.h"
#include "server/text_codec.h"

namespace mlra::http {

struct ApiError {
  unsigned status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // empty: null
  std::string code;   // empty: null
};

std::string error_json(const ApiError& error);
// A gateway / engine refusal (gRPC status vocabulary) in OpenAI terms.
ApiError api_error(const grpc::Status& status);
// The HTTP status of a final gRPC-vocabulary status (what the request log line records).
unsigned http_status_of(grpc::StatusCode code);

struct Prompt {
  bool is_text = true;
  std::string text;
  std::vector<int32_t> tokens;
};

struct CompletionRequest {
  bool chat = false;
  std::string model;                  // empty: not given
  std::vector<Prompt> prompts;        // completions (chat: filled by the caller after rendering)
  std::vector<ChatMessage> messages;  // chat
  SamplingParams params;              // engine fields; logprobs/prompt_logprobs set by the call
  int32_t n = 1;
  bool echo = false;
  std::optional<int32_t> logprobs;  // alternatives per token when logprobs were asked for
  bool stream = false;
  bool include_usage = false;
};

// Throws ApiError (400) for malformed JSON, wrong types and unsupported fields.
CompletionRequest parse_completion_request(std::string_view body, bool chat, int32_t max_n);

// One choice's output, accumulated from engine chunks.
struct ChoiceOutput {
  std::vector<int32_t> prompt_tokens;
  std::string text;  // generated text (UTF-8 safe per chunk)
  std::vector<int32_t> tokens;
  std::vector<TokenLogprobs> logprobs;
  std::vector<TokenLogprobs> prompt_logprobs;
  FinishReason finish = FinishReason::kNone;
  Usage usage;
};

// "length" | "stop" for a normal end (EOS and stop strings/ids are "stop"), null otherwise.
nlohmann::json finish_reason_json(FinishReason reason);

// Completions logprobs object ({tokens, token_logprobs, top_logprobs, text_offset}) for the
// given prompt part (echo: first token null) and generated part; offsets start at `offset`.
nlohmann::json completion_logprobs(const TextCodec& codec, const std::vector<int32_t>& prompt,
                                   const std::vector<TokenLogprobs>& prompt_logprobs,
                                   const std::vector<TokenLogprobs>& generated, int32_t top_n,
                                   size_t offset);
// Chat logprobs object ({content: [{token, logprob, bytes, top_logprobs}]}).
nlohmann::json chat_logprobs(const TextCodec& codec, const std::vector<TokenLogprobs>& generated,
                             int32_t top_n);

nlohmann::json usage_json(const Usage& total);

// Serializes with invalid UTF-8 replaced (token strings can split characters).
std::string dump(const nlohmann::json& j);

}  // namespace mlra::http
