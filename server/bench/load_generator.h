// A gRPC load generator for a running mlra-serve: N concurrent Generate streams (gRPC callback
// API, so a thousand streams need no thousand threads) with a mix of prompt and output lengths,
// a share of prompts that start with a common prefix, and a share that the client cancels after
// a random number of chunks. It records client-side TTFT / inter-token / end-to-end times and
// checks the serving contract: every stream ends (none hung), with exactly one final chunk
// consistent with its status, the promised token count, and afterwards (Stats) no request
// running or waiting and no cache page referenced. `mlra-bench serve` is its command line.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <grpcpp/support/status.h>

#include "proto/mlra.grpc.pb.h"

namespace mlra {

struct LoadOptions {
  int32_t concurrency = 64;  // streams open at once
  int32_t num_requests = 0;  // in total; 0: concurrency (every stream opened at once)
  int32_t min_prompt_tokens = 8, max_prompt_tokens = 128;
  int32_t min_output_tokens = 16, max_output_tokens = 128;  // clamped to the model's context
  double cancel_fraction = 0.1;          // cancelled by the client after 1..max_tokens chunks
  double shared_prefix_fraction = 0.25;  // prompts that start with one common prefix
  int32_t shared_prefix_tokens = 32;
  float temperature = 0.8f;  // seeded per request, so runs repeat
  uint64_t seed = 1;
  int32_t channels = 4;                               // TCP connections the streams are spread over
  std::chrono::milliseconds stream_deadline{300000};  // a stream still open then is hung
  bool check_cache_free = true;  // poll Stats after the run (off when the server goes away)
  std::chrono::milliseconds cache_free_wait{10000};
  // Error statuses that are expected (counted, not failures), e.g. UNAVAILABLE during shutdown.
  std::vector<grpc::StatusCode> tolerated;
};

struct StreamRecord {
  int32_t prompt_tokens = 0;
  int32_t max_tokens = 0;
  int32_t cancel_after_chunks = 0;  // 0: not cancelled by the client
  bool cancelled_by_client = false;
  bool done = false;
  grpc::StatusCode code = grpc::StatusCode::UNKNOWN;
  std::string message;
  int32_t chunks = 0;
  int32_t finish_chunks = 0;
  bool chunk_after_finish = false;
  v1::FinishReason finish_reason = v1::FINISH_REASON_UNSPECIFIED;
  int32_t tokens = 0;
  int32_t usage_completion_tokens = -1;
  double ttft_s = -1;
  double e2e_s = 0;
  std::vector<double> itl_s;
};

struct LoadReport {
  std::string protocol = "grpc";  // "grpc" | "http"
  LoadOptions options;
  std::vector<StreamRecord> streams;
  double wall_s = 0;
  std::optional<v1::StatsResponse> final_stats;
  std::vector<std::string> failures;  // empty: every check passed
  bool ok() const { return failures.empty(); }
};

// Runs the load against `target` ("host:port"). Throws std::runtime_error when the server
// cannot be reached or the options do not fit the model (ModelInfo).
LoadReport run_load(const std::string& target, const LoadOptions& options);

// The seeded requests of a run (both protocols send the same plan) and their empty records.
struct LoadPlan {
  std::vector<v1::GenerateRequest> requests;
  std::vector<StreamRecord> records;
};
LoadPlan make_load_plan(const LoadOptions& options, const v1::ModelInfoResponse& info);
v1::ModelInfoResponse fetch_model_info(v1::Mlra::Stub& stub, const std::string& target);
// Adds a failure for every stream that broke the contract (at most ten named).
void check_streams(LoadReport& report);
// Polls Stats until nothing runs, waits or holds a page, or adds a failure.
void check_cache_free(v1::Mlra::Stub& stub, LoadReport& report);

// The problem with one finished stream, or "" when it kept the contract.
std::string check_stream(const StreamRecord& s, const LoadOptions& options);

// Throughput, TTFT / ITL / e2e percentiles, counts by status and finish reason, the checks.
std::string format_report(const LoadReport& report);

// Nearest-rank percentile (q in [0, 100]) of unsorted values; NaN when empty.
double percentile(std::vector<double> values, double q);

}  // namespace mlra
