// Engine with the fake runner: concurrent requests equal solo runs and an independent greedy
// reference, seeded sampling inside a busy batch, stop strings, validation codes, cancellation,
// queue limit, runner failure and shutdown. Every request must get exactly one final chunk.
#include <catch2/catch.hpp>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <thread>

#include "engine/engine.h"
#include "tests/fake_model_runner.h"

using namespace mlra;
using namespace mlra::testing;
using namespace std::chrono_literals;

namespace {

struct Result {
  std::vector<int32_t> tokens;
  std::string text;
  FinishReason reason = FinishReason::kNone;
  std::string error;
  Usage usage;
  int finals = 0;
  int chunks = 0;
};

// Collects chunks of many requests; wait() blocks until each has its final chunk.
class Collector {
 public:
  Engine::ChunkCallback callback(size_t i) {
    {
      std::lock_guard lock(mu_);
      if (results_.size() <= i) results_.resize(i + 1);
    }
    return [this, i](GenerationChunk&& c) {
      std::lock_guard lock(mu_);
      Result& r = results_[i];
      r.tokens.insert(r.tokens.end(), c.token_ids.begin(), c.token_ids.end());
      r.text += c.text;
      ++r.chunks;
      if (c.finish_reason != FinishReason::kNone) {
        r.reason = c.finish_reason;
        r.error = c.error_message;
        r.usage = c.usage;
        ++r.finals;
        ++done_;
        cv_.notify_all();
      }
    };
  }
  bool wait(size_t n, std::chrono::seconds timeout = 60s) {
    std::unique_lock lock(mu_);
    return cv_.wait_for(lock, timeout, [&] { return done_ >= n; });
  }
  Result get(size_t i) {
    std::lock_guard lock(mu_);
    return results_[i];
  }
  int chunks(size_t i) {
    std::lock_guard lock(mu_);
    return results_[i].chunks;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Result> results_;
  size_t done_ = 0;
};

std::unique_ptr<Engine> make_engine(FakeRunnerOptions o, EngineOptions e = {}) {
  return std::make_unique<Engine>(std::make_unique<FakeModelRunner>(o), fake_decoder_factory(), e);
}

std::vector<int32_t> random_prompt(std::mt19937_64& rng, int n, int64_t vocab) {
  std::vector<int32_t> p(static_cast<size_t>(n));
  for (auto& t : p) t = static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab));
  return p;
}

// Independent greedy reference over the fake logits, honouring EOS unless ignored.
std::vector<int32_t> reference_greedy(std::vector<int32_t> history, const SamplingParams& p,
                                      const FakeRunnerOptions& o) {
  std::vector<float> row(static_cast<size_t>(o.vocab_size));
  std::vector<int32_t> out;
  while (static_cast<int32_t>(out.size()) < p.max_tokens) {
    fake_logits(history, o.vocab_size, o.text_vocab_size, row.data());
    const auto best = static_cast<int32_t>(
        std::max_element(row.begin(), row.begin() + o.text_vocab_size) - row.begin());
    out.push_back(best);
    history.push_back(best);
    if (best == o.eot_token && !p.ignore_eos) break;
  }
  return out;
}

Result run_alone(const FakeRunnerOptions& o, const GenerationRequest& r, EngineOptions e = {}) {
  auto engine = make_engine(o, e);
  Collector c;
  engine->submit(r, c.callback(0));
  REQUIRE(c.wait(1));
  return c.get(0);
}

}  // namespace

