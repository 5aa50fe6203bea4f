// Request log line: logfmt formatting and gRPC status names (header).
#include "server/request_log.h"

#include <algorithm>

#include <fmt/format.h>

namespace mlra {
namespace {

// logfmt value: bare when it is a plain token, else quoted with \" \\ \n \t and \xNN escapes.
void append_value(std::string& out, std::string_view v) {
  const bool bare = !v.empty() && v.find_first_of(" \"\\=\t\r\n") == std::string_view::npos &&
                    std::all_of(v.begin(), v.end(), [](char c) { return c > 0x20 && c < 0x7f; });
  if (bare) {
    out.append(v);
    return;
  }
  out += '"';
  for (char c : v) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\r':
        out += "\\r";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
          out += fmt::format("\\x{:02x}", static_cast<unsigned char>(c));
        } else {
          out += c;  // UTF-8 bytes pass through
        }
    }
  }
  out += '"';
}

void field(std::string& out, std::string_view key, std::string_view value) {
  out += ' ';
  out.append(key);
  out += '=';
  append_value(out, value);
}

}  // namespace

const char* status_code_name(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

std::string format_request_log(const RequestOutcome& o) {
  std::string out = "request";
  field(out, "protocol", o.protocol);
  field(out, "method", o.method);
  field(out, "id", o.request_id.empty() ? "-" : o.request_id);
  field(out, "status", status_code_name(o.code));
  if (o.http_status != 0) field(out, "http_status", std::to_string(o.http_status));
  field(out, "finish", finish_reason_name(o.finish_reason));
  field(out, "prompt_tokens", std::to_string(o.usage.prompt_tokens));
  field(out, "completion_tokens", std::to_string(o.usage.completion_tokens));
  field(out, "cached_prompt_tokens", std::to_string(o.usage.cached_prompt_tokens));
  field(out, "ttft_ms", o.ttft_s < 0 ? "-" : fmt::format("{:.2f}", o.ttft_s * 1e3));
  field(out, "duration_ms", fmt::format("{:.2f}", o.duration_s * 1e3));
  if (o.code != grpc::StatusCode::OK) field(out, "error", o.error_message);
  if (!o.prompt_text.empty()) field(out, "prompt", o.prompt_text);
  return out;
}

}  // namespace mlra
