// End-to-end bad-input cases ([e2e]): every malformed request gets its gRPC status and a message
// naming the problem, on both Generate and Complete, and the server keeps answering valid
// requests afterwards (each case is followed by a valid request on the same channel).
#include <cmath>
#include <functional>
#include <limits>
#include <thread>

#include <catch2/catch.hpp>

#include "grpc_test_server.h"

using namespace mlra;
using namespace mlra::testing;
using namespace std::chrono_literals;

namespace {

struct BadCase {
  const char* name;
  std::function<void(v1::GenerateRequest&)> mutate;
  grpc::StatusCode code;
  const char* message_part;  // the status message must contain this
};

std::vector<BadCase> bad_cases() {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  auto sp = [](v1::GenerateRequest& r) { return r.mutable_sampling(); };
  using C = grpc::StatusCode;
  return {
      {"no prompt", [](auto& r) { r.clear_prompt(); }, C::INVALID_ARGUMENT, "prompt"},
      {"empty text", [](auto& r) { r.set_text(""); }, C::INVALID_ARGUMENT, "prompt is empty"},
      {"empty token ids", [](auto& r) { r.mutable_token_ids()->clear_ids(); }, C::INVALID_ARGUMENT,
       "prompt is empty"},
      {"token id past vocab", [](auto& r) { r.mutable_token_ids()->add_ids(280); },
       C::INVALID_ARGUMENT, "vocabulary"},
      {"negative token id", [](auto& r) { r.mutable_token_ids()->set_ids(0, -1); },
       C::INVALID_ARGUMENT, "vocabulary"},
      {"prompt + max_tokens > context", [=](auto& r) { sp(r)->set_max_tokens(300); },
       C::OUT_OF_RANGE, "context"},
      {"prompt alone > context",
       [](auto& r) {
         for (int i = 0; i < 300; ++i) r.mutable_token_ids()->add_ids(i % 280);
       },
       C::OUT_OF_RANGE, "context"},
      {"max_tokens 0", [=](auto& r) { sp(r)->set_max_tokens(0); }, C::INVALID_ARGUMENT,
       "max_tokens"},
      {"negative temperature", [=](auto& r) { sp(r)->set_temperature(-0.5f); }, C::INVALID_ARGUMENT,
       "temperature"},
      {"NaN temperature", [=](auto& r) { sp(r)->set_temperature(nan); }, C::INVALID_ARGUMENT,
       "temperature"},
      {"top_p 0", [=](auto& r) { sp(r)->set_top_p(0.0f); }, C::INVALID_ARGUMENT, "top_p"},
      {"top_p 1.5", [=](auto& r) { sp(r)->set_top_p(1.5f); }, C::INVALID_ARGUMENT, "top_p"},
      {"top_k -2", [=](auto& r) { sp(r)->set_top_k(-2); }, C::INVALID_ARGUMENT, "top_k"},
      {"min_p 2", [=](auto& r) { sp(r)->set_min_p(2.0f); }, C::INVALID_ARGUMENT, "min_p"},
      {"repetition_penalty 0", [=](auto& r) { sp(r)->set_repetition_penalty(0.0f); },
       C::INVALID_ARGUMENT, "repetition_penalty"},
      {"frequency_penalty 3", [=](auto& r) { sp(r)->set_frequency_penalty(3.0f); },
       C::INVALID_ARGUMENT, "frequency_penalty"},
      {"presence_penalty -3", [=](auto& r) { sp(r)->set_presence_penalty(-3.0f); },
       C::INVALID_ARGUMENT, "presence_penalty"},
      {"logprobs 21", [=](auto& r) { sp(r)->set_logprobs(21); }, C::INVALID_ARGUMENT, "logprobs"},
      {"17 stop strings",
       [=](auto& r) {
         for (int i = 0; i < 17; ++i) sp(r)->add_stop(std::to_string(i).append("-stop"));
       },
       C::INVALID_ARGUMENT, "stop strings"},
      {"empty stop string", [=](auto& r) { sp(r)->add_stop(""); }, C::INVALID_ARGUMENT,
       "stop string 0 is empty"},
      {"huge stop string", [=](auto& r) { sp(r)->add_stop(std::string(1000, 'x')); },
       C::INVALID_ARGUMENT, "stop string 0"},
      {"stop token id past vocab", [=](auto& r) { sp(r)->add_stop_token_ids(999); },
       C::INVALID_ARGUMENT, "stop"},
      {"oversized message (5 MB)", [](auto& r) { r.set_text(std::string(5 << 20, 'a')); },
       C::RESOURCE_EXHAUSTED, ""},
  };
}

v1::GenerateRequest valid_request() {
  return token_request({5, 6, 7, 8}, 4);
}

}  // namespace

