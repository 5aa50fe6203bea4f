// [memory] the `serve` process's memory under a flood of large requests: 64 concurrent Generate
// calls of 3.9 MB each (just under the message limit, refused OUT_OF_RANGE once parsed), twice.
// The child's RSS is sampled every 5 ms: the peak stays bounded (gRPC's memory quota, large
// blocks mmapped) and RSS comes back to where it started (freed heap pages returned to the OS),
// and the server still answers a normal request.
#include <catch2/catch.hpp>

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <thread>

#include <grpcpp/create_channel.h>

#include "grpc_test_server.h"
#include "serve_process.h"
#include "server/cli/grpc_probe.h"
#include "tests/checkpoint_test_util.h"

using namespace mlra;
using namespace mlra::testing;
using namespace std::chrono_literals;

namespace {

int64_t rss_mb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) / 1024;
  return -1;
}

struct FloodResult {
  int64_t before_mb = 0, peak_mb = 0, after_mb = 0;
  std::map<grpc::StatusCode, int> codes;
};

FloodResult flood(const std::string& target, pid_t server, const v1::GenerateRequest& request,
                  int calls) {
  FloodResult r;
  r.before_mb = rss_mb(server);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> peak{r.before_mb};
  std::thread sampler([&] {
    while (!stop) {
      peak = std::max<int64_t>(peak, rss_mb(server));
      std::this_thread::sleep_for(5ms);
    }
  });
  std::mutex mu;
  std::vector<std::thread> clients;
  for (int i = 0; i < calls; ++i)
    clients.emplace_back([&] {
      grpc::ChannelArguments args;
      args.SetMaxSendMessageSize(64 << 20);
      auto stub = v1::Mlra::NewStub(
          grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args));
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + 120s);
      auto reader = stub->Generate(&ctx, request);
      v1::GenerateResponse chunk;
      while (reader->Read(&chunk)) {
      }
      const grpc::StatusCode code = reader->Finish().error_code();
      std::lock_guard lock(mu);
      ++r.codes[code];
    });
  for (auto& c : clients) c.join();
  std::this_thread::sleep_for(1500ms);  // one trim interval and then some
  stop = true;
  sampler.join();
  r.peak_mb = peak;
  r.after_mb = rss_mb(server);
  return r;
}

}  // namespace

TEST_CASE("serve: RSS under a flood of 64 x 3.9 MB requests is bounded and comes back",
          "[process][memory]") {
  mlra::test::ScratchDir dir("serve_memory");
  const int port = free_tcp_port();
  const std::string target = "127.0.0.1:" + std::to_string(port);
  ServeProcess server(
      {"--model-dir", tiny_mlra4_dir().string(), "--attention", "mlra4", "--host", "127.0.0.1",
       "--port", std::to_string(port), "--set", "page_size=16", "--log-level", "warn"},
      dir / "serve.log");
  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  for (auto until = std::chrono::steady_clock::now() + 60s;
       check_health(channel, "", 1s).serving != ServingStatus::kServing;) {
    REQUIRE(std::chrono::steady_clock::now() < until);
    std::this_thread::sleep_for(50ms);
  }
  v1::GenerateRequest big;
  big.mutable_token_ids()->mutable_ids()->Resize(3'900'000, 1);  // 3.9 MB on the wire
  big.mutable_sampling()->set_max_tokens(1);
  REQUIRE(big.ByteSizeLong() < (4u << 20));

  const FloodResult first = flood(target, server.pid(), big, 64);
  const FloodResult second = flood(target, server.pid(), big, 64);
  for (const FloodResult* r : {&first, &second}) {
    INFO("RSS before " << r->before_mb << " MB, peak " << r->peak_mb << " MB, after " << r->after_mb
                       << " MB");
    int refused = 0;
    for (const auto& [code, n] : r->codes) {
      CHECK(
          (code == grpc::StatusCode::OUT_OF_RANGE || code == grpc::StatusCode::RESOURCE_EXHAUSTED));
      refused += n;
    }
    CHECK(refused == 64);
    CHECK(r->peak_mb - first.before_mb < 600);  // 250 MB of requests on the wire at once
    CHECK(r->after_mb - first.before_mb < 64);
  }
  v1::Mlra::Stub stub(channel);
  const StreamResult normal = generate(stub, token_request({1, 2, 3}, 8));
  CHECK(normal.status.ok());
  CHECK(normal.tokens.size() == 8);
  WARN("flood RSS (MB): before " << first.before_mb << ", peaks " << first.peak_mb << " / "
                                 << second.peak_mb << ", after " << first.after_mb << " / "
                                 << second.after_mb);
}
