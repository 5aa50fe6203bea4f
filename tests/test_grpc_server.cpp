// End-to-end tests over real gRPC on loopback ([e2e]): streaming and unary generation, batching
// invariance (32 concurrent greedy requests), seeded sampling, logprobs, cancellation freeing
// pages, graceful shutdown, health and reflection. The fake runner's outputs are checked against
// fake_logits directly; the tiny MLRA-4 CPU model against each request run alone.
#include <atomic>
#include <cmath>
#include <future>
#include <random>
#include <thread>

#include <catch2/catch.hpp>

#include "grpc_test_server.h"
#include "server/cli/grpc_probe.h"

using namespace mlra;
using namespace mlra::testing;
using namespace std::chrono_literals;

namespace {

std::vector<std::vector<int32_t>> random_prompts(int count, int32_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_int_distribution<int32_t> len(3, 40), tok(0, vocab - 1);
  std::vector<std::vector<int32_t>> prompts(count);
  for (auto& p : prompts) {
    p.resize(len(rng));
    for (auto& t : p) t = tok(rng);
  }
  return prompts;
}

// Runs every request at once, each on its own thread and stream.
std::vector<StreamResult> generate_concurrently(v1::Mlra::Stub& stub,
                                                const std::vector<v1::GenerateRequest>& requests) {
  std::vector<std::future<StreamResult>> futures;
  for (const auto& r : requests) {
    futures.push_back(std::async(std::launch::async, [&stub, &r] { return generate(stub, r); }));
  }
  std::vector<StreamResult> results;
  for (auto& f : futures) results.push_back(f.get());
  return results;
}

// Polls engine stats (published after each step) until `done` holds or 5 s pass.
template <typename Pred>
bool wait_for_stats(const Engine& engine, Pred done) {
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (done(engine.stats())) return true;
    std::this_thread::sleep_for(2ms);
  }
  return false;
}

// Nothing runs or waits and no page is referenced.
bool wait_until_idle(const Engine& engine) {
  return wait_for_stats(engine, [](const EngineStats& s) {
    return s.running == 0 && s.waiting == 0 && s.pages_used == 0;
  });
}

std::string fake_text(const std::vector<int32_t>& tokens) {
  std::string text;
  for (int32_t t : tokens) {
    if (t != FakeRunnerOptions{}.eot_token) text += fake_token_text(t);
  }
  return text;
}

}  // namespace

TEST_CASE("e2e: health reports SERVING and reflection lists the services", "[e2e]") {
  ServerUnderTest s(fake_runner());
  HealthResult all = check_health(s.channel, "", 2s);
  REQUIRE(all.status.ok());
  CHECK(all.serving == ServingStatus::kServing);
  HealthResult mlra = check_health(s.channel, "mlra.v1.Mlra", 2s);
  REQUIRE(mlra.status.ok());
  CHECK(mlra.serving == ServingStatus::kServing);
  CHECK(check_health(s.channel, "no.such.Service", 2s).status.error_code() ==
        grpc::StatusCode::NOT_FOUND);

  std::vector<std::string> names;
  REQUIRE(list_services(s.channel, 2s, names).ok());
  CHECK(std::find(names.begin(), names.end(), "mlra.v1.Mlra") != names.end());
  CHECK(std::find(names.begin(), names.end(), "grpc.health.v1.Health") != names.end());
}

TEST_CASE("e2e: Generate streams the greedy tokens and Complete returns the same", "[e2e]") {
  ServerUnderTest s(fake_runner());
  const std::vector<int32_t> prompt = random_prompts(1, 280, 7)[0];
  v1::GenerateRequest request = token_request(prompt, 12);
  request.set_request_id("stream-1");
  const std::vector<int32_t> expected = fake_greedy(prompt, 12);

  StreamResult streamed = generate(*s.stub, request);
  REQUIRE(streamed.status.ok());
  CHECK(streamed.tokens == expected);
  CHECK(streamed.text == fake_text(expected));
  REQUIRE(!streamed.chunks.empty());
  for (size_t i = 0; i + 1 < streamed.chunks.size(); ++i) {
    CHECK(streamed.chunks[i].finish_reason() == v1::FINISH_REASON_UNSPECIFIED);
  }
  const v1::GenerateResponse& last = streamed.chunks.back();
  CHECK(last.finish_reason() == v1::FINISH_REASON_LENGTH);
  CHECK(last.usage().prompt_tokens() == static_cast<int32_t>(prompt.size()));
  CHECK(last.usage().completion_tokens() == 12);
  for (const auto& c : streamed.chunks) CHECK(c.request_id() == "stream-1");

  request.set_request_id("");  // the server assigns one
  v1::CompleteResponse unary;
  REQUIRE(complete(*s.stub, request, unary).ok());
  CHECK(std::vector<int32_t>(unary.token_ids().begin(), unary.token_ids().end()) == expected);
  CHECK(unary.text() == streamed.text);
  CHECK(unary.finish_reason() == v1::FINISH_REASON_LENGTH);
  CHECK(unary.usage().completion_tokens() == 12);
  CHECK(!unary.request_id().empty());
}

