// HTTP under load ([load][http]): 1,000 concurrent streamed completions, 20% closed by the client
// at a random point, through the load generator's HTTP side: none hung, each request logged
// exactly once with its status, the counters agree, every page free afterwards.
#include <sstream>
#include <thread>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <catch2/catch.hpp>

#include "http_test_server.h"
#include "server/bench/load_generator_http.h"

using namespace mlra;
using namespace mlra::testing;
using namespace std::chrono_literals;

TEST_CASE("load: 1,000 streamed HTTP requests, 20% disconnects: each logged once, cache free",
          "[load][http][e2e]") {
  std::ostringstream captured;
  auto previous = spdlog::default_logger();
  auto logger = std::make_shared<spdlog::logger>(
      "capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(captured));
  logger->set_level(spdlog::level::info);
  spdlog::set_default_logger(logger);
  LoadReport report;
  {
    FakeRunnerOptions runner;
    runner.num_pages = 2048;
    runner.page_size = 16;
    runner.delay = 3ms;  // streams last long enough for the clients to leave mid-way
    EngineOptions engine;
    engine.max_running_seqs = 128;
    engine.max_waiting = 2048;
    HttpServerUnderTest s(std::make_unique<FakeModelRunner>(runner), std::nullopt, engine);
    LoadOptions o;
    o.concurrency = 1000;
    o.cancel_fraction = 0.2;
    o.min_prompt_tokens = 4;
    o.max_prompt_tokens = 24;
    o.min_output_tokens = 2;
    o.max_output_tokens = 24;
    o.shared_prefix_fraction = 0.3;
    o.shared_prefix_tokens = 16;
    o.seed = 11;
    o.channels = 2;
    o.stream_deadline = 120s;
    report = run_http_load("127.0.0.1:" + std::to_string(s.port()),
                           "127.0.0.1:" + std::to_string(s.grpc->port()), o);
    INFO(format_report(report));
    REQUIRE(report.ok());
    for (int i = 0; i < 1000 && s.gateway->in_flight() != 0; ++i) std::this_thread::sleep_for(10ms);
    CHECK(s.gateway->in_flight() == 0);
  }
  spdlog::set_default_logger(previous);
  int ok = 0, cancelled = 0;
  for (const StreamRecord& r : report.streams) {
    ok += r.code == grpc::StatusCode::OK;
    cancelled += r.code == grpc::StatusCode::CANCELLED;
  }
  CHECK(ok + cancelled == 1000);
  // 20% drew a cancel point after some number of events; events merge when the client lags,
  // so some streams end before reaching it.
  CHECK(cancelled >= 50);
  const std::string log = captured.str();
  int lines = 0, logged_ok = 0, logged_cancelled = 0;
  for (size_t at = log.find("request protocol=http"); at != std::string::npos;
       at = log.find("request protocol=http", at + 1)) {
    ++lines;
    const size_t status = log.find("status=", at);
    logged_ok += log.compare(status, 10, "status=OK ") == 0;
    logged_cancelled += log.compare(status, 17, "status=CANCELLED ") == 0;
  }
  CHECK(lines == 1000);
  // A client that leaves after the last event may find the server already done (logged OK).
  CHECK(logged_ok + logged_cancelled == 1000);
  CHECK(logged_cancelled <= cancelled);
  CHECK(logged_cancelled > 0);
}
