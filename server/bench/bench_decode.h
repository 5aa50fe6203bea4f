// `mlra-bench decode`: end-to-end decode step time of the 2.9B configs on one GPU with random
// bf16 weights (synthetic checkpoint), per TP rank share (rank 0's shard; the all-reduce is not
// run in the step), batch x context grid, eager and with CUDA graphs, against the roofline
// (weight + cache bytes / copy bandwidth measured in the same run, plus 2 x layers x the NCCL
// all-reduce time measured on this machine's GPUs when it has the TP degree's).
#pragma once

#include <CLI/CLI.hpp>

namespace mlra {

void register_bench_decode(CLI::App& app, int& exit_code);

}  // namespace mlra
