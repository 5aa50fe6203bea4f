// Unit tests of the server's edge pieces ([server]): proto -> SamplingParams keeps unset fields
// at the engine defaults and copies set ones (zeros included), chunks -> responses, and the
// request registry's cancel-before-attach hand-off.
#include <random>

#include <catch2/catch.hpp>

#include "server/proto_convert.h"
#include "server/request_registry.h"

using namespace mlra;

TEST_CASE("to_sampling_params: unset fields keep the engine defaults", "[server]") {
  const SamplingParams defaults;
  const SamplingParams p = to_sampling_params(v1::SamplingParams{});
  CHECK(p.max_tokens == defaults.max_tokens);
  CHECK(p.temperature == defaults.temperature);
  CHECK(p.top_p == defaults.top_p);
  CHECK(p.repetition_penalty == defaults.repetition_penalty);
  CHECK(!p.seed.has_value());
  CHECK(p.stop.empty());
}

TEST_CASE("to_sampling_params: set fields are copied, explicit zeros included", "[server]") {
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(0.05f, 0.95f);
  v1::SamplingParams proto;
  const float top_p = u(rng), min_p = u(rng), rep = 1.0f + u(rng), freq = u(rng), pres = -u(rng);
  proto.set_max_tokens(77);
  proto.set_temperature(0.0f);  // explicit greedy, not "unset"
  proto.set_top_k(40);
  proto.set_top_p(top_p);
  proto.set_min_p(min_p);
  proto.set_repetition_penalty(rep);
  proto.set_frequency_penalty(freq);
  proto.set_presence_penalty(pres);
  proto.set_seed(0);  // seed 0 is a seed
  proto.add_stop("\n\n");
  proto.add_stop("END");
  proto.add_stop_token_ids(13);
  proto.set_ignore_eos(true);
  proto.set_logprobs(4);
  const SamplingParams p = to_sampling_params(proto);
  CHECK(p.max_tokens == 77);
  CHECK(p.temperature == 0.0f);
  CHECK(p.top_k == 40);
  CHECK(p.top_p == top_p);
  CHECK(p.min_p == min_p);
  CHECK(p.repetition_penalty == rep);
  CHECK(p.frequency_penalty == freq);
  CHECK(p.presence_penalty == pres);
  REQUIRE(p.seed.has_value());
  CHECK(*p.seed == 0u);
  CHECK(p.stop == std::vector<std::string>{"\n\n", "END"});
  CHECK(p.stop_token_ids == std::vector<int32_t>{13});
  CHECK(p.ignore_eos);
  CHECK(p.logprobs == 4);
}

TEST_CASE("append_chunk: tokens, text and logprobs accumulate - finish fields only at the end",
          "[server]") {
  GenerationChunk first;
  first.token_ids = {5, 9};
  first.text = "ab";
  first.logprobs = {{5, -0.5f, {{5, -0.5f}, {2, -1.5f}}}, {9, -0.25f, {{9, -0.25f}, {1, -2.0f}}}};
  GenerationChunk last;
  last.token_ids = {11};
  last.text = "c";
  last.finish_reason = FinishReason::kStop;
  last.stop_string = "cd";
  last.usage = {3, 3, 1};

  v1::CompleteResponse r;
  append_chunk(first, &r);
  CHECK(r.finish_reason() == v1::FINISH_REASON_UNSPECIFIED);
  CHECK(!r.has_usage());
  append_chunk(last, &r);
  CHECK(std::vector<int32_t>(r.token_ids().begin(), r.token_ids().end()) ==
        std::vector<int32_t>{5, 9, 11});
  CHECK(r.text() == "abc");
  REQUIRE(r.logprobs_size() == 2);
  CHECK(r.logprobs(1).token_id() == 9);
  CHECK(r.logprobs(1).top(1).token_id() == 1);
  CHECK(r.logprobs(1).top(1).logprob() == -2.0f);
  CHECK(r.finish_reason() == v1::FINISH_REASON_STOP);
  CHECK(r.stop_string() == "cd");
  CHECK(r.usage().prompt_tokens() == 3);
  CHECK(r.usage().cached_prompt_tokens() == 1);
}

TEST_CASE("finish reasons round-trip through the wire enum", "[server]") {
  for (FinishReason f :
       {FinishReason::kNone, FinishReason::kLength, FinishReason::kStop, FinishReason::kEos,
        FinishReason::kCancelled, FinishReason::kAborted, FinishReason::kError}) {
    CHECK(from_proto(to_proto(f)) == f);
  }
}

TEST_CASE("RequestRegistry: duplicates, cancel before and after attach, release", "[server]") {
  RequestRegistry registry;
  const std::string a = registry.next_id(), b = registry.next_id();
  CHECK(a != b);
  REQUIRE(registry.reserve("x"));
  CHECK_FALSE(registry.reserve("x"));

  bool found = false;
  CHECK(!registry.request_cancel("x", found).has_value());  // no handle yet: remembered
  CHECK(found);
  CHECK(registry.attach("x", 42));  // the caller must cancel handle 42 now

  REQUIRE(registry.reserve("y"));
  CHECK_FALSE(registry.attach("y", 7));
  auto handle = registry.request_cancel("y", found);
  REQUIRE(handle.has_value());
  CHECK(*handle == 7u);

  registry.release("x");
  CHECK(!registry.request_cancel("x", found).has_value());
  CHECK_FALSE(found);
  CHECK(registry.reserve("x"));  // free again
  CHECK(registry.size() == 2u);
}
