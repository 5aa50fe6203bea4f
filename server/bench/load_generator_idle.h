// Threads and memory of a running server while it holds many open streams: opens N streamed
// requests over gRPC or HTTP (each asking for far more tokens than it will get before the
// measurement, so it stays open, running or queued), waits until the server holds them all
// (Stats: running + waiting), reads the server's thread count and resident memory from
// /proc/<pid>/status, then closes them all and waits for the server to be idle again. For
// `mlra-bench serve --idle 100,1000,10000 --server-pid PID` (scripts/idle_streams.sh);
// loopback only: the server must be on this machine.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace mlra {

struct IdleSample {
  std::string protocol;  // "grpc" | "http"
  int32_t streams = 0;
  int64_t server_threads = 0;
  int64_t server_rss_bytes = 0;
  double open_s = 0;  // until the server held them all
};

// `http_target` empty: gRPC only. Throws std::runtime_error on failure (server gone, streams
// refused, the server not holding them within a minute).
std::vector<IdleSample> measure_idle_streams(const std::string& grpc_target,
                                             const std::string& http_target, int server_pid,
                                             const std::vector<int32_t>& counts);

std::string format_idle_samples(const std::vector<IdleSample>& samples);

}  // namespace mlra
