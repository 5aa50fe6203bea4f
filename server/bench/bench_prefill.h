// `mlra-bench prefill`: time of a long prompt's prefill for the 2.9B configs on one GPU (rank 0's
// share of a TP plan, random bf16 weights), whole or in chunks, with the device time split into
// matrix products, attention and the rest (backend op timing), and each family's achieved
// TFLOP/s: is a 32K prefill dominated by attention, and how close to the tensor cores is it?
#pragma once

#include <CLI/CLI.hpp>

namespace mlra {

void register_bench_prefill(CLI::App& app, int& exit_code);

}  // namespace mlra
