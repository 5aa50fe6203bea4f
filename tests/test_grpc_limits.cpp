// Oversized gRPC requests are refused without the server buffering them ([hostile][process]):
// the real server as a child process, eight clients at once each sending a 32 MB request (eight
// times the 4 MB receive limit); the server's resident memory, sampled throughout, grows by far
// less than the 256 MB sent (receive windows stay small and fixed, and gRPC's memory quota caps
// what the transport may hold), every client gets RESOURCE_EXHAUSTED, and the server still
// answers a normal request afterwards.
#include <atomic>
#include <future>
#include <thread>

#include <catch2/catch.hpp>

#include "grpc_test_server.h"
#include "serve_subprocess.h"

using namespace mlra;
using namespace mlra::testing;
using namespace std::chrono_literals;

TEST_CASE("8 concurrent 32 MB gRPC requests are refused without being buffered",
          "[hostile][process]") {
  ServeSubprocess server({"--model-dir", tiny_mlra4_dir().string(), "--attention", "mlra4", "--set",
                          "page_size=16", "--log-level", "warn"});
  REQUIRE(server.pid() > 0);
  REQUIRE(server.wait_serving(60s));
  const int64_t before = server.resident_bytes();
  std::atomic<bool> stop{false};
  std::atomic<int64_t> peak{before};
  std::thread sampler([&] {
    while (!stop) {
      peak = std::max<int64_t>(peak, server.resident_bytes());
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
          grpc::CreateCustomChannel(server.target(), grpc::InsecureChannelCredentials(), args));
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
  CHECK(peak - before < (int64_t(128) << 20));

  auto stub =
      v1::Mlra::NewStub(grpc::CreateChannel(server.target(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext ctx;
  v1::CompleteResponse response;
  CHECK(stub->Complete(&ctx, token_request({1, 2, 3}, 4), &response).ok());
}
