// Load test ([load]): the load generator's 200 concurrent streams, 20% cancelled by the client
// at random points, against the real CPU runner on the tiny MLRA-4 checkpoint, while a thread
// scrapes /metrics over HTTP and parses every scrape. Afterwards: no stream lost or hung, every
// page free, and the exported counters agree with what the clients saw and with Stats.
#include <atomic>
#include <thread>

#include <catch2/catch.hpp>

#include "metered_test_server.h"
#include "scrape_until.h"
#include "server/bench/load_generator.h"
#include "server/cli/http_get.h"
#include "server/prometheus_text.h"

using namespace mlra;
using namespace mlra::testing;
using namespace std::chrono_literals;

namespace {

double value(const MetricsScrape& s, const char* name, std::map<std::string, std::string> m = {}) {
  std::optional<double> v = s.sum(name, m);
  INFO(name);
  REQUIRE(v.has_value());
  return *v;
}

}  // namespace

TEST_CASE("load: 200 streams, 20% cancelled, tiny MLRA-4 - /metrics agrees with the clients",
          "[load][e2e][tiny]") {
  MeteredServer s(tiny_mlra4_runner());
  // Scrapes while the load runs: each must parse and hold the gauges' invariants.
  std::atomic<bool> stop{false};
  std::atomic<int> scrapes{0}, busy_scrapes{0};
  std::string scrape_error;
  std::thread scraper([&] {
    double last_generated = 0;
    while (!stop) {
      try {
        HttpResponse r = http_get(s.metrics_target(), "/metrics", 10s);
        if (r.status != 200) throw std::runtime_error("status " + std::to_string(r.status));
        MetricsScrape m = parse_prometheus_text(r.body);
        const double used = m.sum("mlra:cache_pages_used").value();
        const double total = m.sum("mlra:cache_pages_total").value();
        const double generated = m.sum("mlra:generation_tokens_total").value();
        if (used < 0 || used > total) throw std::runtime_error("pages used out of range");
        if (generated < last_generated) throw std::runtime_error("a counter went down");
        last_generated = generated;
        if (m.sum("mlra:num_requests_running").value() > 0) ++busy_scrapes;
        ++scrapes;
      } catch (const std::exception& e) {
        scrape_error = e.what();
        return;
      }
      std::this_thread::sleep_for(20ms);
    }
  });

  LoadOptions o;
  o.concurrency = 200;
  o.cancel_fraction = 0.2;
  o.min_prompt_tokens = 4;
  o.max_prompt_tokens = 40;
  o.min_output_tokens = 2;
  o.max_output_tokens = 16;
  o.shared_prefix_fraction = 0.3;
  o.shared_prefix_tokens = 20;  // longer than a 16-token page: prefix hits are possible
  o.seed = 7;
  o.stream_deadline = 60s;
  const LoadReport report = run_load(s.grpc_target(), o);
  stop = true;
  scraper.join();
  INFO(format_report(report));
  REQUIRE(report.ok());
  REQUIRE(scrape_error.empty());
  CHECK(scrapes > 0);
  CHECK(busy_scrapes > 0);

  int ok = 0, cancelled = 0, with_first_token = 0;
  int64_t client_tokens = 0;
  for (const StreamRecord& r : report.streams) {
    ok += r.code == grpc::StatusCode::OK;
    cancelled += r.code == grpc::StatusCode::CANCELLED;
    with_first_token += r.ttft_s >= 0;
    client_tokens += r.tokens;
  }
  REQUIRE(ok + cancelled == 200);
  CHECK(cancelled > 20);  // ~40 drew a cancellation point; some ended before reaching it

  // Calls are counted when gRPC reports them done, possibly after their clients finished.
  const MetricsScrape m = scrape_until(
      [&] { return http_get(s.metrics_target(), "/metrics", 10s).body; },
      [&](const MetricsScrape& x) {
        return x.sum("mlra:requests_total", {{"protocol", "grpc"}, {"code", "OK"}}) == ok &&
               x.sum("mlra:requests_total", {{"protocol", "grpc"}, {"code", "CANCELLED"}}) ==
                   cancelled;
      });
  REQUIRE(report.final_stats.has_value());
  const v1::StatsResponse& st = *report.final_stats;
  CHECK(value(m, "mlra:cache_pages_used") == 0);
  CHECK(value(m, "mlra:kv_cache_usage_perc") == 0);
  CHECK(value(m, "mlra:num_requests_running") == 0);
  CHECK(value(m, "mlra:num_requests_waiting") == 0);
  // Every request reached the engine and ended there exactly once.
  CHECK(value(m, "mlra:request_success_total") == 200);
  CHECK(st.requests_finished() == 200);
  CHECK(value(m, "mlra:request_success_total", {{"finished_reason", "length"}}) +
            value(m, "mlra:request_success_total", {{"finished_reason", "cancelled"}}) ==
        200);
  CHECK(value(m, "mlra:request_success_total", {{"finished_reason", "cancelled"}}) <= cancelled);
  CHECK(value(m, "mlra:requests_total", {{"protocol", "grpc"}, {"code", "OK"}}) == ok);
  CHECK(value(m, "mlra:requests_total", {{"protocol", "grpc"}, {"code", "CANCELLED"}}) ==
        cancelled);
  // A client sees a first token iff the engine timed one (cancels come after >= 1 chunk).
  CHECK(value(m, "mlra:time_to_first_token_seconds_count") == with_first_token);
  CHECK(value(m, "mlra:request_queue_time_seconds_count") == 200);
  CHECK(value(m, "mlra:e2e_request_latency_seconds_count") == 200);
  // Every generated token is timed once: the first as TTFT, each later one as an ITL.
  const double generated = value(m, "mlra:generation_tokens_total");
  CHECK(generated == st.generated_tokens());
  CHECK(value(m, "mlra:time_to_first_token_seconds_count") +
            value(m, "mlra:inter_token_latency_seconds_count") ==
        generated);
  CHECK(generated >= client_tokens);
  CHECK(value(m, "mlra:prompt_tokens_total") == st.prompt_tokens());
  CHECK(value(m, "mlra:prefix_cache_queries_total") == st.prefix_query_tokens());
  CHECK(value(m, "mlra:prefix_cache_hits_total") == st.prefix_hit_tokens());
  CHECK(value(m, "mlra:prefix_cache_hits_total") > 0);
  CHECK(value(m, "mlra:num_preemptions_total") == st.preemptions());
  // Decode steps read the latent cache: whole tokens' worth of bytes, at least one per step.
  const double bpt = value(m, "mlra:cache_bytes_per_token_per_rank");
  REQUIRE(bpt > 0);
  const double steps = value(m, "mlra:latent_cache_bytes_read_per_rank_count");
  const double bytes = value(m, "mlra:latent_cache_bytes_read_per_rank_sum");
  CHECK(steps > 0);
  CHECK(bytes >= steps * bpt);
  CHECK(std::fmod(bytes, bpt) == 0);
  // Histogram buckets are cumulative and end at the count.
  CHECK(value(m, "mlra:time_to_first_token_seconds_bucket", {{"le", "+Inf"}}) ==
        value(m, "mlra:time_to_first_token_seconds_count"));
  CHECK(m.types.at("mlra:time_to_first_token_seconds") == "histogram");
  CHECK(m.types.at("mlra:request_success_total") == "counter");
}
