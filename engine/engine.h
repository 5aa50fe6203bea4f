// The serving engine: one thread that loops schedule -> runner.execute -> sample ->
// append / stop / free -> emit chunks. submit/cancel/stats/shutdown are thread-safe and never
// block on the engine step; callbacks run on the engine thread and must not block. Every
// accepted request receives exactly one final chunk (finish_reason != kNone).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>

#include "engine/engine_metrics.h"
#include "engine/model_runner.h"
#include "engine/request.h"
#include "engine/token_stream_decoder.h"

namespace mlra {

class Gpt2Tokenizer;

struct EngineOptions {
  int32_t max_running_seqs = 64;
  int32_t max_step_tokens = 512;  // per-step token budget (decodes + prefill chunks)
  int32_t page_size = 0;          // 0: RunnerInfo.page_size; otherwise must equal it
  int64_t num_pages = 0;          // 0: RunnerInfo.num_pages; otherwise at most that
  int64_t max_context = 0;        // 0: RunnerInfo.max_context; clamped to num_pages*page_size
  bool enable_prefix_cache = true;
  int32_t max_waiting = 1024;  // queued (not yet running) requests before kResourceExhausted
  int32_t max_stop_strings = 16;
  int32_t max_logprobs = 20;
  std::shared_ptr<EngineMetrics> metrics;  // null: nothing reported (engine_metrics.h)
};

struct EngineStats {
  int64_t running = 0;
  int64_t waiting = 0;
  int64_t pages_used = 0;    // referenced by at least one sequence
  int64_t pages_cached = 0;  // free but still holding a reusable prefix page
  int64_t pages_total = 0;
  int64_t page_size = 0;
  int64_t prefix_hit_tokens = 0;    // prompt tokens not recomputed thanks to the prefix cache
  int64_t prefix_query_tokens = 0;  // tokens looked up in the prefix cache at admissions
  int64_t prompt_tokens = 0;        // prompt tokens of admitted requests
  int64_t generated_tokens = 0;
  int64_t preemptions = 0;
  int64_t steps = 0;
  int64_t requests_finished = 0;
  int64_t max_context = 0;  // effective limit used by validate()
};

class Engine {
 public:
  using ChunkCallback = std::function<void(GenerationChunk&&)>;

  // Starts the engine thread. The tokenizer must outlive the engine.
  Engine(std::unique_ptr<ModelRunner> runner, const Gpt2Tokenizer& tokenizer,
         EngineOptions options);
  // Same with any text decoder (tests use a fixed token -> string table).
  Engine(std::unique_ptr<ModelRunner> runner, TokenStreamDecoderFactory make_decoder,
         EngineOptions options);
  ~Engine();  // shutdown(false) if still running
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Checks a request against the model and the engine limits without queueing it.
  std::optional<RequestError> validate(const GenerationRequest& request) const;
  // Validates and queues; throws RequestError (invalid, queue full -> kResourceExhausted,
  // unhealthy or shut down -> kUnavailable). Returns a handle for cancel().
  uint64_t submit(GenerationRequest request, ChunkCallback on_chunk);
  // Cancels a queued or running request: its final chunk says kCancelled and its pages are
  // freed within one scheduler step. Unknown or finished handles are ignored.
  void cancel(uint64_t handle);

  EngineStats stats() const;
  bool healthy() const;  // false after a RunnerError or when the runner reports unhealthy
  // Called once, on the engine thread, when the runner fails, before the requests in flight get
  // their error chunks: health can read NOT_SERVING before any client sees the failure.
  void set_failure_callback(std::function<void(const std::string& why)> callback);
  // Stops admitting. drain: finish in-flight requests first; otherwise abort them (kAborted).
  // Blocks until the engine thread exits. Idempotent.
  void shutdown(bool drain);

  const ModelConfig& model_config() const;
  RunnerInfo runner_info() const;
  const EngineOptions& options() const;  // with the RunnerInfo defaults filled in

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mlra
