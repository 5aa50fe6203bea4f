// `mlra-serve inspect`: prints a model's variant, dims, parameter count, dtype and the per-GPU
// KV-cache table at TP 1/2/4/8 (bf16 and FP8 bytes per token, kv_cache_dtype), from a checkpoint
// folder (validated on the way) or from a config.json alone (--config-only). The report is
// written to a stream so tests can read it.
#pragma once

#include <filesystem>
#include <ostream>
#include <string>

namespace CLI {
class App;
}

namespace mlra {

struct InspectOptions {
  std::filesystem::path path;  // checkpoint folder, or config.json with config_only
  bool config_only = false;
  std::string attention;  // variant name; empty: inferred from the checkpoint (not config-only)
};

// Registers the `inspect` subcommand; its callback prints to stdout, reports an error on stderr
// and stores the exit code (0 or 1).
void register_inspect_command(CLI::App& app, int& exit_code);

// Throws ConfigError / CheckpointError (or std::invalid_argument for a bad variant name).
void run_inspect(const InspectOptions& options, std::ostream& out);

}  // namespace mlra
