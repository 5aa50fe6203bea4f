// The /metrics endpoint and its neighbours ([metrics]): the text-format reader against
// prometheus-cpp's own serializer on random families, the request log line, and hostile input
// -- garbage, an oversized header and never-finished requests on the HTTP port, garbage on the
// gRPC port -- after which both ports still answer.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <random>
#include <sstream>
#include <thread>

#include <prometheus/text_serializer.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <catch2/catch.hpp>

#include "metered_test_server.h"
#include "server/cli/http_get.h"
#include "server/prometheus_text.h"
#include "server/request_log.h"

using namespace mlra;
using namespace mlra::testing;
using namespace std::chrono_literals;

namespace {

// A loopback TCP connection for sending arbitrary bytes.
class RawConnection {
 public:
  explicit RawConnection(int port) {
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  }
  ~RawConnection() { close(fd_); }
  // Sends what the peer accepts; false once it closed the connection.
  bool send_bytes(const std::string& bytes) {
    return send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL) == ssize_t(bytes.size());
  }
  // True when the peer closes the connection (after any response) within `timeout`.
  bool closed_within(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    char buf[4096];
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, 50) <= 0) continue;
      const ssize_t n = recv(fd_, buf, sizeof(buf), 0);
      if (n <= 0) return true;  // EOF or reset
    }
    return false;
  }

 private:
  int fd_ = -1;
};

std::string random_bytes(std::mt19937& rng, size_t n) {
  std::uniform_int_distribution<int> byte(0, 255);
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(byte(rng));
  return s;
}

void require_metrics_served(const MeteredServer& s) {
  HttpResponse r = http_get(s.metrics_target(), "/metrics", 10s);
  REQUIRE(r.status == 200);
  REQUIRE(parse_prometheus_text(r.body).sum("mlra:cache_pages_total").value() > 0);
}

void require_generation_works(MeteredServer& s) {
  StreamResult r = generate(*s.server->stub, token_request({1, 2, 3}, 4));
  REQUIRE(r.status.ok());
  REQUIRE(r.tokens == fake_greedy({1, 2, 3}, 4));
}

}  // namespace

TEST_CASE("metrics text reader reads back prometheus-cpp's serialization of random families",
          "[metrics]") {
  std::mt19937 rng(GENERATE(11u, 12u, 13u));
  prometheus::Registry registry;
  std::uniform_real_distribution<double> value(-1e6, 1e6);
  std::uniform_int_distribution<int> count(1, 4);
  std::map<std::string, double> expected;  // "name|label" -> value
  for (int f = 0; f < 6; ++f) {
    const std::string name = "mlra:test_family_" + std::to_string(f);
    auto& family =
        prometheus::BuildGauge().Name(name).Help("a \"help\" \\ text").Register(registry);
    for (int c = count(rng); c > 0; --c) {
      // Label values with the characters the format escapes.
      const std::string label = "v" + std::to_string(c) + (c % 2 ? " \"q\" \\ \n" : "");
      const double v = value(rng);
      family.Add({{"k", label}}).Set(v);
      expected[name + "|" + label] = v;
    }
  }
  std::ostringstream text;
  prometheus::TextSerializer().Serialize(text, registry.Collect());
  const MetricsScrape scrape = parse_prometheus_text(text.str());
  REQUIRE(scrape.samples.size() == expected.size());
  for (const MetricSample& s : scrape.samples) {
    const auto it = expected.find(s.name + "|" + s.labels.at("k"));
    REQUIRE(it != expected.end());
    CHECK(s.value == Approx(it->second).epsilon(1e-12));
    CHECK(scrape.types.at(s.name) == "gauge");
  }
}

TEST_CASE("metrics text reader refuses malformed lines with the line number", "[metrics]") {
  for (const char* bad : {"name", "name{a=\"1\" 2", "name{a=1} 2", "name 1 2 3", "9name 1",
                          "name{a=\"1\",a=\"2\"} 1", "name abc", "name{a=\"\\x\"} 1"}) {
    INFO(bad);
    CHECK_THROWS_WITH(parse_prometheus_text(std::string("ok 1\n") + bad),
                      Catch::Contains("line 2"));
  }
  const MetricsScrape s = parse_prometheus_text("# HELP x y\n# TYPE x counter\nx{a=\"b\"} +Inf\n");
  CHECK(std::isinf(s.sum("x", {{"a", "b"}}).value()));
  CHECK_FALSE(s.sum("x", {{"a", "c"}}).has_value());
}

TEST_CASE("request log line: logfmt fields, escaped values, prompt only when given",
          "[metrics][log]") {
  RequestOutcome o;
  o.method = "Generate";
  o.request_id = "my id";
  o.code = grpc::StatusCode::OK;
  o.finish_reason = FinishReason::kLength;
  o.usage = {12, 40, 8};
  o.ttft_s = 0.0031;
  o.duration_s = 0.0528;
  CHECK(format_request_log(o) ==
        "request protocol=grpc method=Generate id=\"my id\" status=OK finish=length "
        "prompt_tokens=12 "
        "completion_tokens=40 cached_prompt_tokens=8 ttft_ms=3.10 duration_ms=52.80");
  o.code = grpc::StatusCode::INVALID_ARGUMENT;
  o.error_message = "bad \"x\"\n";
  o.finish_reason = FinishReason::kNone;
  o.ttft_s = -1;
  o.prompt_text = "secret";
  const std::string line = format_request_log(o);
  CHECK_THAT(line, Catch::Contains("status=INVALID_ARGUMENT finish=none"));
  CHECK_THAT(line, Catch::Contains("ttft_ms=-"));
  CHECK_THAT(line, Catch::EndsWith("error=\"bad \\\"x\\\"\\n\" prompt=secret"));
  CHECK(line.find('\n') == std::string::npos);
}

