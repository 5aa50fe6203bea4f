// [process] `mlra-serve serve` facing mistakes and failures, as a child process: a taken port
// fails at once, before the model loads; max_context past the model's block size and a cache
// larger than the machine are config errors; a TP worker killed under load ends every stream
// with a clear status, health goes NOT_SERVING and the process exits 3 (for a supervisor to
// restart it) without hanging. Also: the default config listens on loopback only.
#include <catch2/catch.hpp>

#include <future>

#include <grpcpp/create_channel.h>

#include "engine/server_config.h"
#include "grpc_test_server.h"
#include "serve_process.h"
#include "server/bench/load_generator.h"
#include "server/cli/grpc_probe.h"
#include "tests/checkpoint_test_util.h"

using namespace mlra;
using namespace mlra::testing;
using namespace std::chrono_literals;
using Catch::Matchers::Contains;

namespace {

std::vector<std::string> tiny_args(int port) {
  return {"--model-dir", tiny_mlra4_dir().string(),
          "--attention", "mlra4",
          "--host",      "127.0.0.1",
          "--port",      std::to_string(port),
          "--set",       "page_size=16",
          "--log-level", "info"};
}

// A socket listening on 127.0.0.1:port until destroyed: the port is taken.
struct Listener {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  explicit Listener(int port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(uint16_t(port));
    const int one = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    REQUIRE(::listen(fd, 4) == 0);
  }
  ~Listener() { ::close(fd); }
};

bool wait_serving(const std::string& target, std::chrono::milliseconds timeout) {
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (check_health(channel, "", 1s).serving == ServingStatus::kServing) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

}  // namespace

TEST_CASE("serve: a taken port fails at once, before the model loads", "[process][e2e]") {
  mlra::test::ScratchDir dir("serve_port");
  const int port = free_tcp_port();
  Listener taken(port);
  ServeProcess grpc_taken(tiny_args(port), dir / "grpc.log");
  CHECK(grpc_taken.wait_exit(20s) == 1);
  const std::string log = grpc_taken.log();
  INFO(log);
  CHECK_THAT(log, Contains("gRPC port 127.0.0.1:" + std::to_string(port) + " is already in use"));
  CHECK_THAT(log, !Contains("loading mlra4"));

  auto args = tiny_args(free_tcp_port());
  args.insert(args.end(), {"--metrics-port", std::to_string(port)});
  ServeProcess metrics_taken(args, dir / "metrics.log");
  CHECK(metrics_taken.wait_exit(20s) == 1);
  CHECK_THAT(metrics_taken.log(),
             Contains("metrics port 127.0.0.1:" + std::to_string(port) + " is already in use"));
}

TEST_CASE("serve: max_context past the block size and an oversized cache are config errors",
          "[process][e2e]") {
  mlra::test::ScratchDir dir("serve_limits");
  struct Case {
    std::string set, message;
  };
  for (const Case& c : {Case{"max_context=100000", "exceeds the model's block_size"},
                        Case{"cache_memory_bytes=1000000000000000", "more than this machine's"},
                        Case{"num_pages=100000000000", "more than this machine's"}}) {
    INFO(c.set);
    auto args = tiny_args(free_tcp_port());
    args.insert(args.end(), {"--set", c.set});
    ServeProcess serve(args, dir / "serve.log");
    CHECK(serve.wait_exit(20s) == 2);
    const std::string log = serve.log();
    INFO(log);
    CHECK_THAT(log, Contains(c.message));
    CHECK_THAT(log, !Contains("bad_alloc"));
  }
}

TEST_CASE("serve: a TP worker killed under load -> clear statuses, NOT_SERVING, exit 3",
          "[process][e2e][failure][tp]") {
  mlra::test::ScratchDir dir("serve_worker_kill");
  const int port = free_tcp_port();
  const std::string target = "127.0.0.1:" + std::to_string(port);
  auto args = tiny_args(port);
  args.insert(args.end(), {"--tp", "2", "--set", "num_pages=512"});
  ServeProcess server(args, dir / "serve.log");
  REQUIRE(wait_serving(target, 60s));
  const std::vector<pid_t> workers = child_pids(server.pid());
  REQUIRE(workers.size() == 2);

  LoadOptions o;
  o.concurrency = 32;
  o.num_requests = 96;
  o.cancel_fraction = 0.1;
  o.min_prompt_tokens = 4;
  o.max_prompt_tokens = 24;
  o.min_output_tokens = 64;
  o.max_output_tokens = 200;
  o.stream_deadline = 60s;
  o.check_cache_free = false;  // the server is gone by then
  // INTERNAL: the runner failure, in flight. UNAVAILABLE: refused once unhealthy, or the server
  // going away. CANCELLED: accepted by gRPC but not yet dispatched when it stopped.
  o.tolerated = {grpc::StatusCode::INTERNAL, grpc::StatusCode::UNAVAILABLE,
                 grpc::StatusCode::CANCELLED};
  auto load = std::async(std::launch::async, [&] { return run_load(target, o); });
  auto stub = v1::Mlra::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  for (auto until = std::chrono::steady_clock::now() + 30s;
       std::chrono::steady_clock::now() < until;) {
    grpc::ClientContext ctx;
    v1::StatsResponse stats;
    if (stub->Stats(&ctx, v1::StatsRequest(), &stats).ok() && stats.generated_tokens() > 0) break;
    std::this_thread::sleep_for(10ms);
  }
  ::kill(workers[1], SIGKILL);
  const LoadReport report = load.get();
  INFO(format_report(report));
  CHECK(report.ok());
  int internal = 0;
  for (const StreamRecord& r : report.streams) {
    if (r.code != grpc::StatusCode::INTERNAL) continue;
    ++internal;
    CHECK_THAT(r.message, Contains("worker rank 1"));
  }
  CHECK(internal > 0);
  CHECK(server.wait_exit(30s) == 3);
  const std::string log = server.log();
  INFO(log);
  const size_t not_serving = log.find("health: NOT_SERVING");
  const size_t exiting = log.find("exiting with status 3");
  CHECK(not_serving != std::string::npos);
  CHECK(exiting != std::string::npos);
  CHECK(not_serving < exiting);
}

TEST_CASE("serve: the API key from MLRA_API_KEY is required and never logged",
          "[process][e2e][auth]") {
  mlra::test::ScratchDir dir("serve_key");
  const std::string key = "sekrit-d41d8cd9";
  ::setenv("MLRA_API_KEY", key.c_str(), 1);
  const int port = free_tcp_port();
  const std::string target = "127.0.0.1:" + std::to_string(port);
  auto args = tiny_args(port);
  args.back() = "trace";  // the most verbose log level
  ServeProcess server(args, dir / "serve.log");
  ::unsetenv("MLRA_API_KEY");
  REQUIRE(wait_serving(target, 60s));  // health needs no key
  auto stub = v1::Mlra::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  for (const std::string& sent : {std::string(), std::string("Bearer wrong"), "Bearer " + key}) {
    grpc::ClientContext ctx;
    if (!sent.empty()) ctx.AddMetadata("authorization", sent);
    auto reader = stub->Generate(&ctx, token_request({1, 2, 3}, 4));
    v1::GenerateResponse chunk;
    while (reader->Read(&chunk)) {
    }
    CHECK(reader->Finish().error_code() ==
          (sent == "Bearer " + key ? grpc::StatusCode::OK : grpc::StatusCode::UNAUTHENTICATED));
  }
  server.signal(SIGTERM);
  CHECK(server.wait_exit(30s) == 0);
  const std::string log = server.log();
  INFO(log);
  CHECK_THAT(log, Contains("API key required"));
  CHECK_THAT(log, Contains("method=Generate"));
  CHECK_THAT(log, !Contains(key));
}

TEST_CASE("the default config listens on loopback only", "[config]") {
  CHECK(ServerConfig().host == "127.0.0.1");
  const auto shipped =
      load_server_config(std::filesystem::path(MLRA_SOURCE_DIR) / "configs" / "default.json");
  CHECK(shipped.host == "127.0.0.1");
}