TEST_CASE("32 concurrent requests give the same tokens as each alone", "[engine][engine_loop]") {
  std::mt19937_64 rng(1);
  FakeRunnerOptions o;
  o.num_pages = 40;  // 160 tokens for 32 requests: forces preemption and queueing
  o.max_context = 64;
  o.eot_token = 5;  // reachable, so some requests end with EOS
  EngineOptions e;
  e.max_running_seqs = 12;
  e.max_step_tokens = 24;
  auto stem = random_prompt(rng, 9, o.text_vocab_size);
  std::vector<GenerationRequest> reqs;
  for (int i = 0; i < 32; ++i) {
    GenerationRequest r;
    r.request_id = std::to_string(i);
    r.prompt_tokens =
        i % 3 == 0 ? stem : random_prompt(rng, 1 + static_cast<int>(rng() % 20), o.text_vocab_size);
    r.prompt_tokens.push_back(static_cast<int32_t>(rng() % 200));
    r.params.max_tokens = 5 + static_cast<int32_t>(rng() % 25);
    r.params.ignore_eos = i % 2 == 0;
    if (i % 4 == 1) {  // seeded sampling inside the busy batch
      r.params.temperature = 0.9f;
      r.params.top_p = 0.95f;
      r.params.seed = 1000 + i;
    } else {
      r.params.temperature = 0.0f;
    }
    reqs.push_back(r);
  }
  auto engine = make_engine(o, e);
  Collector c;
  for (size_t i = 0; i < reqs.size(); ++i) engine->submit(reqs[i], c.callback(i));
  REQUIRE(c.wait(reqs.size()));
  for (size_t i = 0; i < reqs.size(); ++i) {
    INFO("request " << i);
    Result together = c.get(i);
    Result alone = run_alone(o, reqs[i], e);
    CHECK(together.finals == 1);
    CHECK(together.tokens == alone.tokens);
    CHECK(together.text == alone.text);
    CHECK(together.reason == alone.reason);
    if (reqs[i].params.temperature == 0.0f)
      CHECK(together.tokens == reference_greedy(reqs[i].prompt_tokens, reqs[i].params, o));
    CHECK(together.usage.completion_tokens == static_cast<int32_t>(together.tokens.size()));
    CHECK(together.usage.prompt_tokens == static_cast<int32_t>(reqs[i].prompt_tokens.size()));
  }
  engine->shutdown(true);
  EngineStats s = engine->stats();
  CHECK(s.preemptions > 0);
  CHECK(s.prefix_hit_tokens > 0);
  CHECK(s.pages_used == 0);
  CHECK(s.requests_finished == 32);
}

TEST_CASE("engine stop strings cut the text across token boundaries",
          "[engine][engine_loop][stop]") {
  std::mt19937_64 rng(2);
  FakeRunnerOptions o;
  GenerationRequest r;
  r.prompt_tokens = random_prompt(rng, 6, o.text_vocab_size);
  r.params.temperature = 0.0f;
  r.params.max_tokens = 12;
  r.params.ignore_eos = true;
  Result full = run_alone(o, r);
  REQUIRE(full.text.size() == 24);
  CHECK(full.reason == FinishReason::kLength);
  const std::string stop = full.text.substr(9, 3);  // spans tokens 4 and 5
  r.params.stop = {"zzzz", stop};
  Result cut = run_alone(o, r);
  CHECK(cut.reason == FinishReason::kStop);
  CHECK(cut.text == full.text.substr(0, full.text.find(stop)));
  CHECK(cut.tokens.size() <= 6);
}

