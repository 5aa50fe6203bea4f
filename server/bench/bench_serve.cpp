// mlra-bench serve: flags -> LoadOptions, run, report; optional /metrics scrapes before and
// after the run, differenced so only this run's activity is reported (header).
#include "server/bench/bench_serve.h"

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "server/bench/bench_command.h"
#include "server/bench/load_generator.h"
#include "server/cli/http_get.h"
#include "server/prometheus_text.h"
#include "server/request_log.h"

namespace mlra {
namespace {

struct ServeBenchArgs {
  std::string addr = "localhost:50051";
  std::string metrics;  // host:port of the /metrics endpoint; empty: none
  LoadOptions load;
  double deadline_s = 300;
  std::vector<std::string> tolerate;  // gRPC status names that count as a clean end
  bool no_cache_check = false;
};

grpc::StatusCode status_code_named(const std::string& name) {
  for (int c = 0; c <= grpc::StatusCode::UNAUTHENTICATED; ++c)
    if (name == status_code_name(grpc::StatusCode(c))) return grpc::StatusCode(c);
  throw std::runtime_error(fmt::format("--tolerate: '{}' is not a gRPC status name", name));
}

MetricsScrape scrape(const std::string& host_port) {
  HttpResponse r = http_get(host_port, "/metrics", std::chrono::seconds(10));
  if (r.status != 200) throw std::runtime_error(fmt::format("/metrics answered {}", r.status));
  return parse_prometheus_text(r.body);
}

std::string server_side(const MetricsScrape& before, const MetricsScrape& after) {
  auto delta = [&](const char* name) {
    return after.sum(name).value_or(0) - before.sum(name).value_or(0);
  };
  const double steps = delta("mlra:latent_cache_bytes_read_per_rank_count");
  const double bytes = delta("mlra:latent_cache_bytes_read_per_rank_sum");
  const double queries = delta("mlra:prefix_cache_queries_total");
  const double hits = delta("mlra:prefix_cache_hits_total");
  const double exec_n = delta("mlra:model_execute_time_seconds_count");
  const double exec_s = delta("mlra:model_execute_time_seconds_sum");
  std::string out = "  server (/metrics, this run):\n";
  out +=
      fmt::format("    decode steps {:.0f}, latent cache read per rank per decode step {:.3f} MB\n",
                  steps, steps > 0 ? bytes / steps / 1e6 : 0.0);
  out += fmt::format("    steps {:.0f}, mean model execute {:.2f} ms\n", exec_n,
                     exec_n > 0 ? exec_s / exec_n * 1e3 : 0.0);
  out += fmt::format(
      "    prefix cache hit rate {:.1f}% ({:.0f} of {:.0f} tokens), preemptions {:.0f}\n",
      queries > 0 ? 100 * hits / queries : 0.0, hits, queries, delta("mlra:num_preemptions_total"));
  return out;
}

int run_serve_bench(ServeBenchArgs& a) {
  a.load.stream_deadline = std::chrono::milliseconds(static_cast<int64_t>(a.deadline_s * 1000));
  for (const std::string& name : a.tolerate) a.load.tolerated.push_back(status_code_named(name));
  a.load.check_cache_free = !a.no_cache_check;
  std::optional<MetricsScrape> before;
  if (!a.metrics.empty()) before = scrape(a.metrics);
  const LoadReport report = run_load(a.addr, a.load);
  std::string text = format_report(report);
  if (before) text += server_side(*before, scrape(a.metrics));
  fmt::print("{}", text);
  return report.ok() ? 0 : 1;
}

}  // namespace

void register_bench_serve(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<ServeBenchArgs>();
  LoadOptions& o = args->load;
  CLI::App* cmd = app.add_subcommand("serve", "gRPC load test against a running mlra-serve");
  cmd->add_option("--addr", args->addr, "server host:port");
  cmd->add_option("--metrics", args->metrics, "also scrape host:port/metrics before and after");
  cmd->add_option("--concurrency,-n", o.concurrency, "streams open at once")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--requests", o.num_requests, "requests in total (0: --concurrency)");
  cmd->add_option("--min-prompt", o.min_prompt_tokens, "shortest prompt (tokens)");
  cmd->add_option("--max-prompt", o.max_prompt_tokens, "longest prompt (tokens)");
  cmd->add_option("--min-output", o.min_output_tokens, "shortest output (max_tokens)");
  cmd->add_option("--max-output", o.max_output_tokens, "longest output (max_tokens)");
  cmd->add_option("--cancel", o.cancel_fraction, "share cancelled by the client")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--shared-prefix", o.shared_prefix_fraction,
                  "share of prompts with a common prefix")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--prefix-tokens", o.shared_prefix_tokens, "length of the common prefix");
  cmd->add_option("--temperature", o.temperature, "sampling temperature (seeded per request)");
  cmd->add_option("--seed", o.seed, "seed of prompts, lengths, cancellations and sampling");
  cmd->add_option("--channels", o.channels, "TCP connections")->check(CLI::PositiveNumber);
  cmd->add_option("--deadline-s", args->deadline_s, "a stream still open after this is hung");
  cmd->add_option("--tolerate", args->tolerate,
                  "a gRPC status (e.g. INTERNAL, UNAVAILABLE) that ends a stream cleanly, for "
                  "runs that inject a fault (repeatable)");
  cmd->add_flag("--no-cache-check", args->no_cache_check,
                "skip the Stats check afterwards (for runs in which the server goes away)");
  bench::on_run(
      cmd, exit_code, [args] { return run_serve_bench(*args); }, 2);
}

}  // namespace mlra
