// `mlra-bench control`: per-step overhead of the TP control channel for a decode step (default
// batch 64): step-plan serialisation (with rank 0's sampling rows), send to every rank, decode on
// the rank, and the replies (Ack from ranks > 0, sampled token ids from rank 0) back to the
// frontend; for comparison the raw-logits reply tools use ([batch, vocab] float32 from rank 0).
#pragma once

#include <CLI/CLI.hpp>

namespace mlra {

void register_bench_control(CLI::App& app, int& exit_code);

}  // namespace mlra
