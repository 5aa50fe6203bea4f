// `mlra-bench load`: what the load-time integrity checks (shape validation, zip CRC-32, finite
// weights) add to loading a checkpoint the way a serving rank does, measured in one run.
#pragma once

#include <CLI/CLI.hpp>

namespace mlra {

void register_bench_load(CLI::App& app, int& exit_code);

}  // namespace mlra
