// What every `mlra-bench` subcommand does when it runs: call the benchmark, and turn an escaping
// exception into a one-line error and a failing exit code instead of a crash.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <string>

namespace mlra::bench {

// Sets cmd's callback: exit_code = run(), or `error_code` after "mlra-bench <name>: <what>".
template <class Run>
void on_run(CLI::App* cmd, int& exit_code, Run run, int error_code = 1) {
  const std::string name = cmd->get_name();
  cmd->callback([name, &exit_code, run, error_code] {
    try {
      exit_code = run();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "mlra-bench %s: %s\n", name.c_str(), e.what());
      exit_code = error_code;
    }
  });
}

// What a GPU benchmark does in a build without CUDA: a one-line error and exit code 2.
inline int built_without_cuda(const char* name) {
  std::fprintf(stderr, "mlra-bench %s: built without CUDA\n", name);
  return 2;
}

}  // namespace mlra::bench
