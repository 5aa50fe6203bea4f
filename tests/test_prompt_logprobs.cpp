// Prompt logprobs in the engine ([engine][prompt_logprobs]) on the real CPU model (tiny
// MLRA-4): scoring a sequence reproduces, token for token, the logprobs the sampler reported
// while generating it; chunked prefill (small step budgets) and requests beside it change
// nothing; max_tokens 0 answers the scores alone; such a request reuses no cached prefix.
#include <future>
#include <mutex>

#include <catch2/catch.hpp>

#include "grpc_test_server.h"

using namespace mlra;
using namespace mlra::testing;
using namespace std::chrono_literals;

namespace {

// Runs one request to its final chunk; returns the chunks merged.
GenerationChunk run(Engine& engine, GenerationRequest request) {
  auto done = std::make_shared<std::promise<GenerationChunk>>();
  auto merged = std::make_shared<GenerationChunk>();
  engine.submit(std::move(request), [done, merged](GenerationChunk&& c) {
    merged->token_ids.insert(merged->token_ids.end(), c.token_ids.begin(), c.token_ids.end());
    merged->logprobs.insert(merged->logprobs.end(), c.logprobs.begin(), c.logprobs.end());
    merged->prompt_logprobs.insert(merged->prompt_logprobs.end(), c.prompt_logprobs.begin(),
                                   c.prompt_logprobs.end());
    if (c.finish_reason != FinishReason::kNone) {
      merged->finish_reason = c.finish_reason;
      merged->usage = c.usage;
      done->set_value(*merged);
    }
  });
  auto f = done->get_future();
  REQUIRE(f.wait_for(60s) == std::future_status::ready);
  return f.get();
}

GenerationRequest greedy(std::vector<int32_t> prompt, int32_t max_tokens) {
  GenerationRequest r;
  r.prompt_tokens = std::move(prompt);
  r.params.max_tokens = max_tokens;
  r.params.temperature = 0;
  r.params.ignore_eos = true;
  return r;
}

}  // namespace

TEST_CASE("scoring a generated sequence reproduces the sampler's logprobs (tiny MLRA-4)",
          "[engine][prompt_logprobs][tiny]") {
  const int32_t step_tokens = GENERATE(512, 7);  // 7: the scored prompt spans several steps
  EngineOptions o;
  o.max_step_tokens = step_tokens;
  Engine engine(tiny_mlra4_runner(), fake_decoder_factory(), o);
  const std::vector<int32_t> prompt = {17, 3, 250, 41, 9, 122, 7, 88, 301, 5, 64};
  GenerationRequest gen = greedy(prompt, 12);
  gen.params.logprobs = 3;
  const GenerationChunk generated = run(engine, gen);
  REQUIRE(generated.token_ids.size() == 12);
  REQUIRE(generated.logprobs.size() == 12);

  std::vector<int32_t> sequence = prompt;
  sequence.insert(sequence.end(), generated.token_ids.begin(), generated.token_ids.end());
  GenerationRequest score = greedy(sequence, 0);
  score.params.prompt_logprobs = 3;
  // A plain request beside it: its tokens must not change.
  auto beside = std::async(std::launch::async, [&] { return run(engine, greedy(prompt, 12)); });
  const GenerationChunk scored = run(engine, score);
  CHECK(beside.get().token_ids == generated.token_ids);

  CHECK(scored.finish_reason == FinishReason::kLength);
  CHECK(scored.token_ids.empty());
  CHECK(scored.usage.completion_tokens == 0);
  CHECK(scored.usage.cached_prompt_tokens == 0);  // no prefix reuse for a scoring request
  REQUIRE(scored.prompt_logprobs.size() == sequence.size() - 1);
  for (size_t i = 0; i + 1 < sequence.size(); ++i) {
    CHECK(scored.prompt_logprobs[i].token == sequence[i + 1]);
    CHECK(scored.prompt_logprobs[i].logprob <= 0.0f);
    CHECK(scored.prompt_logprobs[i].top.size() == 3);
  }
  for (size_t k = 0; k < generated.token_ids.size(); ++k) {
    const TokenLogprobs& s = scored.prompt_logprobs[prompt.size() - 1 + k];
    const TokenLogprobs& g = generated.logprobs[k];
    INFO("generated token " << k);
    CHECK(s.logprob == Approx(g.logprob).margin(1e-4));
    REQUIRE(s.top.size() == g.top.size());
    for (size_t j = 0; j < s.top.size(); ++j) {
      CHECK(s.top[j].token == g.top[j].token);
      CHECK(s.top[j].logprob == Approx(g.top[j].logprob).margin(1e-4));
    }
  }
  // With generation after the scored prompt: the same scores, then tokens as usual.
  GenerationRequest both = greedy(prompt, 12);
  both.params.prompt_logprobs = 0;
  const GenerationChunk with_tokens = run(engine, both);
  CHECK(with_tokens.token_ids == generated.token_ids);
  REQUIRE(with_tokens.prompt_logprobs.size() == prompt.size() - 1);
  for (size_t i = 0; i + 1 < prompt.size(); ++i) {
    CHECK(with_tokens.prompt_logprobs[i].logprob ==
          Approx(scored.prompt_logprobs[i].logprob).margin(1e-5));
    CHECK(with_tokens.prompt_logprobs[i].top.empty());
  }
}

TEST_CASE("prompt logprobs validation", "[engine][prompt_logprobs]") {
  Engine engine(fake_runner(), fake_decoder_factory(), {});
  GenerationRequest r = greedy({1, 2, 3}, 0);
  CHECK(engine.validate(r).has_value());  // max_tokens 0 without scoring
  r.params.prompt_logprobs = 0;
  CHECK_FALSE(engine.validate(r).has_value());
  r.params.prompt_logprobs = 21;
  REQUIRE(engine.validate(r).has_value());
  CHECK_THAT(engine.validate(r)->what(), Catch::Contains("prompt_logprobs"));
  r.params.prompt_logprobs = 2;
  r.params.max_tokens = -1;
  CHECK(engine.validate(r).has_value());
}
