// Chooses the ModelRunner for a run configuration: the in-process runner (engine/local_runner.h)
// for TP=1, the multi-process runner (one worker process per rank, engine/process_runner.h) for
// TP > 1. Either gets the RunnerConfig whole. The engine only ever sees ModelRunner.
#pragma once

#include <filesystem>
#include <memory>

#include "engine/model_runner.h"
#include "engine/runner_config.h"

namespace mlra {

// How the multi-process runner runs its workers: the frontend's business, not part of the run
// configuration the workers receive.
struct WorkerProcessOptions {
  std::filesystem::path worker_binary;  // empty: /proc/self/exe (mlra-serve with `worker`)
  double load_timeout_s = 600;          // Init -> Ready per worker
  double step_timeout_s = 60;           // Step -> Tokens / Logits / Ack
  double shutdown_timeout_s = 5;        // Shutdown -> exit before SIGKILL
};

std::unique_ptr<ModelRunner> make_runner(const RunnerConfig& config,
                                         const WorkerProcessOptions& process = {});

}  // namespace mlra
