// `mlra-bench gemv`: small-M (decode) linear layers of the 2.9B model on one GPU, our GEMV
// (kernels/gemv.h) against cuBLAS on the same operands, as time, GB/s and share of the
// device-to-device copy bandwidth measured in the same run.
#pragma once

#include <CLI/CLI.hpp>

namespace mlra {

void register_bench_gemv(CLI::App& app, int& exit_code);

}  // namespace mlra