TEST_CASE("invalid requests are rejected with the right code and the engine keeps serving",
          "[engine][engine_loop][validation]") {
  FakeRunnerOptions o;
  EngineOptions e;
  e.max_context = 100;
  auto engine = make_engine(o, e);
  auto code_of = [&](GenerationRequest r) -> std::optional<ErrorCode> {
    try {
      Collector c;
      engine->submit(r, c.callback(0));
      REQUIRE(c.wait(1));
      return std::nullopt;
    } catch (const RequestError& err) {
      CHECK(std::string(err.what()).size() > 5);
      return err.code;
    }
  };
  GenerationRequest ok;
  ok.prompt_tokens = {1, 2, 3};
  ok.params.max_tokens = 4;
  CHECK_FALSE(code_of(ok).has_value());
  auto bad = [&](auto mutate) {
    GenerationRequest r = ok;
    mutate(r);
    return code_of(r);
  };
  using E = ErrorCode;
  CHECK(bad([](auto& r) { r.prompt_tokens.clear(); }) == E::kInvalidArgument);
  CHECK(bad([](auto& r) { r.prompt_tokens[1] = 280; }) == E::kInvalidArgument);  // padding id
  CHECK(bad([](auto& r) { r.prompt_tokens[1] = -1; }) == E::kInvalidArgument);
  CHECK(bad([](auto& r) { r.params.max_tokens = 98; }) == E::kOutOfRange);
  CHECK_FALSE(bad([](auto& r) { r.params.max_tokens = 97; }).has_value());
  CHECK(bad([](auto& r) { r.params.max_tokens = 0; }) == E::kInvalidArgument);
  CHECK(bad([](auto& r) { r.params.temperature = -0.5f; }) == E::kInvalidArgument);
  CHECK(bad([](auto& r) { r.params.top_p = 0.0f; }) == E::kInvalidArgument);
  CHECK(bad([](auto& r) { r.params.top_p = 1.5f; }) == E::kInvalidArgument);
  CHECK(bad([](auto& r) { r.params.top_k = -2; }) == E::kInvalidArgument);
  CHECK(bad([](auto& r) { r.params.min_p = 1.5f; }) == E::kInvalidArgument);
  CHECK(bad([](auto& r) { r.params.repetition_penalty = 0.0f; }) == E::kInvalidArgument);
  CHECK(bad([](auto& r) { r.params.frequency_penalty = 2.5f; }) == E::kInvalidArgument);
  CHECK(bad([](auto& r) { r.params.presence_penalty = -3.0f; }) == E::kInvalidArgument);
  CHECK(bad([](auto& r) { r.params.logprobs = 21; }) == E::kInvalidArgument);
  CHECK(bad([](auto& r) { r.params.stop_token_ids = {300}; }) == E::kInvalidArgument);
  CHECK(bad([](auto& r) { r.params.stop = std::vector<std::string>(17, "x"); }) ==
        E::kInvalidArgument);
  CHECK(bad([](auto& r) { r.params.stop = {"a", ""}; }) == E::kInvalidArgument);
  CHECK_FALSE(bad([](auto& r) { r.params.stop = std::vector<std::string>(16, "x"); }).has_value());
  auto err = engine->validate([&] {
    GenerationRequest r = ok;
    r.params.top_p = 2.0f;
    return r;
  }());
  REQUIRE(err.has_value());
  CHECK(std::string(err->what()).find("top_p") != std::string::npos);
  CHECK_FALSE(code_of(ok).has_value());  // still serving
}

TEST_CASE("cancel mid-decode and while queued frees pages and sends one final chunk",
          "[engine][engine_loop][cancel]") {
  FakeRunnerOptions o;
  o.delay = 2ms;
  EngineOptions e;
  e.max_running_seqs = 1;
  auto engine = make_engine(o, e);
  Collector c;
  GenerationRequest r;
  r.prompt_tokens = {4, 5, 6, 7, 8};
  r.params.max_tokens = 200;
  r.params.ignore_eos = true;
  r.params.temperature = 0.0f;
  const uint64_t running = engine->submit(r, c.callback(0));
  const uint64_t queued = engine->submit(r, c.callback(1));
  while (c.chunks(0) < 5) std::this_thread::sleep_for(1ms);
  engine->cancel(queued);
  engine->cancel(running);
  REQUIRE(c.wait(2));
  for (size_t i : {0, 1}) {
    Result res = c.get(i);
    CHECK(res.reason == FinishReason::kCancelled);
    CHECK(res.finals == 1);
    CHECK(res.tokens.size() < 200);
  }
  CHECK(c.get(1).tokens.empty());
  engine->cancel(running);  // already finished: ignored
  for (int i = 0; i < 100 && engine->stats().pages_used != 0; ++i) std::this_thread::sleep_for(1ms);
  CHECK(engine->stats().pages_used == 0);
  CHECK(engine->stats().running == 0);
}

TEST_CASE("a full queue answers kResourceExhausted", "[engine][engine_loop][validation]") {
  FakeRunnerOptions o;
  o.delay = 20ms;
  EngineOptions e;
  e.max_running_seqs = 1;
  e.max_waiting = 2;
  auto engine = make_engine(o, e);
  Collector c;
  GenerationRequest r;
  r.prompt_tokens = {1, 2};
  r.params.max_tokens = 50;
  r.params.ignore_eos = true;
  int rejected = 0;
  size_t accepted = 0;
  for (int i = 0; i < 8; ++i) {
    try {
      engine->submit(r, c.callback(accepted));
      ++accepted;
    } catch (const RequestError& err) {
      CHECK(err.code == ErrorCode::kResourceExhausted);
      ++rejected;
    }
  }
  CHECK(rejected >= 4);
  engine->shutdown(false);
  REQUIRE(c.wait(accepted, 5s));
}

