// The hidden `worker` subcommand of mlra-serve: one tensor-parallel rank, spawned by
// ProcessRunner with a connected control socket on --fd. It receives the runner's config whole,
// builds its Rank (engine/rank.h: weights read through the checkpoint's mmap slices, its slice of
// every cache page) and then answers Step messages in order until Shutdown or until the
// frontend's end of the socket closes.
#pragma once

#include <CLI/CLI.hpp>

namespace mlra {

// Registers `worker --rank r --fd K`; its callback stores the worker's exit code.
void register_worker_command(CLI::App& app, int& exit_code);

// Runs one worker to completion; returns the process exit code (0 after Shutdown).
int run_worker(int rank, int fd);

}  // namespace mlra
