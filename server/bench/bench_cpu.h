// `mlra-bench cpu`: tokens/s of the CPU backend on a small model (default: the tiny MLRA-4 test
// checkpoint), prefill and decode at a few batch sizes, so CPU regressions are visible.
#pragma once

#include <CLI/CLI.hpp>

namespace mlra {

void register_bench_cpu(CLI::App& app, int& exit_code);

}  // namespace mlra
