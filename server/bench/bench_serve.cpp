// mlra-bench serve: flags -> LoadOptions, run, report; optional /metrics scrapes before and
// after the run, differenced so only this run's activity is reported (header). With --http the
// same plan also runs over the OpenAI HTTP API and one table sets the two protocols side by
// side; with --idle it measures the server's threads and memory under many open streams.
#include "server/bench/bench_serve.h"

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "server/bench/bench_command.h"
#include "server/bench/load_generator.h"
#include "server/bench/load_generator_http.h"
#include "server/bench/load_generator_idle.h"
#include "server/cli/http_get.h"
#include "server/prometheus_text.h"
#include "server/request_log.h"

namespace mlra {
namespace {

struct ServeBenchArgs {
  std::string addr = "localhost:50051";
  std::string metrics;        // host:port of the /metrics endpoint; empty: none
  std::string http;           // host:port of the HTTP listener; empty: gRPC only
  std::vector<int32_t> idle;  // stream counts for the idle measurement
  int server_pid = 0;
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

// One row per protocol: the figures the two frontends are compared on.
std::string comparison(const std::vector<LoadReport>& reports) {
  std::string out =
      fmt::format("  {:<8} {:>14} {:>12} {:>12} {:>12} {:>8}\n", "protocol", "output tok/s",
                  "TTFT p50 ms", "TTFT p90 ms", "ITL p50 ms", "checks");
  for (const LoadReport& r : reports) {
    std::vector<double> ttft, itl;
    int64_t tokens = 0;
    for (const StreamRecord& s : r.streams) {
      if (s.ttft_s >= 0) ttft.push_back(s.ttft_s * 1e3);
      for (double g : s.itl_s) itl.push_back(g * 1e3);
      tokens += std::max(s.tokens, 0);
    }
    out += fmt::format("  {:<8} {:>14.1f} {:>12.2f} {:>12.2f} {:>12.2f} {:>8}\n", r.protocol,
                       tokens / std::max(r.wall_s, 1e-9), percentile(ttft, 50),
                       percentile(ttft, 90), percentile(itl, 50), r.ok() ? "PASS" : "FAIL");
  }
  return out;
}

int run_serve_bench(ServeBenchArgs& a) {
  a.load.stream_deadline = std::chrono::milliseconds(static_cast<int64_t>(a.deadline_s * 1000));
  for (const std::string& name : a.tolerate) a.load.tolerated.push_back(status_code_named(name));
  a.load.check_cache_free = !a.no_cache_check;
  if (!a.idle.empty()) {
    if (a.server_pid <= 0) throw std::runtime_error("--idle needs --server-pid");
    fmt::print("mlra-bench serve --idle: server threads and memory with open streams\n{}",
               format_idle_samples(measure_idle_streams(a.addr, a.http, a.server_pid, a.idle)));
    return 0;
  }
  std::optional<MetricsScrape> before;
  if (!a.metrics.empty()) before = scrape(a.metrics);
  std::vector<LoadReport> reports = {run_load(a.addr, a.load)};
  if (!a.http.empty()) {
    // Same distribution, other prompts: the gRPC run's prompts sit in the prefix cache now.
    LoadOptions http_options = a.load;
    http_options.seed += 1;
    reports.push_back(run_http_load(a.http, a.addr, http_options));
  }
  std::string text;
  for (const LoadReport& r : reports) text += format_report(r);
  if (before) text += server_side(*before, scrape(a.metrics));
  if (reports.size() > 1)
    text += "  HTTP against gRPC (same server, same load shape):\n" + comparison(reports);
  fmt::print("{}", text);
  for (const LoadReport& r : reports) {
    if (!r.ok()) return 1;
  }
  return 0;
}

}  // namespace

void register_bench_serve(CLI::App& app, int& exit_code) {
  auto args = std::make_shared<ServeBenchArgs>();
  LoadOptions& o = args->load;
  CLI::App* cmd = app.add_subcommand(
      "serve", "load test against a running mlra-serve (gRPC; --http: also HTTP)");
  cmd->add_option("--addr", args->addr, "server host:port");
  cmd->add_option("--metrics", args->metrics, "also scrape host:port/metrics before and after");
  cmd->add_option("--http", args->http,
                  "also run the same plan over the OpenAI HTTP API at host:port and compare");
  cmd->add_option(
         "--idle", args->idle,
         "instead: server threads and RSS with this many open streams (e.g. 100,1000,10000)")
      ->delimiter(',');
  cmd->add_option("--server-pid", args->server_pid, "the server's process id (--idle reads /proc)");
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