TEST_CASE("a call logs one request line - the prompt text only with log_prompts",
          "[metrics][log][e2e]") {
  const bool log_prompts = GENERATE(false, true);
  std::ostringstream captured;
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>(
      "capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(captured)));
  {
    GrpcServerOptions options;
    options.service.log_prompts = log_prompts;
    ServerUnderTest s(fake_runner(), {}, options);
    v1::GenerateRequest r = token_request({}, 3);
    r.set_text("private words");
    r.set_request_id("log-1");
    REQUIRE(generate(*s.stub, r).status.ok());
    v1::GenerateRequest bad = token_request({1}, 0);  // max_tokens 0: refused
    bad.set_request_id("log-2");
    REQUIRE(generate(*s.stub, bad).status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  }
  spdlog::set_default_logger(previous);
  const std::string log = captured.str();
  INFO(log);
  CHECK_THAT(
      log, Catch::Contains("request protocol=grpc method=Generate id=log-1 status=OK finish=length "
                           "prompt_tokens=13 completion_tokens=3"));
  CHECK_THAT(log, Catch::Contains("id=log-2 status=INVALID_ARGUMENT finish=none"));
  CHECK((log.find("private words") != std::string::npos) == log_prompts);
  size_t lines = 0;
  for (size_t at = log.find("request protocol="); at != std::string::npos;
       at = log.find("request protocol=", at + 1)) {
    ++lines;
  }
  CHECK(lines == 2);
}

TEST_CASE("malformed HTTP and gRPC input leave both ports answering", "[metrics][e2e]") {
  MetricsEndpointOptions http;
  http.request_timeout_ms = 500;
  MeteredServer s(fake_runner(), http);
  std::mt19937 rng(5);
  require_metrics_served(s);

  SECTION("garbage bytes and oversized headers on the metrics port") {
    for (int i = 0; i < 20; ++i) {
      RawConnection c(s.endpoint->port());
      c.send_bytes(random_bytes(rng, 1 + rng() % 4096));
      CHECK(c.closed_within(5s));
    }
    {
      RawConnection c(s.endpoint->port());
      c.send_bytes("GET /metrics HTTP/1.1\r\nX-Big: " + std::string(1 << 20, 'a') + "\r\n\r\n");
      CHECK(c.closed_within(5s));
    }
    {
      RawConnection c(s.endpoint->port());
      c.send_bytes("GET /" + std::string(100000, '%') + " HTTP/1.1\r\n\r\n");
      CHECK(c.closed_within(5s));
    }
    // civetweb 1.15's error page crashes on these targets, one reason the listener is our own.
    for (const char* target : {"/%%%%", "/metrics%%%%", "/%s%n%s%n", "/%00"}) {
      HttpResponse r = http_get(s.metrics_target(), target, 10s);
      CHECK(r.status == 404);
    }
    HttpResponse missing = http_get(s.metrics_target(), "/nothing-here", 10s);
    CHECK(missing.status == 404);
    require_metrics_served(s);
  }

  SECTION("requests that never finish are dropped and do not starve scrapes") {
    // Several half-sent requests held open at once.
    std::vector<std::unique_ptr<RawConnection>> slow;
    for (int i = 0; i < 6; ++i) {
      slow.push_back(std::make_unique<RawConnection>(s.endpoint->port()));
      slow.back()->send_bytes("GET /metrics HTTP/1.1\r\nHost: x\r\n");
    }
    require_metrics_served(s);  // waits at most for the read timeout of the slow ones
    for (auto& c : slow) CHECK(c->closed_within(5s));
    require_metrics_served(s);
  }

  SECTION("garbage on the gRPC port") {
    // Kept open while the server is asked to generate: a stuck parser must not block others.
    std::vector<std::unique_ptr<RawConnection>> bad;
    for (int i = 0; i < 20; ++i) {
      bad.push_back(std::make_unique<RawConnection>(s.server->server->port()));
      // Half the time a valid HTTP/2 preface first, so the garbage reaches the frame parser.
      const std::string preface = i % 2 ? "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" : "";
      bad.back()->send_bytes(preface + random_bytes(rng, 1 + rng() % 8192));
    }
    bad.push_back(std::make_unique<RawConnection>(s.server->server->port()));
    bad.back()->send_bytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    require_generation_works(s);
    // Without a valid preface there is nothing to wait for: the server hangs up.
    CHECK(bad[0]->closed_within(5s));
    CHECK(bad.back()->closed_within(5s));
  }
  require_generation_works(s);
  require_metrics_served(s);
}
