// API-facing request types: what a client asks for (GenerationRequest with SamplingParams) and
// what the engine streams back (GenerationChunk). A request is immutable once submitted; the
// engine's mutable per-request state lives in Sequence. No proto types here: server/ converts.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace mlra {

struct SamplingParams {
  int32_t max_tokens = 16;          // >= 1 (0 with prompt_logprobs); kLength after this many
  float temperature = 1.0f;         // 0 = greedy argmax (penalties still apply)
  int32_t top_k = 0;                // 0 (or -1) = off
  float top_p = 1.0f;               // (0, 1]
  float min_p = 0.0f;               // [0, 1]; keep tokens with p >= min_p * p_max
  float repetition_penalty = 1.0f;  // > 0; HF semantics over prompt + generated tokens
  float frequency_penalty = 0.0f;   // [-2, 2]; OpenAI semantics over generated tokens
  float presence_penalty = 0.0f;    // [-2, 2]; OpenAI semantics over generated tokens
  std::optional<uint64_t> seed;     // unset: the engine draws one at submission
  std::vector<std::string> stop;    // at most 16, none empty; matched text is not emitted
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  int32_t logprobs = 0;  // top-n alternatives per token, 0 = no logprobs, max 20
  // < 0: off; n >= 0: every prompt token's logprob after the first, with n alternatives (the
  // prompt is then computed in full: no prefix-cache reuse). Allows max_tokens 0 (scoring only).
  int32_t prompt_logprobs = -1;
};

struct GenerationRequest {
  std::string request_id;              // client-chosen, echoed in logs; may be empty
  std::vector<int32_t> prompt_tokens;  // [P], P >= 1, each in [0, text_vocab_size)
  SamplingParams params;
};

enum class FinishReason { kNone, kLength, kStop, kEos, kCancelled, kAborted, kError };
const char* finish_reason_name(FinishReason reason);  // "none", "length", "stop", ...

struct TopLogprob {
  int32_t token = 0;
  float logprob = 0.0f;
};

// Logprobs are the raw model log-softmax over the text vocabulary (before temperature,
// penalties and truncation), as vLLM returns by default.
struct TokenLogprobs {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<TopLogprob> top;  // params.logprobs entries, highest first
};

struct Usage {
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  int32_t cached_prompt_tokens = 0;  // prompt tokens served from the prefix cache at admission
};

// One streamed piece. token_ids holds every sampled token (also EOS, stop token ids and the
// tokens of a matched stop string); text holds only the text the client should see: EOS and
// stop-token text is never emitted, a stop string and anything after it is cut, and text that
// could still become a stop string is held back until it cannot.
struct GenerationChunk {
  std::vector<int32_t> token_ids;
  std::string text;
  std::vector<TokenLogprobs> logprobs;  // one per token id when params.logprobs > 0
  // With params.prompt_logprobs >= 0, on the first chunk: prompt tokens 1..P-1 (the first prompt
  // token has no context to be predicted from), each as the model scored it at its position.
  std::vector<TokenLogprobs> prompt_logprobs;
  FinishReason finish_reason = FinishReason::kNone;
  std::string stop_string;    // the matched stop string when finish_reason == kStop by string
  std::string error_message;  // set when finish_reason == kError
  Usage usage;                // filled on the final chunk (finish_reason != kNone)
};

enum class ErrorCode { kInvalidArgument, kOutOfRange, kResourceExhausted, kUnavailable };
const char* error_code_name(ErrorCode code);

// A request rejected before admission. The message says which field is wrong and why.
struct RequestError : std::runtime_error {
  RequestError(ErrorCode c, const std::string& message) : std::runtime_error(message), code(c) {}
  ErrorCode code;
};

}  // namespace mlra
