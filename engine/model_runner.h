// What the engine needs from a model: run one StepBatch (on however many ranks) and sample one
// token per requested logits row where the logits are (rank 0: host or GPU), so only token ids
// and asked-for logprobs travel back. Implementations: an in-process runner (one rank, CPU or
// CUDA) and the multi-process TP runner that drives one worker per device. The scheduler never
// knows which one it talks to.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/sampling_batch.h"
#include "models/model_config.h"
#include "models/step_batch.h"

namespace mlra {

// What one TP rank reports once its shard is loaded.
struct RankInfo {
  int32_t rank = 0;
  int32_t device = 0;   // the device ordinal the rank was given (the cuda backend runs there)
  int64_t pid = 0;      // the process that holds the rank
  std::string backend;  // the backend's own name, e.g. "cpu" or "cuda:1 (<GPU name>)"
  int64_t weight_bytes = 0;
  int64_t cache_bytes_per_token = 0;  // all layers
  int64_t cache_values_per_token_per_layer = 0;
  int64_t num_pages = 0;     // allocated, or (GPU-sized cache, before allocation) the most that fit
  std::string communicator;  // a worker's all-reduce (communicator_kind_name); empty in-process
};

struct RunnerInfo {
  std::string backend;  // "cpu", "cuda"
  int32_t tp = 1;
  int32_t page_size = 64;
  int64_t num_pages = 0;              // pages every rank holds (same page ids on all ranks)
  int64_t cache_bytes_per_token = 0;  // per rank (the widest), all layers
  int64_t cache_values_per_token_per_layer = 0;  // per rank (the widest)
  int64_t weight_bytes_per_rank = 0;             // the largest rank's
  int64_t max_context = 0;
  std::vector<RankInfo> ranks;  // index = rank
};

struct RunnerError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  virtual const ModelConfig& config() const = 0;
  virtual RunnerInfo info() const = 0;
  // Runs `step` and samples logits row r (of step.logit_rows[r]) with sampling.rows[r]
  // (sampling.size() == step.logit_rows.size()); `out` gets one token per row. The result is
  // what the CPU Sampler would pick from the same logits.
  // Throws RunnerError when a worker died or hung (the engine fails in-flight requests then).
  virtual void execute(const StepBatch& step, const SamplingBatch& sampling,
                       SampledTokens& out) = 0;
  // Runs `step` and returns the raw logits instead, step.logit_rows.size() rows of
  // config().vocab_size floats, on the host (perplexity, golden-logit tests, benchmarks).
  virtual void execute(const StepBatch& step, std::vector<float>& logits) = 0;
  // False once a worker is lost; health reports NOT_SERVING.
  virtual bool healthy() const { return true; }
};

}  // namespace mlra
