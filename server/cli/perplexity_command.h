// `mlra-serve perplexity`: held-out perplexity of a checkpoint on a release-format token file,
// computed through the same runner the server uses (any backend, TP degree, TPLA mode) — the
// end-to-end accuracy check against a training script's own evaluation.
#pragma once

#include <CLI/CLI.hpp>

namespace mlra {

void register_perplexity_command(CLI::App& app, int& exit_code);

}  // namespace mlra
