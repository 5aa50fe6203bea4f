// Hostile and careless gRPC clients ([hostile]): a unary Complete whose client gives up
// (deadline, cancel) stops generating at once and is logged as such; a prompt over the byte
// bound is refused before it is tokenized; Detokenize never answers invalid UTF-8; undecodable
// requests get INVALID_ARGUMENT with a message and are logged and counted.
#include <atomic>
#include <chrono>
#include <future>
#include <random>
#include <sstream>
#include <thread>

#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <catch2/catch.hpp>

#include "grpc_test_server.h"
#include "metered_test_server.h"
#include "models/gpt2_tokenizer.h"
#include "raw_grpc_call.h"
#include "scrape_until.h"
#include "server/cli/http_get.h"
#include "server/prometheus_text.h"
#include "server/utf8.h"

using namespace mlra;
using namespace mlra::testing;
using namespace std::chrono_literals;

namespace {

// Captures the default logger's lines while alive.
class LogCapture {
 public:
  LogCapture() : previous_(spdlog::default_logger()) {
    spdlog::set_default_logger(std::make_shared<spdlog::logger>(
        "capture", std::make_shared<spdlog::sinks::ostream_sink_mt>(stream_)));
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string text() const { return stream_.str(); }

 private:
  std::ostringstream stream_;
  std::shared_ptr<spdlog::logger> previous_;
};

bool wait_idle(const Engine& engine, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    const EngineStats s = engine.stats();
    if (s.running == 0 && s.waiting == 0 && s.pages_used == 0) return true;
    std::this_thread::sleep_for(2ms);
  }
  return false;
}

}  // namespace

TEST_CASE("Complete stops generating when its client's deadline passes or it cancels",
          "[hostile][e2e]") {
  const bool by_deadline = GENERATE(true, false);
  LogCapture log;
  // 3 ms per step: 240 tokens take 0.7 s or more; the client gives up after 0.3 s.
  ServerUnderTest s(fake_runner(256, 3ms));
  v1::GenerateRequest r = token_request({1, 2, 3}, 240);
  r.set_request_id("impatient");
  grpc::ClientContext ctx;
  if (by_deadline) ctx.set_deadline(std::chrono::system_clock::now() + 300ms);
  std::thread canceller;
  if (!by_deadline) {
    canceller = std::thread([&] {
      std::this_thread::sleep_for(300ms);
      ctx.TryCancel();
    });
  }
  v1::CompleteResponse response;
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status status = s.stub->Complete(&ctx, r, &response);
  if (canceller.joinable()) canceller.join();
  CHECK(status.error_code() ==
        (by_deadline ? grpc::StatusCode::DEADLINE_EXCEEDED : grpc::StatusCode::CANCELLED));
  REQUIRE(wait_idle(*s.engine, 2s));
  const auto elapsed = std::chrono::steady_clock::now() - start;
  const EngineStats stats = s.engine->stats();
  INFO("generated " << stats.generated_tokens);
  // Stopped within a few steps of the client giving up, not after all 240 tokens.
  CHECK(stats.generated_tokens < 200);
  CHECK(elapsed < 1s);
  // The server logs the call once it ends (OnDone), right after the engine's final chunk.
  std::string text;
  for (int i = 0; i < 200; ++i) {
    text = log.text();
    if (text.find("id=impatient") != std::string::npos) break;
    std::this_thread::sleep_for(5ms);
  }
  INFO(text);
  CHECK_THAT(text,
             Catch::Contains(by_deadline ? "id=impatient status=DEADLINE_EXCEEDED finish=cancelled"
                                         : "id=impatient status=CANCELLED finish=cancelled"));
}

