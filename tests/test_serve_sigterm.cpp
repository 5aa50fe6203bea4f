// The real `mlra-serve serve` binary on the tiny MLRA-4 checkpoint as a subprocess ([process]):
// its /metrics port answers, and SIGTERM under load from the load generator ends every stream
// with one terminal status -- finished, UNAVAILABLE (rejected or aborted by the shutdown) or
// CANCELLED (by gRPC, for calls not yet dispatched at shutdown) -- and the process exits 0.
// With a grace period the streams in flight finish; without one they are aborted with a final
// ABORTED chunk.
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <future>
#include <thread>

#include <grpcpp/create_channel.h>
#include <catch2/catch.hpp>

#include "grpc_test_server.h"
#include "server/bench/load_generator.h"
#include "server/cli/grpc_probe.h"
#include "server/cli/http_get.h"
#include "server/prometheus_text.h"

extern char** environ;

using namespace mlra;
using namespace mlra::testing;
using namespace std::chrono_literals;

namespace {

// A port nobody listens on right now (the kernel's pick for an ephemeral bind).
int free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  close(fd);
  return ntohs(addr.sin_port);
}

class ServeProcess {
 public:
  ServeProcess(int port, int metrics_port, double grace_s) {
    const std::string binary = std::string(MLRA_BINARY_DIR) + "/server/mlra-serve";
    std::vector<std::string> args = {binary,           "serve",
                                     "--model-dir",    tiny_mlra4_dir().string(),
                                     "--attention",    "mlra4",
                                     "--host",         "127.0.0.1",
                                     "--port",         std::to_string(port),
                                     "--metrics-port", std::to_string(metrics_port),
                                     "--set",          "page_size=16",
                                     "--set",          "num_pages=512",
                                     "--grace-s",      std::to_string(grace_s),
                                     "--log-level",    "warn"};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    REQUIRE(posix_spawn(&pid_, binary.c_str(), nullptr, nullptr, argv.data(), environ) == 0);
  }
  ~ServeProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
  }
  void signal(int s) { kill(pid_, s); }
  // The exit status, or -1 (and the process killed) when it has not exited within `timeout`.
  int wait_exit(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(20ms);
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
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

// Waits until the server's engine is generating (Stats over gRPC).
bool wait_generating(const std::string& target, std::chrono::milliseconds timeout) {
  auto stub = v1::Mlra::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    grpc::ClientContext ctx;
    v1::StatsResponse stats;
    if (stub->Stats(&ctx, v1::StatsRequest(), &stats).ok() && stats.running() > 0 &&
        stats.generated_tokens() > 0) {
      return true;
    }
    std::this_thread::sleep_for(10ms);
  }
  return false;
}

}  // namespace

TEST_CASE("serve: SIGTERM under load ends every stream with one terminal status, exit 0",
          "[process][e2e][tiny]") {
  const bool drain = GENERATE(true, false);
  INFO((drain ? "grace 30 s: drain" : "grace 0: abort"));
  const int port = free_port(), metrics_port = free_port();
  const std::string target = "127.0.0.1:" + std::to_string(port);
  ServeProcess server(port, metrics_port, drain ? 30.0 : 0.0);
  REQUIRE(wait_serving(target, 60s));

  HttpResponse scrape = http_get("127.0.0.1:" + std::to_string(metrics_port), "/metrics", 10s);
  REQUIRE(scrape.status == 200);
  const MetricsScrape m = parse_prometheus_text(scrape.body);
  CHECK(m.sum("mlra:cache_pages_total", {{"model_name", "mlra4"}}).value() == 512);

  LoadOptions o;
  o.concurrency = 48;
  o.num_requests = 192;  // closed loop: new requests keep arriving while the signal lands
  o.cancel_fraction = 0.1;
  o.min_prompt_tokens = 4;
  o.max_prompt_tokens = 24;
  o.min_output_tokens = 64;
  o.max_output_tokens = 200;
  o.stream_deadline = 60s;
  o.check_cache_free = false;  // the server is gone by then; its exit status speaks instead
  // UNAVAILABLE: refused or aborted by the shutdown. CANCELLED: gRPC's own answer to calls it
  // had accepted but not yet handed to a handler thread when the server shut down.
  o.tolerated = {grpc::StatusCode::UNAVAILABLE, grpc::StatusCode::CANCELLED};
  auto load = std::async(std::launch::async, [&] { return run_load(target, o); });
  REQUIRE(wait_generating(target, 30s));
  server.signal(SIGTERM);
  const LoadReport report = load.get();
  INFO(format_report(report));
  CHECK(report.ok());
  CHECK(server.wait_exit(60s) == 0);

  int ok = 0, unavailable = 0, aborted = 0;
  for (const StreamRecord& r : report.streams) {
    ok += r.code == grpc::StatusCode::OK;
    unavailable += r.code == grpc::StatusCode::UNAVAILABLE;
    aborted += r.finish_reason == v1::FINISH_REASON_ABORTED;
  }
  CHECK(unavailable > 0);  // requests that arrived after the signal
  if (drain) {
    CHECK(ok > 0);
    CHECK(aborted == 0);  // everything in flight finished within the grace period
  } else {
    CHECK(aborted > 0);  // in flight at the signal: aborted with a final chunk
  }
}
