// Oversized gRPC requests are refused without the server buffering them ([hostile][process]):
// the real server as a child process, eight clients at once each sending a 32 MB request (eight
// times the 4 MB receive limit); the server's resident memory, sampled throughout, grows by far
// less than the 256 MB sent (receive windows stay small and fixed, and gRPC's memory quota caps
// what the transport may hold), every client gets RESOURCE_EXHAUSTED, and the server still
// answers a normal request afterwards.
#include <atomic>
#include <fstream>
#include <future>
#include <thread>

#include <catch2/catch.hpp>

#include "grpc_test_server.h"
#include "serve_process.h"
#include "server/cli/grpc_probe.h"

using namespace mlra;
using namespace mlra::testing;
using namespace std::chrono_literals;

namespace {

int64_t resident_bytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string key;
  while (in >> key) {
    if (key == "VmRSS:") {
      int64_t kb = 0;
      in >> kb;
      return kb * 1024;
    }
    std::getline(in, key);
  }
  return 0;
}

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

TEST_CASE("8 concurrent 32 MB gRPC requests are refused without being buffered",
          "[hostile][process]") {
  const int port = free_tcp_port();
  const std::string target = "127.0.0.1:" + std::to_string(port);
  ServeProcess server({"--model-dir", tiny_mlra4_dir().string(), "--attention", "mlra4", "--host",
                       "127.0.0.1", "--port", std::to_string(port), "--set", "page_size=16",
                       "--set", "grpc_memory_bytes=67108864", "--log-level", "warn"},
                      std::filesystem::temp_directory_path() / "mlra_grpc_limits.log");
  REQUIRE(wait_serving(target, 60s));
  const int64_t before = resident_bytes(server.pid());
  std::atomic<bool> stop{false};
  std::atomic<int64_t> peak{before};
  std::thread sampler([&] {
    while (!stop) {
      peak = std::max<int64_t>(peak, resident_bytes(server.pid()));
      std::this_thread::sleep_for(5ms);
    }
  });
  v1::GenerateRequest big = token_request({}, 4);
  big.set_text(std::string(32 << 20, 'a'));
  std::vector<std::future<grpc::StatusCode>> calls;
  for (int i = 0; i < 8; ++i) {
    calls.push_back(std::async(std::launch::async, [&] {
      grpc::ChannelArguments args;
      args.SetInt("mlra.test_channel", i);  // one connection per client
      auto stub = v1::Mlra::NewStub(
          grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + 60s);
      v1::CompleteResponse response;
      return stub->Complete(&ctx, big, &response).error_code();
    }));
  }
  for (auto& c : calls) CHECK(c.get() == grpc::StatusCode::RESOURCE_EXHAUSTED);
  std::this_thread::sleep_for(200ms);
  stop = true;
  sampler.join();
  INFO("server RSS before " << before / 1e6 << " MB, peak " << peak / 1e6 << " MB");
  // Buffering the 8 requests would grow RSS by 256 MiB or more. The bound is the 64 MiB quota, one
  // 32 MiB message and its parsed copy, and 32 MiB of allocator slack: on an idle 2-core machine
  // the growth is ~80 MB, under a parallel build it reached 143 MB.
  CHECK(peak - before < (int64_t(160) << 20));

  auto stub = v1::Mlra::NewStub(grpc::CreateChannel(target, grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  v1::CompleteResponse response;
  CHECK(stub->Complete(&ctx, token_request({1, 2, 3}, 4), &response).ok());
}
