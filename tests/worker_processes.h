// Test helper: how the CPU tests start TP worker processes (the build tree's mlra-serve, with
// deadlines generous enough for a loaded 2-core CI machine).
#pragma once

#include <filesystem>

#include "engine/runner_factory.h"

namespace mlra::testing {

inline WorkerProcessOptions test_worker_processes() {
  WorkerProcessOptions p;
  p.worker_binary = std::filesystem::path(MLRA_BINARY_DIR) / "server" / "mlra-serve";
  p.load_timeout_s = 60;
  p.step_timeout_s = 30;
  return p;
}

}  // namespace mlra::testing
