// One structured line per generation call when it ends, whichever protocol brought it (gRPC
// Generate/Complete, HTTP completions/chat), in logfmt (key=value, values with spaces or quotes
// quoted and escaped) so log tools can parse it:
//   request protocol=grpc method=Generate id=req-7 status=OK finish=length prompt_tokens=12
//   completion_tokens=40 cached_prompt_tokens=0 ttft_ms=3.1 duration_ms=52.8
// `status` is the gRPC status name for both protocols (HTTP lines add http_status=NNN). Rejected
// calls carry finish=none and error="..."; the prompt text appears only when the server runs
// with log_prompts (it may be private).
#pragma once

#include <chrono>
#include <string>
#include <string_view>

#include <grpcpp/support/status.h>

#include "engine/request.h"

namespace mlra {

struct RequestOutcome {
  std::string protocol = "grpc";  // "grpc" | "http"
  std::string method;             // "Generate" | "Complete" | "completions" | "chat.completions"
  std::string request_id;         // empty when rejected before an id was assigned
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  grpc::StatusCode code = grpc::StatusCode::OK;
  std::string error_message;                         // the status message when code != OK
  FinishReason finish_reason = FinishReason::kNone;  // kNone: no final chunk reached the call
  Usage usage;                                       // from the final chunk
  double ttft_s = -1;                                // call start -> first token; -1: none
  double duration_s = 0;                             // call start -> status
  std::string prompt_text;                           // filled only when prompts are logged
  int http_status = 0;                               // HTTP calls: the response status
};

// "OK", "CANCELLED", "INVALID_ARGUMENT", ... (the names of grpc::StatusCode).
const char* status_code_name(grpc::StatusCode code);

// The line without the logger's prefix.
std::string format_request_log(const RequestOutcome& outcome);

}  // namespace mlra