TEST_CASE("e2e: a text prompt and a stop string spanning token boundaries", "[e2e]") {
  ServerUnderTest s(fake_runner());
  const std::string prompt_text = "hello, world";
  const std::vector<int32_t> prompt(prompt_text.begin(), prompt_text.end());
  const std::vector<int32_t> expected = fake_greedy(prompt, 10);
  const std::string full = fake_text(expected);
  const std::string stop = full.substr(5, 4);  // starts mid-token, spans two boundaries
  REQUIRE(full.find(stop) == 5);

  v1::GenerateRequest request;
  request.set_text(prompt_text);
  request.mutable_sampling()->set_temperature(0.0f);
  request.mutable_sampling()->set_max_tokens(10);
  request.mutable_sampling()->set_ignore_eos(true);
  request.mutable_sampling()->add_stop(stop);
  StreamResult r = generate(*s.stub, request);
  REQUIRE(r.status.ok());
  CHECK(r.text == full.substr(0, 5));
  CHECK(r.chunks.back().finish_reason() == v1::FINISH_REASON_STOP);
  CHECK(r.chunks.back().stop_string() == stop);
  CHECK(r.chunks.back().usage().prompt_tokens() == static_cast<int32_t>(prompt.size()));
}

TEST_CASE("e2e: 32 concurrent greedy requests give the tokens each gives alone (fake)", "[e2e]") {
  ServerUnderTest s(fake_runner(/*num_pages=*/192));
  const auto prompts = random_prompts(32, 280, 11);
  std::vector<v1::GenerateRequest> requests;
  for (const auto& p : prompts) requests.push_back(token_request(p, 16));

  std::vector<StreamResult> results = generate_concurrently(*s.stub, requests);
  for (size_t i = 0; i < prompts.size(); ++i) {
    INFO("request " << i);
    REQUIRE(results[i].status.ok());
    CHECK(results[i].tokens == fake_greedy(prompts[i], 16));
  }
  CHECK(wait_until_idle(*s.engine));
}

TEST_CASE("e2e: 32 concurrent greedy requests equal each alone (tiny MLRA-4, CPU)", "[e2e][tiny]") {
  ServerUnderTest s(tiny_mlra4_runner());
  const auto prompts = random_prompts(32, 512, 13);
  std::vector<v1::GenerateRequest> requests;
  for (const auto& p : prompts) requests.push_back(token_request(p, 12));

  std::vector<std::vector<int32_t>> alone;
  for (const auto& r : requests) {
    v1::CompleteResponse response;
    REQUIRE(complete(*s.stub, r, response).ok());
    alone.emplace_back(response.token_ids().begin(), response.token_ids().end());
    REQUIRE(alone.back().size() == 12u);
  }
  std::vector<StreamResult> results = generate_concurrently(*s.stub, requests);
  for (size_t i = 0; i < prompts.size(); ++i) {
    INFO("request " << i);
    REQUIRE(results[i].status.ok());
    CHECK(results[i].tokens == alone[i]);
  }
}

TEST_CASE("e2e: seeded sampling is reproducible, also inside a busy batch", "[e2e]") {
  ServerUnderTest s(fake_runner());
  const auto prompts = random_prompts(9, 280, 17);
  v1::GenerateRequest seeded = token_request(prompts[0], 20);
  v1::SamplingParams* p = seeded.mutable_sampling();
  p->set_temperature(0.9f);
  p->set_top_k(50);
  p->set_top_p(0.95f);
  p->set_seed(424242);

  StreamResult first = generate(*s.stub, seeded);
  StreamResult second = generate(*s.stub, seeded);
  REQUIRE(first.status.ok());
  REQUIRE(second.status.ok());
  CHECK(first.tokens.size() == 20u);
  CHECK(first.tokens == second.tokens);

  std::vector<v1::GenerateRequest> busy = {seeded};
  for (size_t i = 1; i < prompts.size(); ++i) {
    v1::GenerateRequest other = token_request(prompts[i], 20);
    other.mutable_sampling()->set_temperature(1.0f);  // unseeded noise around it
    busy.push_back(other);
  }
  std::vector<StreamResult> results = generate_concurrently(*s.stub, busy);
  REQUIRE(results[0].status.ok());
  CHECK(results[0].tokens == first.tokens);

  p->set_seed(7);
  StreamResult other_seed = generate(*s.stub, seeded);
  REQUIRE(other_seed.status.ok());
  CHECK(other_seed.tokens != first.tokens);
}

