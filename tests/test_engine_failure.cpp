// [failure] an engine or worker failure, in process: health reads NOT_SERVING before the failed
// request's client sees its error (the engine's failure callback, not the health poll), the
// server's failure hook runs exactly once, and a TP worker lost while the engine is idle is
// noticed too (Engine::healthy() asks the runner). The `serve` process's exit on failure is in
// test_serve_hostile.cpp.
#include <catch2/catch.hpp>

#include <signal.h>

#include <atomic>
#include <thread>

#include "engine/process_runner.h"
#include "grpc_test_server.h"
#include "server/cli/grpc_probe.h"

using namespace mlra;
using namespace mlra::testing;
using namespace std::chrono_literals;

TEST_CASE("health is NOT_SERVING before the client of the failed step sees its error",
          "[failure][e2e]") {
  FakeRunnerOptions o;
  o.fail_at_step = 3;
  std::atomic<int> failures{0};
  GrpcServerOptions options;
  options.health_poll = 60s;  // the poll cannot be what turns health off here
  options.on_engine_failure = [&](const std::string& why) {
    CHECK(why.find("fake worker died") != std::string::npos);
    ++failures;
  };
  ServerUnderTest s(std::make_unique<FakeModelRunner>(o), {}, options);
  REQUIRE(check_health(s.channel, "", 2s).serving == ServingStatus::kServing);
  const StreamResult r = generate(*s.stub, token_request({1, 2, 3}, 20));
  CHECK(r.status.error_code() == grpc::StatusCode::INTERNAL);
  CHECK(check_health(s.channel, "", 2s).serving == ServingStatus::kNotServing);
  CHECK(failures == 1);
  CHECK(generate(*s.stub, token_request({1, 2, 3}, 4)).status.error_code() ==
        grpc::StatusCode::UNAVAILABLE);
  CHECK(failures == 1);
}

TEST_CASE("a TP worker killed while the engine is idle turns health NOT_SERVING",
          "[failure][tp][process]") {
  RunnerConfig o;
  o.model_dir = tiny_mlra4_dir();
  o.variant = "mlra4";
  o.tp = 2;
  o.page_size = 16;
  o.num_pages = 64;
  WorkerProcessOptions process;
  process.worker_binary = std::filesystem::path(MLRA_BINARY_DIR) / "server" / "mlra-serve";
  process.load_timeout_s = 60;
  auto runner = std::make_unique<ProcessRunner>(o, process);
  const std::vector<pid_t> workers = runner->worker_pids();
  REQUIRE(workers.size() == 2);
  std::atomic<int> failures{0};
  GrpcServerOptions options;
  options.health_poll = 20ms;
  options.on_engine_failure = [&](const std::string&) { ++failures; };
  auto engine =
      std::make_unique<Engine>(std::move(runner), fake_decoder_factory(), EngineOptions{});
  options.address = "127.0.0.1:0";
  GrpcServer server(*engine, byte_codec(), options);
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(server.port()),
                                     grpc::InsecureChannelCredentials());
  REQUIRE(check_health(channel, "", 2s).serving == ServingStatus::kServing);
  ::kill(workers[1], SIGKILL);
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (failures == 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(5ms);
  CHECK(failures == 1);
  CHECK(check_health(channel, "", 2s).serving == ServingStatus::kNotServing);
  CHECK_FALSE(engine->healthy());
  server.shutdown(0ms);
}
