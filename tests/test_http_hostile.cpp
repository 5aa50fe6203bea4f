// Hostile and careless HTTP clients ([http][hostile]): malformed HTTP and oversized heads are
// answered and closed; a 100 MB body is refused (413) before it is read, without the server
// buffering it; a client that stops reading its stream stalls nobody else; a disconnect cancels
// the request and frees its pages (logged CANCELLED); idle connections cannot starve /metrics.
#include <atomic>
#include <future>
#include <random>
#include <sstream>
#include <thread>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <catch2/catch.hpp>

#include "http_test_client.h"
#include "http_test_server.h"
#include "metered_test_server.h"
#include "server/cli/http_get.h"

using namespace mlra;
using namespace mlra::testing;
using namespace std::chrono_literals;
using Json = nlohmann::json;
using boost::beast::http::verb;

namespace {

bool wait_idle(const Engine& engine, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    const EngineStats s = engine.stats();
    if (s.running == 0 && s.waiting == 0 && s.pages_used == 0) return true;
    std::this_thread::sleep_for(2ms);
  }
  return false;
}

std::string post_head(const std::string& target, size_t content_length) {
  return "POST " + target + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" +
         "Content-Length: " + std::to_string(content_length) + "\r\n\r\n";
}

std::string stream_request(const Json& body) {
  const std::string text = body.dump();
  return post_head("/v1/completions", text.size()) + text;
}

}  // namespace

TEST_CASE("http: malformed requests are answered 400/431 and the server keeps serving",
          "[http][hostile][e2e]") {
  HttpServerUnderTest s(fake_runner());
  std::mt19937 rng(9);
  for (int i = 0; i < 20; ++i) {
    RawSocket c(s.port());
    std::string junk(1 + rng() % 2000, '\0');
    for (char& ch : junk) ch = static_cast<char>(rng());
    c.send_all(junk + "\r\n\r\n");
    const std::string reply = c.read_for(5s);
    CHECK((reply.empty() || reply.rfind("HTTP/1.1 400", 0) == 0));
    CHECK(c.peer_closed());
  }
  {
    RawSocket c(s.port());
    c.send_all("GET /health HTTP/1.1\r\nX-Big: " + std::string(64 << 10, 'a') + "\r\n\r\n");
    CHECK_THAT(c.read_for(5s), Catch::StartsWith("HTTP/1.1 431"));
  }
  {
    RawSocket c(s.port());
    c.send_all("GET /health HTTP/9.9\r\n\r\n");
    CHECK_THAT(c.read_for(5s), Catch::StartsWith("HTTP/1.1 400"));
  }
  {  // keep-alive with pipelining: both answered, in order
    RawSocket c(s.port());
    c.send_all("GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n");
    const std::string replies = c.read_for(5s, "test-model");
    CHECK(replies.rfind("HTTP/1.1 200", 0) == 0);
    CHECK(replies.find("HTTP/1.1 200", 10) != std::string::npos);
    CHECK_THAT(replies, Catch::Contains("test-model"));
  }
  CHECK(post_json(s.port(), "/v1/completions", {{"prompt", "ok"}, {"max_tokens", 2}}).status ==
        200);
}

TEST_CASE("http: a 100 MB body is refused with 413 before it is read", "[http][hostile][e2e]") {
  HttpServerUnderTest s(fake_runner());
  const int64_t before = resident_bytes();
  RawSocket c(s.port());
  REQUIRE(c.send_all(post_head("/v1/completions", size_t(100) << 20)));
  // The answer comes at once, from the head alone.
  const std::string reply = c.read_for(5s, "\r\n\r\n");
  CHECK_THAT(reply, Catch::StartsWith("HTTP/1.1 413"));
  // Sending the body anyway gets nowhere: the server closed the connection.
  const std::string chunk(1 << 20, 'x');
  size_t sent = 0;
  for (int i = 0; i < 100 && c.send_all(chunk); ++i) sent += chunk.size();
  CHECK(sent < (size_t(100) << 20));
  CHECK(resident_bytes() - before < (int64_t(20) << 20));

  // A chunked body is cut at the limit (4 MB) with 413 too.
  RawSocket d(s.port());
  REQUIRE(
      d.send_all("POST /v1/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"));
  std::string body_chunk = "100000\r\n" + std::string(0x100000, 'y') + "\r\n";
  for (int i = 0; i < 8 && d.send_all(body_chunk); ++i) {
  }
  CHECK_THAT(d.read_for(5s, "\r\n\r\n"), Catch::StartsWith("HTTP/1.1 413"));
  CHECK(resident_bytes() - before < (int64_t(40) << 20));
  CHECK(post_json(s.port(), "/v1/completions", {{"prompt", "ok"}, {"max_tokens", 2}}).status ==
        200);
}

