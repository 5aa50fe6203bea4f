// What the engine thread reports for monitoring, and the interface it reports through. The
// engine measures (it alone knows when a request was scheduled and when each token appeared);
// an implementation in server/ exports (Prometheus, HTTP). The engine never sees HTTP.
// Calls come only from the engine thread, once per executed step and once per finished
// request; implementations must not block (atomics and histogram observes only).
// The base class is the null implementation: every hook does nothing.
#pragma once

#include <cstdint>
#include <span>

#include "engine/request.h"

namespace mlra {

// One executed step. The spans are valid only during the call.
struct StepMetrics {
  int32_t num_tokens = 0;       // tokens computed this step (decodes + prefill chunks)
  int32_t num_decode_seqs = 0;  // sequences that computed exactly one new token
  // Latent/KV cache bytes one rank reads for the decode sequences of this step: the sum over
  // them of (context length x cache bytes per token per rank, all layers), i.e. each decode
  // attends once to its whole cached context in every layer. 0 when the step has no decode.
  int64_t decode_cache_bytes_read_per_rank = 0;
  double execute_seconds = 0;                     // runner->execute (forward + sampling) wall time
  std::span<const double> time_to_first_token_s;  // submit -> first token, per request
  std::span<const double> inter_token_latency_s;  // gap before each later token, per token
  std::span<const double> queue_time_s;           // submit -> first scheduled, per request
};

// One request at its final chunk. Times are engine-side (submit() to the chunk's step).
struct RequestMetrics {
  FinishReason finish_reason = FinishReason::kNone;
  int32_t prompt_tokens = 0;
  int32_t generation_tokens = 0;
  double e2e_s = 0;                     // submit -> final chunk
  double prefill_s = -1;                // first scheduled -> first token; -1: no token
  double decode_s = -1;                 // first token -> last token; -1: no token
  double time_per_output_token_s = -1;  // decode_s / (tokens - 1); -1: fewer than 2 tokens
};

class EngineMetrics {
 public:
  virtual ~EngineMetrics() = default;
  virtual void on_step(const StepMetrics&) {}
  virtual void on_request_finished(const RequestMetrics&) {}
};

}  // namespace mlra
