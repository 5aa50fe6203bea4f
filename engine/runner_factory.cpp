// make_runner: the in-process runner for TP=1, ProcessRunner otherwise.
#include "engine/runner_factory.h"

#include "engine/local_runner.h"
#include "engine/process_runner.h"

namespace mlra {

std::unique_ptr<ModelRunner> make_runner(const RunnerConfig& config,
                                         const WorkerProcessOptions& process) {
  if (config.tp == 1) return make_local_runner(config);
  return std::make_unique<ProcessRunner>(config, process);
}

}  // namespace mlra