TEST_CASE("http: a client that disconnects mid-stream has its request cancelled and pages freed",
          "[http][hostile][e2e]") {
  std::ostringstream captured;
  auto previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>(
      "capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(captured)));
  {
    HttpServerUnderTest s(fake_runner(256, 3ms));
    {
      RawSocket c(s.port());
      REQUIRE(c.send_all(stream_request(
          {{"prompt", "abc"}, {"max_tokens", 200}, {"stream", true}, {"ignore_eos", true}})));
      CHECK_THAT(c.read_for(5s, "data: "), Catch::Contains("data: "));
    }  // closed after the first event
    REQUIRE(wait_idle(*s.engine, 2s));
    CHECK(s.engine->stats().generated_tokens < 150);
    // The call ends on its connection's strand right after the engine's final chunk.
    for (int i = 0; i < 200 && s.gateway->in_flight() != 0; ++i) std::this_thread::sleep_for(10ms);
    REQUIRE(s.gateway->in_flight() == 0);
    // Non-streamed too: the client leaves while waiting.
    {
      RawSocket c(s.port());
      REQUIRE(c.send_all(
          stream_request({{"prompt", "abc"}, {"max_tokens", 200}, {"ignore_eos", true}})));
      std::this_thread::sleep_for(100ms);
    }
    REQUIRE(wait_idle(*s.engine, 2s));
    CHECK(s.engine->stats().generated_tokens < 300);
    for (int i = 0; i < 100 && s.gateway->in_flight() != 0; ++i) std::this_thread::sleep_for(10ms);
    CHECK(s.gateway->in_flight() == 0);
  }
  spdlog::set_default_logger(previous);
  const std::string log = captured.str();
  INFO(log);
  size_t cancelled = 0;
  for (size_t at = log.find("protocol=http method=completions"); at != std::string::npos;
       at = log.find("protocol=http method=completions", at + 1)) {
    cancelled += log.compare(log.find("status=", at), 16, "status=CANCELLED") == 0;
  }
  CHECK(cancelled == 2);
}

TEST_CASE("http: a client that stops reading its stream does not stall other streams",
          "[http][hostile][e2e]") {
  HttpServerUnderTest s(fake_runner(512));
  // A small receive buffer fills quickly; this client never reads again.
  RawSocket stuck(s.port(), 4096);
  REQUIRE(stuck.send_all(stream_request({{"prompt", "abc"},
                                         {"max_tokens", 240},
                                         {"stream", true},
                                         {"logprobs", 20},
                                         {"ignore_eos", true}})));
  std::this_thread::sleep_for(100ms);
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::future<unsigned>> others;
  for (int i = 0; i < 8; ++i) {
    others.push_back(std::async(std::launch::async, [&] {
      Json body = {{"prompt", "xyz"}, {"max_tokens", 30}, {"stream", true}, {"ignore_eos", true}};
      const HttpReply r = post_json(s.port(), "/v1/completions", body);
      return sse_events(r.body).back() == "[DONE]" ? r.status : 0u;
    }));
  }
  for (auto& f : others) CHECK(f.get() == 200);
  CHECK(std::chrono::steady_clock::now() - start < 5s);
}

TEST_CASE("idle connections cannot starve /metrics scrapes", "[metrics][hostile][e2e]") {
  MetricsEndpointOptions options;
  options.max_connections = 16;
  MeteredServer s(fake_runner(), options);
  // More idle connections than the cap, each having sent half a request or nothing.
  std::vector<std::unique_ptr<RawSocket>> idle;
  for (int i = 0; i < 100; ++i) {
    idle.push_back(std::make_unique<RawSocket>(s.endpoint->port()));
    if (i % 2) idle.back()->send_all("GET /metrics HTTP/1.1\r\n");
  }
  const auto start = std::chrono::steady_clock::now();
  int served = 0;
  for (int i = 0; i < 40; ++i) {
    try {
      served += http_get(s.metrics_target(), "/metrics", 5s).status == 200;
    } catch (const std::exception&) {
    }
  }
  CHECK(served == 40);
  CHECK(std::chrono::steady_clock::now() - start < 10s);
}
