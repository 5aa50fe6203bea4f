// `mlra-bench serve`: the gRPC serving benchmark and load test against a running mlra-serve
// (server/load_generator.h): N concurrent streams, a mix of lengths, random client
// cancellations; prints throughput and TTFT / ITL / e2e percentiles, and with --metrics the
// server-side view from /metrics (latent cache bytes read per rank per decode step, prefix-cache
// hit rate, preemptions). Exit 1 when any contract check fails.
#pragma once

#include <CLI/CLI.hpp>

namespace mlra {

void register_bench_serve(CLI::App& app, int& exit_code);

}  // namespace mlra
