// `mlra-bench engine`: the engine's own host time per decode step (scheduling, page tables,
// sampling rows, appending tokens, detokenizing, stop checks, emitting chunks), measured with a
// runner that does no model work but holds the step for a set device time. It prints how long
// the runner (standing in for the GPU) sits idle between steps: the host overhead a decode step
// pays on top of the device's work, and what overlapping it would recover.
#pragma once

#include <CLI/CLI.hpp>

namespace mlra {

void register_bench_engine(CLI::App& app, int& exit_code);

}  // namespace mlra
