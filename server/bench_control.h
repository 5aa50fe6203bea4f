// `mlra-bench control`: per-step overhead of the TP control channel for a decode step (default
// batch 64): StepBatch serialisation, send to every rank, decode on the rank, and the reply
// (Ack from ranks > 0, [batch, vocab] float32 logits from rank 0) back to the frontend.
#pragma once

#include <CLI/CLI.hpp>

namespace mlra {

void register_bench_control(CLI::App& app, int& exit_code);

}  // namespace mlra
