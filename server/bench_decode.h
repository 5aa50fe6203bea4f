// `mlra-bench decode`: end-to-end decode step time of the 2.9B configs on one GPU with random
// bf16 weights (synthetic checkpoint), per TP rank share (rank 0's shard; the all-reduce is not
// included), batch x context grid, against the roofline (weight + cache bytes / copy bandwidth
// measured in the same run).
#pragma once

#include <CLI/CLI.hpp>

namespace mlra {

void register_bench_decode(CLI::App& app, int& exit_code);

}  // namespace mlra
