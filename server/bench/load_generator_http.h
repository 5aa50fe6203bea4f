// The load generator's HTTP side: the same request plan, checks and report as the gRPC streams
// (load_generator.h), sent as streamed POST /v1/completions (server-sent events) over one
// connection per stream on a few Asio threads (no thread per stream). A client cancel closes the
// connection after a random number of events. Tokens are counted from the final usage chunk
// (stream_options.include_usage); a stream is OK when it ends with one finish_reason, the usage
// chunk and "data: [DONE]". The plan needs ModelInfo and the cache check needs Stats, so the
// gRPC address of the same server is given too.
#pragma once

#include <string>

#include "server/bench/load_generator.h"

namespace mlra {

// `http_target` "host:port" of the HTTP listener, `grpc_target` of the same server's gRPC port.
LoadReport run_http_load(const std::string& http_target, const std::string& grpc_target,
                         const LoadOptions& options);

}  // namespace mlra