TEST_CASE("a prompt text over the byte bound is refused before it is tokenized", "[hostile][e2e]") {
  auto encoded_bytes = std::make_shared<std::atomic<int64_t>>(0);
  TextCodec codec = byte_codec();
  codec.max_token_bytes = 1;  // one id per byte: max_context (256) bytes at most
  codec.encode = [encoded_bytes, inner = codec.encode](std::string_view text) {
    *encoded_bytes += int64_t(text.size());
    return inner(text);
  };
  ServerUnderTest s(fake_runner(), {}, {}, codec);
  REQUIRE(s.server->gateway().max_prompt_bytes() == 256);

  v1::GenerateRequest big = token_request({}, 4);
  big.set_text(std::string(3'900'000, 'x'));
  v1::CompleteResponse response;
  const auto start = std::chrono::steady_clock::now();
  const grpc::Status status = complete(*s.stub, big, response);
  CHECK(status.error_code() == grpc::StatusCode::OUT_OF_RANGE);
  CHECK_THAT(status.error_message(), Catch::Contains("3900000 bytes"));
  CHECK(std::chrono::steady_clock::now() - start < 2s);
  CHECK(*encoded_bytes == 0);

  // At the bound it is tokenized (and refused by the context check, counting max_tokens).
  v1::GenerateRequest edge = token_request({}, 4);
  edge.set_text(std::string(256, 'x'));
  CHECK(complete(*s.stub, edge, response).error_code() == grpc::StatusCode::OUT_OF_RANGE);
  CHECK(*encoded_bytes == 256);
  v1::GenerateRequest fits = token_request({}, 4);
  fits.set_text(std::string(100, 'x'));
  CHECK(complete(*s.stub, fits, response).ok());

  // Tokenize obeys the same bound.
  grpc::ClientContext ctx;
  v1::TokenizeRequest tr;
  tr.set_text(std::string(1000, 'y'));
  v1::TokenizeResponse tokens;
  CHECK(s.stub->Tokenize(&ctx, tr, &tokens).error_code() == grpc::StatusCode::OUT_OF_RANGE);
}

TEST_CASE("Detokenize of ids that split a character answers valid UTF-8 (U+FFFD)",
          "[hostile][e2e]") {
  const Gpt2Tokenizer tokenizer = Gpt2Tokenizer::load(default_tokenizer_dir());
  REQUIRE(!is_valid_utf8(tokenizer.decode({447, 0})));  // "\xe2\x80" + "!"
  FakeRunnerOptions o;
  o.vocab_size = 1024;
  o.text_vocab_size = 1000;
  o.eot_token = 999;
  ServerUnderTest s(std::make_unique<FakeModelRunner>(o), {}, {}, gpt2_text_codec(tokenizer));
  for (const std::vector<int32_t>& ids :
       std::vector<std::vector<int32_t>>{{447, 0}, {447}, {0, 447, 447, 0}, {220, 447, 246}}) {
    grpc::ClientContext ctx;
    v1::DetokenizeRequest request;
    for (int32_t id : ids) request.add_token_ids(id);
    v1::DetokenizeResponse response;
    const grpc::Status status = s.stub->Detokenize(&ctx, request, &response);
    REQUIRE(status.ok());
    CHECK(is_valid_utf8(response.text()));
    CHECK(response.text() == valid_utf8(tokenizer.decode(ids)));
  }
  grpc::ClientContext ctx;
  v1::DetokenizeRequest request;
  request.add_token_ids(447);
  request.add_token_ids(0);
  v1::DetokenizeResponse response;
  REQUIRE(s.stub->Detokenize(&ctx, request, &response).ok());
  CHECK(response.text() == "\xEF\xBF\xBD!");
  // A complete character across two ids stays intact: "’" is ids 447, 247.
  grpc::ClientContext ctx2;
  v1::DetokenizeRequest whole;
  whole.add_token_ids(447);
  whole.add_token_ids(247);
  REQUIRE(s.stub->Detokenize(&ctx2, whole, &response).ok());
  CHECK(response.text() == "\xE2\x80\x99");
}

