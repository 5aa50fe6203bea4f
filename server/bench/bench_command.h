// What every `mlra-bench` subcommand does when it runs: call the benchmark, and turn an escaping
// exception into a one-line error and a failing exit code instead of a crash.
#pragma once

#include <CLI/CLI.hpp>

#include <cstdio>
#include <exception>
#include <string>

#include <nlohmann/json.hpp>

#include "engine/kernel_options_json.h"

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

// --kernels '{"kv_split_per_sm":2}': the kernel options a GPU benchmark makes its backend with,
// written as the server config's "kernels" object (kernels/README.md lists the keys).
inline void add_kernels_option(CLI::App* cmd, std::string& json) {
  cmd->add_option("--kernels", json,
                  "kernel options as the server config's \"kernels\" object, e.g. "
                  "'{\"kv_split_per_sm\":2}' (default: {})");
}
// The options of a --kernels value ("" = defaults); a malformed one throws, naming the problem.
inline KernelOptions kernels_of(const std::string& json) {
  if (json.empty()) return {};
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json);
  } catch (const nlohmann::json::parse_error& e) {
    throw std::invalid_argument("--kernels is not JSON: " + std::string(e.what()));
  }
  return parse_kernel_options(j);
}
// The options as one JSON line, for the benchmark's header.
inline std::string kernels_line(const KernelOptions& options) {
  return to_json(options).dump();
}

// What a GPU benchmark does in a build without CUDA: a one-line error and exit code 2.
inline int built_without_cuda(const char* name) {
  std::fprintf(stderr, "mlra-bench %s: built without CUDA\n", name);
  return 2;
}

}  // namespace mlra::bench
