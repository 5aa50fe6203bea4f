// `mlra-serve generate`: offline generation without a server. Builds the same serving stack as
// `serve` in-process, submits one request and streams its text to stdout (logs and the summary
// go to stderr).
#pragma once

#include <CLI/CLI.hpp>

namespace mlra {

// Exit codes: 0 success, 1 runtime failure (model does not load, generation error),
// 2 bad flags, configuration or request (e.g. prompt longer than the context).
void register_generate_command(CLI::App& app, int& exit_code);

}  // namespace mlra
