// Idle-stream measurement: gRPC reactors that read and discard, HTTP sockets on Asio that read
// and discard, Stats polling, /proc sampling (header).
#include "server/bench/load_generator_idle.h"

#include <sys/resource.h>

#include <atomic>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <thread>

#include <fmt/format.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/support/client_callback.h>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>

#include "proto/mlra.grpc.pb.h"

namespace mlra {
namespace {

namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

class IdleCall final : public grpc::ClientReadReactor<v1::GenerateResponse> {
 public:
  IdleCall(v1::Mlra::Stub& stub, const v1::GenerateRequest& request, std::atomic<int>& open)
      : open_(open) {
    ++open_;
    stub.async()->Generate(&ctx_, &request, this);
    StartRead(&response_);
    StartCall();
  }
  void OnReadDone(bool ok) override {
    if (ok) StartRead(&response_);
  }
  void OnDone(const grpc::Status&) override { --open_; }
  void cancel() { ctx_.TryCancel(); }

 private:
  grpc::ClientContext ctx_;
  v1::GenerateResponse response_;
  std::atomic<int>& open_;
};

// One HTTP stream that reads and discards until closed.
struct IdleSocket : std::enable_shared_from_this<IdleSocket> {
  IdleSocket(net::io_context& ioc, std::string request)
      : socket(ioc), request(std::move(request)) {}
  void start(const tcp::resolver::results_type& endpoints) {
    net::async_connect(socket, endpoints, [s = shared_from_this()](auto ec, const auto&) {
      if (ec) return;
      net::async_write(s->socket, net::buffer(s->request), [s](auto e, size_t) {
        if (!e) s->read();
      });
    });
  }
  void read() {
    socket.async_read_some(net::buffer(buffer), [s = shared_from_this()](auto ec, size_t) {
      if (!ec) s->read();
    });
  }
  tcp::socket socket;
  std::string request;
  char buffer[4096];
};

void raise_descriptor_limit() {
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

// "Threads:" and "VmRSS:" of /proc/<pid>/status.
void sample_process(int pid, IdleSample& s) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  if (!in) throw std::runtime_error(fmt::format("no process {}", pid));
  std::string key;
  while (in >> key) {
    if (key == "Threads:") in >> s.server_threads;
    if (key == "VmRSS:") {
      in >> s.server_rss_bytes;
      s.server_rss_bytes *= 1024;
    }
    std::getline(in, key);
  }
}

int64_t held(v1::Mlra::Stub& stub) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::StatsResponse stats;
  if (!stub.Stats(&ctx, v1::StatsRequest(), &stats).ok()) throw std::runtime_error("Stats failed");
  return stats.running() + stats.waiting();
}

// Polls until `done(held)` or a minute passed.
template <typename Pred>
void wait_held(v1::Mlra::Stub& stub, Pred done, const std::string& what) {
  const auto deadline = Clock::now() + std::chrono::seconds(60);
  while (!done(held(stub))) {
    if (Clock::now() > deadline) throw std::runtime_error("timed out waiting for " + what);
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

}  // namespace

std::vector<IdleSample> measure_idle_streams(const std::string& grpc_target,
                                             const std::string& http_target, int server_pid,
                                             const std::vector<int32_t>& counts) {
  raise_descriptor_limit();
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<v1::Mlra::Stub>> stubs;
  for (int c = 0; c < 4; ++c) {
    grpc::ChannelArguments args;
    args.SetInt("mlra.idle_channel", c);  // one TCP connection per channel
    channels.push_back(
        grpc::CreateCustomChannel(grpc_target, grpc::InsecureChannelCredentials(), args));
    stubs.push_back(v1::Mlra::NewStub(channels.back()));
  }
  v1::Mlra::Stub& stub = *stubs[0];
  grpc::ClientContext info_ctx;
  v1::ModelInfoResponse info;
  if (!stub.ModelInfo(&info_ctx, v1::ModelInfoRequest(), &info).ok()) {
    throw std::runtime_error("ModelInfo failed on " + grpc_target);
  }
  const int32_t max_tokens = static_cast<int32_t>(std::min<int64_t>(info.max_context() - 4, 4096));
  v1::GenerateRequest request;
  for (int32_t t : {1, 2, 3}) request.mutable_token_ids()->add_ids(t);
  request.mutable_sampling()->set_max_tokens(max_tokens);
  request.mutable_sampling()->set_ignore_eos(true);
  const std::string body = fmt::format(
      R"({{"prompt": [1, 2, 3], "max_tokens": {}, "ignore_eos": true, "stream": true}})",
      max_tokens);
  std::vector<IdleSample> out;
  for (const std::string protocol : {"grpc", "http"}) {
    if (protocol == "http" && http_target.empty()) continue;
    for (int32_t n : counts) {
      IdleSample s;
      s.protocol = protocol;
      s.streams = n;
      const auto start = Clock::now();
      std::atomic<int> open{0};
      std::vector<std::unique_ptr<IdleCall>> calls;
      net::io_context ioc;
      std::vector<std::shared_ptr<IdleSocket>> sockets;
      std::thread io;
      if (protocol == "grpc") {
        for (int32_t i = 0; i < n; ++i) {
          calls.push_back(std::make_unique<IdleCall>(*stubs[size_t(i % 4)], request, open));
        }
      } else {
        const size_t colon = http_target.rfind(':');
        tcp::resolver resolver(ioc);
        const auto endpoints =
            resolver.resolve(http_target.substr(0, colon), http_target.substr(colon + 1));
        const std::string head = fmt::format(
            "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: {}\r\n\r\n{}",
            body.size(), body);
        for (int32_t i = 0; i < n; ++i) {
          sockets.push_back(std::make_shared<IdleSocket>(ioc, head));
          sockets.back()->start(endpoints);
        }
        io = std::thread([&] { ioc.run(); });
      }
      wait_held(
          stub, [n](int64_t h) { return h >= n; }, fmt::format("{} {} streams", n, protocol));
      s.open_s = std::chrono::duration<double>(Clock::now() - start).count();
      std::this_thread::sleep_for(std::chrono::milliseconds(500));  // settle
      sample_process(server_pid, s);
      out.push_back(s);
      for (auto& c : calls) c->cancel();
      for (auto& sock : sockets) {
        net::post(ioc, [sock] {
          boost::system::error_code ignored;
          sock->socket.close(ignored);
        });
      }
      wait_held(
          stub, [](int64_t h) { return h == 0; }, "the server to let go of the streams");
      const auto deadline = Clock::now() + std::chrono::seconds(30);
      while (open > 0 && Clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      if (io.joinable()) {
        ioc.stop();
        io.join();
      }
    }
  }
  return out;
}

std::string format_idle_samples(const std::vector<IdleSample>& samples) {
  std::string out = fmt::format("  {:<8} {:>8} {:>10} {:>12} {:>10}\n", "protocol", "streams",
                                "threads", "RSS (MB)", "open (s)");
  for (const IdleSample& s : samples) {
    out += fmt::format("  {:<8} {:>8} {:>10} {:>12.1f} {:>10.2f}\n", s.protocol, s.streams,
                       s.server_threads, s.server_rss_bytes / 1e6, s.open_s);
  }
  return out;
}

}  // namespace mlra