TEST_CASE("e2e: logprobs are the fake model's log-softmax, top-n sorted", "[e2e]") {
  ServerUnderTest s(fake_runner());
  const std::vector<int32_t> prompt = random_prompts(1, 280, 19)[0];
  v1::GenerateRequest request = token_request(prompt, 5);
  request.mutable_sampling()->set_logprobs(3);
  v1::CompleteResponse response;
  REQUIRE(complete(*s.stub, request, response).ok());
  REQUIRE(response.logprobs_size() == 5);

  const FakeRunnerOptions o;
  std::vector<int32_t> history = prompt;
  std::vector<float> row(static_cast<size_t>(o.vocab_size));
  for (const v1::TokenLogprob& lp : response.logprobs()) {
    fake_logits(history, o.vocab_size, o.text_vocab_size, row.data());
    double max = row[0], sum = 0;
    for (int64_t v = 0; v < o.text_vocab_size; ++v) max = std::max<double>(max, row[v]);
    for (int64_t v = 0; v < o.text_vocab_size; ++v) sum += std::exp(row[v] - max);
    auto ref = [&](int32_t t) { return row[t] - max - std::log(sum); };
    CHECK(lp.logprob() == Approx(ref(lp.token_id())).margin(1e-4));
    REQUIRE(lp.top_size() == 3);
    CHECK(lp.top(0).token_id() == lp.token_id());  // greedy: the chosen token is the best
    for (int k = 0; k < 3; ++k)
      CHECK(lp.top(k).logprob() == Approx(ref(lp.top(k).token_id())).margin(1e-4));
    CHECK(lp.top(0).logprob() >= lp.top(1).logprob());
    CHECK(lp.top(1).logprob() >= lp.top(2).logprob());
    history.push_back(lp.token_id());
  }
}