TEST_CASE("valid_utf8 replaces each maximal invalid subpart with one U+FFFD", "[hostile]") {
  const std::string r = "\xEF\xBF\xBD";
  CHECK(valid_utf8("plain") == "plain");
  CHECK(valid_utf8("\xE2\x80\x99") == "\xE2\x80\x99");
  CHECK(valid_utf8("\xE2\x80!") == r + "!");
  CHECK(valid_utf8("\xFF\xFE") == r + r);
  CHECK(valid_utf8("a\xC0\xAF"
                   "b") == "a" + r + r + "b");             // overlong: two invalid bytes
  CHECK(valid_utf8("\xED\xA0\x80") == r + r + r);          // surrogate
  CHECK(valid_utf8("\xF4\x90\x80\x80") == r + r + r + r);  // past U+10FFFF
  CHECK(valid_utf8("\xF0\x9F\x98") == r);                  // truncated 4-byte
  CHECK(valid_utf8("\xF0\x9F\x98\x80") == "\xF0\x9F\x98\x80");
  std::mt19937 rng(3);
  for (int i = 0; i < 2000; ++i) {
    std::string bytes(rng() % 12, '\0');
    for (char& c : bytes) c = static_cast<char>(rng());
    const std::string fixed = valid_utf8(bytes);
    CHECK(is_valid_utf8(fixed));
    if (is_valid_utf8(bytes)) CHECK(fixed == bytes);
  }
}

TEST_CASE("undecodable requests get INVALID_ARGUMENT with a message, logged and counted",
          "[hostile][e2e]") {
  LogCapture log;
  MeteredServer s(fake_runner());
  const auto& channel = s.server->channel;
  // Field 2 (text) holding 0xFF 0xFE: not UTF-8. Then bytes that are no protobuf at all.
  const std::string bad_utf8 = std::string("\x12\x02\xFF\xFE", 4);
  const std::string garbage = std::string("\xFF\xFF\xFF\xFF\x0F\x01", 6);
  for (const char* method : {"Generate", "Complete"}) {
    for (const std::string& bytes : {bad_utf8, garbage}) {
      const RawCallResult r = raw_grpc_call(channel, std::string("/mlra.v1.Mlra/") + method, bytes);
      CHECK(r.status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
      CHECK_THAT(r.status.error_message(), Catch::Contains("not a valid mlra.v1.GenerateRequest"));
      CHECK(r.responses.empty());
    }
  }
  // TokenizeRequest field 1 (text) holding bytes that are not UTF-8.
  const RawCallResult t =
      raw_grpc_call(channel, "/mlra.v1.Mlra/Tokenize", std::string("\x0a\x02\xFF\xFE", 4));
  CHECK(t.status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(t.status.error_message(), Catch::Contains("TokenizeRequest"));
  // The server still serves.
  v1::CompleteResponse response;
  CHECK(complete(*s.server->stub, token_request({1, 2}, 2), response).ok());

  const std::string text = log.text();
  INFO(text);
  size_t refused = 0;
  for (size_t at = text.find("status=INVALID_ARGUMENT"); at != std::string::npos;
       at = text.find("status=INVALID_ARGUMENT", at + 1)) {
    ++refused;
  }
  CHECK(refused == 5);
  CHECK_THAT(text, Catch::Contains("method=Generate id=- status=INVALID_ARGUMENT finish=none"));
  const MetricsScrape m = scrape_until(
      [&] { return http_get(s.metrics_target(), "/metrics", 10s).body; },
      [](const MetricsScrape& x) {
        return x.sum("mlra:requests_total", {{"method", "Complete"}, {"code", "OK"}}) == 1;
      });
  CHECK(m.sum("mlra:requests_total", {{"method", "Generate"}, {"code", "INVALID_ARGUMENT"}}) == 2);
  CHECK(m.sum("mlra:requests_total", {{"method", "Complete"}, {"code", "INVALID_ARGUMENT"}}) == 2);
  CHECK(m.sum("mlra:requests_total", {{"method", "Tokenize"}, {"code", "INVALID_ARGUMENT"}}) == 1);
  CHECK(m.sum("mlra:requests_total", {{"method", "Complete"}, {"code", "OK"}}) == 1);
}