TEST_CASE("e2e: every bad input gets its status and message - the server keeps serving",
          "[e2e][errors]") {
  ServerUnderTest s(fake_runner());
  for (const BadCase& c : bad_cases()) {
    INFO("case: " << c.name);
    v1::GenerateRequest request = valid_request();
    c.mutate(request);

    StreamResult streamed = generate(*s.stub, request);
    CHECK(streamed.chunks.empty());
    CHECK(streamed.status.error_code() == c.code);
    CHECK_THAT(streamed.status.error_message(), Catch::Contains(c.message_part));

    v1::CompleteResponse unary;
    grpc::Status status = complete(*s.stub, request, unary);
    CHECK(status.error_code() == c.code);
    CHECK_THAT(status.error_message(), Catch::Contains(c.message_part));

    StreamResult ok = generate(*s.stub, valid_request());
    REQUIRE(ok.status.ok());
    CHECK(ok.tokens == fake_greedy({5, 6, 7, 8}, 4));
  }
  CHECK(s.engine->stats().pages_used == 0);
  CHECK(s.engine->stats().requests_finished == static_cast<int64_t>(bad_cases().size()));
}

TEST_CASE("e2e: a duplicate in-flight request_id is ALREADY_EXISTS", "[e2e][errors]") {
  ServerUnderTest s(fake_runner(256, 5ms));
  v1::GenerateRequest first = token_request({1, 2, 3}, 100);
  first.set_request_id("same");
  grpc::ClientContext ctx;
  auto reader = s.stub->Generate(&ctx, first);
  v1::GenerateResponse chunk;
  REQUIRE(reader->Read(&chunk));

  v1::GenerateRequest second = token_request({4, 5, 6}, 4);
  second.set_request_id("same");
  StreamResult dup = generate(*s.stub, second);
  CHECK(dup.status.error_code() == grpc::StatusCode::ALREADY_EXISTS);
  CHECK_THAT(dup.status.error_message(), Catch::Contains("same"));

  while (reader->Read(&chunk)) {
  }
  REQUIRE(reader->Finish().ok());
  CHECK(generate(*s.stub, second).status.ok());  // free again once the first one finished
}

TEST_CASE("e2e: Detokenize and Cancel reject bad ids", "[e2e][errors]") {
  ServerUnderTest s(fake_runner());
  v1::DetokenizeRequest detok;
  detok.add_token_ids(3);
  detok.add_token_ids(100000);
  v1::DetokenizeResponse text;
  grpc::ClientContext ctx;
  grpc::Status status = s.stub->Detokenize(&ctx, detok, &text);
  CHECK(status.error_code() == grpc::StatusCode::INVALID_ARGUMENT);
  CHECK_THAT(status.error_message(), Catch::Contains("100000"));

  v1::CancelResponse cancelled;
  grpc::ClientContext cancel_ctx;
  CHECK(s.stub->Cancel(&cancel_ctx, v1::CancelRequest{}, &cancelled).error_code() ==
        grpc::StatusCode::INVALID_ARGUMENT);
}
