// `mlra-bench attention`: decode paged-attention kernel time per variant at the paper's per-rank
// shapes (MLRA-4 TP4, GLA-2 TP2, MLA, GQA TP8), context 16K..1M and batch 1..64, against the
// measured device-to-device copy bandwidth of the same GPU in the same run.
#pragma once

#include <CLI/CLI.hpp>

namespace mlra {

void register_bench_attention(CLI::App& app, int& exit_code);

}  // namespace mlra
