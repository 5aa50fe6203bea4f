// mlra-serve: command-line entry point (serve, generate, inspect, client, perplexity,
// kv-cache-compare, tpla-calibrate, worker). A thin CLI11 dispatcher: every subcommand registers
// itself from its own file, one line each.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "server/cli/client_command.h"
#include "server/cli/generate_command.h"
#include "server/cli/inspect_command.h"
#include "server/cli/kv_cache_compare_command.h"
#include "server/cli/perplexity_command.h"
#include "server/cli/tpla_calibrate_command.h"
#include "server/serve_command.h"
#include "server/worker_command.h"

int main(int argc, char** argv) {
  CLI::App app{"mlra-serve: inference server for Multi-Head Low-Rank Attention models"};
  app.require_subcommand(1);
  int exit_code = 0;
  mlra::register_serve_command(app, exit_code);
  mlra::register_client_command(app, exit_code);
  mlra::register_generate_command(app, exit_code);
  mlra::register_inspect_command(app, exit_code);
  mlra::register_perplexity_command(app, exit_code);
  mlra::register_kv_cache_compare_command(app, exit_code);
  mlra::register_tpla_calibrate_command(app, exit_code);
  mlra::register_worker_command(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);      // --help
    std::fprintf(stderr, "mlra-serve: %s\n", e.what());  // bad command line: one line, exit 2
    return 2;
  }
  return exit_code;
}
