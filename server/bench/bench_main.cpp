// mlra-bench: benchmarks as CLI11 subcommands, each registered from its own file.
#include <CLI/CLI.hpp>

#include "server/bench/bench_attention.h"
#include "server/bench/bench_control.h"
#include "server/bench/bench_cpu.h"
#include "server/bench/bench_decode.h"
#include "server/bench/bench_engine.h"
#include "server/bench/bench_gemv.h"
#include "server/bench/bench_load.h"
#include "server/bench/bench_prefill.h"
#include "server/bench/bench_serve.h"

int main(int argc, char** argv) {
  CLI::App app{"mlra-bench: mlra-serve benchmarks"};
  app.require_subcommand(1);
  int exit_code = 0;
  mlra::register_bench_attention(app, exit_code);
  mlra::register_bench_control(app, exit_code);
  mlra::register_bench_cpu(app, exit_code);
  mlra::register_bench_decode(app, exit_code);
  mlra::register_bench_engine(app, exit_code);
  mlra::register_bench_gemv(app, exit_code);
  mlra::register_bench_load(app, exit_code);
  mlra::register_bench_prefill(app, exit_code);
  mlra::register_bench_serve(app, exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
