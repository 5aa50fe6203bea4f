// `mlra-serve client`: a command-line gRPC client of a running server. Generates (streamed with
// --stream, else one Complete call) and prints the text to stdout and a summary line to stderr;
// or --health, --info, --stats, --list-services.
#pragma once

#include <CLI/CLI.hpp>

namespace mlra {

// Exit codes: 0 success (health: SERVING), 1 RPC failure or not SERVING, 2 bad flags.
void register_client_command(CLI::App& app, int& exit_code);

}  // namespace mlra
