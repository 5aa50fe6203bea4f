// `mlra-serve serve`: load a config (configs/default.json unless --config), apply command-line
// overrides, build the serving stack and serve gRPC until SIGTERM/SIGINT, then shut down
// gracefully (stop admitting, drain for --grace-s, abort the rest, exit 0).
#pragma once

#include <CLI/CLI.hpp>

namespace mlra {

// Registers the subcommand; its callback stores the process exit code (0 clean shutdown,
// 1 runtime failure such as a model that does not load, 2 bad configuration).
void register_serve_command(CLI::App& app, int& exit_code);

}  // namespace mlra