TEST_CASE("e2e: client cancellation aborts the request and frees its pages", "[e2e]") {
  ServerUnderTest s(fake_runner(256, 5ms));
  v1::GenerateRequest request = token_request(random_prompts(1, 280, 23)[0], 200);
  grpc::ClientContext ctx;
  auto reader = s.stub->Generate(&ctx, request);
  v1::GenerateResponse chunk;
  REQUIRE(reader->Read(&chunk));
  CHECK(wait_for_stats(*s.engine, [](const EngineStats& st) { return st.pages_used > 0; }));
  ctx.TryCancel();
  while (reader->Read(&chunk)) {
  }
  CHECK(reader->Finish().error_code() == grpc::StatusCode::CANCELLED);
  CHECK(wait_until_idle(*s.engine));
  CHECK(s.engine->stats().generated_tokens < 200);
  // The client sees CANCELLED before the server's handler thread has returned; it must
  // deregister promptly.
  for (int i = 0; i < 200 && s.server->gateway().in_flight() != 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  CHECK(s.server->gateway().in_flight() == 0);
}

TEST_CASE("e2e: the Cancel RPC ends another client's stream with CANCELLED", "[e2e]") {
  ServerUnderTest s(fake_runner(256, 5ms));
  v1::GenerateRequest request = token_request(random_prompts(1, 280, 29)[0], 200);
  request.set_request_id("victim");
  grpc::ClientContext ctx;
  auto reader = s.stub->Generate(&ctx, request);
  v1::GenerateResponse chunk;
  REQUIRE(reader->Read(&chunk));

  v1::CancelRequest cancel;
  cancel.set_request_id("victim");
  v1::CancelResponse cancelled;
  grpc::ClientContext cancel_ctx;
  REQUIRE(s.stub->Cancel(&cancel_ctx, cancel, &cancelled).ok());
  CHECK(cancelled.found());

  v1::GenerateResponse last;
  while (reader->Read(&chunk)) last = chunk;
  CHECK(reader->Finish().error_code() == grpc::StatusCode::CANCELLED);
  CHECK(last.finish_reason() == v1::FINISH_REASON_CANCELLED);
  CHECK(last.usage().completion_tokens() < 200);
  CHECK(wait_until_idle(*s.engine));

  grpc::ClientContext again_ctx;
  REQUIRE(s.stub->Cancel(&again_ctx, cancel, &cancelled).ok());
  CHECK_FALSE(cancelled.found());
}

TEST_CASE("e2e: shutdown drains short requests and aborts long ones", "[e2e]") {
  ServerUnderTest s(fake_runner(256, 5ms));
  const auto prompts = random_prompts(2, 280, 31);
  auto long_call = std::async(std::launch::async,
                              [&] { return generate(*s.stub, token_request(prompts[0], 240)); });
  auto short_call = std::async(std::launch::async,
                               [&] { return generate(*s.stub, token_request(prompts[1], 10)); });
  REQUIRE(wait_for_stats(*s.engine, [](const EngineStats& st) { return st.running == 2; }));

  auto stopper = std::async(std::launch::async, [&] { s.server->shutdown(600ms); });
  std::this_thread::sleep_for(100ms);
  CHECK(check_health(s.channel, "", 2s).serving == ServingStatus::kNotServing);
  StreamResult refused = generate(*s.stub, token_request(prompts[1], 4));
  CHECK(refused.status.error_code() == grpc::StatusCode::UNAVAILABLE);
  stopper.get();

  StreamResult finished = short_call.get();
  CHECK(finished.status.ok());
  CHECK(finished.tokens.size() == 10u);
  StreamResult aborted = long_call.get();
  CHECK(aborted.status.error_code() == grpc::StatusCode::UNAVAILABLE);
  REQUIRE(!aborted.chunks.empty());
  CHECK(aborted.chunks.back().finish_reason() == v1::FINISH_REASON_ABORTED);
  CHECK(aborted.tokens.size() < 240u);
}

TEST_CASE("e2e: ModelInfo, Stats, Tokenize and Detokenize", "[e2e]") {
  ServerUnderTest s(fake_runner());
  grpc::ClientContext info_ctx;
  v1::ModelInfoResponse info;
  REQUIRE(s.stub->ModelInfo(&info_ctx, v1::ModelInfoRequest{}, &info).ok());
  const EngineOptions& o = s.engine->options();
  CHECK(info.text_vocab_size() == 280);
  CHECK(info.page_size() == o.page_size);
  CHECK(info.num_pages() == o.num_pages);
  CHECK(info.cache_capacity_tokens() == o.num_pages * o.page_size);
  CHECK(info.max_context() == o.max_context);
  CHECK(info.backend() == "fake");

  v1::TokenizeRequest tok;
  tok.set_text("abc");
  v1::TokenizeResponse ids;
  grpc::ClientContext tok_ctx;
  REQUIRE(s.stub->Tokenize(&tok_ctx, tok, &ids).ok());
  CHECK(std::vector<int32_t>(ids.token_ids().begin(), ids.token_ids().end()) ==
        std::vector<int32_t>{'a', 'b', 'c'});

  v1::DetokenizeRequest detok;
  detok.add_token_ids(0);
  detok.add_token_ids(27);
  v1::DetokenizeResponse text;
  grpc::ClientContext detok_ctx;
  REQUIRE(s.stub->Detokenize(&detok_ctx, detok, &text).ok());
  CHECK(text.text() == fake_token_text(0) + fake_token_text(27));

  REQUIRE(generate(*s.stub, token_request({1, 2, 3}, 4)).status.ok());
  grpc::ClientContext stats_ctx;
  v1::StatsResponse stats;
  REQUIRE(s.stub->Stats(&stats_ctx, v1::StatsRequest{}, &stats).ok());
  CHECK(stats.healthy());
  CHECK(stats.requests_finished() == 1);
  CHECK(stats.generated_tokens() == 4);
  CHECK(stats.pages_total() == o.num_pages);
}

TEST_CASE("e2e: a lost runner fails the request with INTERNAL and health goes NOT_SERVING",
          "[e2e]") {
  FakeRunnerOptions o;
  o.fail_at_step = 3;
  ServerUnderTest s(std::make_unique<FakeModelRunner>(o));
  REQUIRE(check_health(s.channel, "", 2s).serving == ServingStatus::kServing);
  StreamResult r = generate(*s.stub, token_request({1, 2, 3}, 20));
  CHECK(r.status.error_code() == grpc::StatusCode::INTERNAL);
  REQUIRE(!r.chunks.empty());
  CHECK(r.chunks.back().finish_reason() == v1::FINISH_REASON_ERROR);
  CHECK(!r.chunks.back().error_message().empty());

  const auto deadline = std::chrono::steady_clock::now() + 5s;
  ServingStatus serving = ServingStatus::kServing;
  while (serving == ServingStatus::kServing && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    serving = check_health(s.channel, "", 2s).serving;
  }
  CHECK(serving == ServingStatus::kNotServing);
  StreamResult after = generate(*s.stub, token_request({1, 2, 3}, 4));
  CHECK(after.status.error_code() == grpc::StatusCode::UNAVAILABLE);
}