TEST_CASE("a runner failure fails every in-flight request and marks the engine unhealthy",
          "[engine][engine_loop][failure]") {
  FakeRunnerOptions o;
  o.fail_at_step = 3;
  o.fail_min_seqs = 4;  // fail only once all four are running, however fast the loop is
  auto engine = make_engine(o);
  Collector c;
  GenerationRequest r;
  r.prompt_tokens = {1, 2, 3};
  r.params.max_tokens = 100;
  r.params.ignore_eos = true;
  for (size_t i = 0; i < 4; ++i) engine->submit(r, c.callback(i));
  REQUIRE(c.wait(4));
  for (size_t i = 0; i < 4; ++i) {
    CHECK(c.get(i).reason == FinishReason::kError);
    CHECK(c.get(i).error.find("unavailable") != std::string::npos);
    CHECK(c.get(i).finals == 1);
  }
  CHECK_FALSE(engine->healthy());
  try {
    engine->submit(r, c.callback(9));
    FAIL("submit after a runner failure must throw");
  } catch (const RequestError& err) {
    CHECK(err.code == ErrorCode::kUnavailable);
  }
}

TEST_CASE("shutdown drains or aborts in-flight requests", "[engine][engine_loop][shutdown]") {
  FakeRunnerOptions o;
  o.delay = 1ms;
  GenerationRequest r;
  r.prompt_tokens = {1, 2, 3};
  r.params.max_tokens = 30;
  r.params.ignore_eos = true;
  {
    auto engine = make_engine(o);
    Collector c;
    for (size_t i = 0; i < 3; ++i) engine->submit(r, c.callback(i));
    engine->shutdown(true);
    REQUIRE(c.wait(3, 1s));
    for (size_t i = 0; i < 3; ++i) CHECK(c.get(i).reason == FinishReason::kLength);
    CHECK_THROWS_AS(engine->submit(r, c.callback(5)), RequestError);
  }
  {
    auto engine = make_engine(o);
    Collector c;
    for (size_t i = 0; i < 3; ++i) engine->submit(r, c.callback(i));
    engine->shutdown(false);
    REQUIRE(c.wait(3, 1s));
    for (size_t i = 0; i < 3; ++i) {
      CHECK(c.get(i).finals == 1);
      CHECK(
          (c.get(i).reason == FinishReason::kAborted || c.get(i).reason == FinishReason::kLength));
    }
  }
}

TEST_CASE("logprobs arrive per token with the requested top-n", "[engine][engine_loop]") {
  FakeRunnerOptions o;
  auto engine = make_engine(o);
  std::vector<GenerationChunk> chunks;
  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  GenerationRequest r;
  r.prompt_tokens = {10, 11};
  r.params.max_tokens = 3;
  r.params.logprobs = 4;
  r.params.temperature = 0.0f;
  r.params.ignore_eos = true;
  engine->submit(r, [&](GenerationChunk&& c) {
    std::lock_guard lock(mu);
    done = c.finish_reason != FinishReason::kNone;
    chunks.push_back(std::move(c));
    cv.notify_all();
  });
  std::unique_lock lock(mu);
  REQUIRE(cv.wait_for(lock, 10s, [&] { return done; }));
  REQUIRE(chunks.size() == 3);
  std::vector<int32_t> history = r.prompt_tokens;
  std::vector<float> row(static_cast<size_t>(o.vocab_size));
  for (const auto& c : chunks) {
    REQUIRE(c.logprobs.size() == 1);
    CHECK(c.logprobs[0].top.size() == 4);
    // Greedy: the chosen token is the top-1 alternative.
    CHECK(c.logprobs[0].top[0].token == c.token_ids[0]);
    CHECK(c.logprobs[0].logprob == Approx(c.logprobs[0].top[0].logprob));
    fake_logits(history, o.vocab_size, o.text_vocab_size, row.data());
    double z = 0.0;
    for (int64_t v = 0; v < o.text_vocab_size; ++v) z += std::exp(static_cast<double>(row[v]));
    CHECK(c.logprobs[0].logprob == Approx(row[c.token_ids[0]] - std::log(z)).margin(1e-4));
    history.push_back(c.token_ids[0]);
  }
}
