// The CPU reference engine against itself across execution shapes, for every variant of the
// tiny checkpoints: token-by-token decode and chunked prefill equal one full prefill; a batch
// of mixed-length sequences equals each sequence alone; small pages (boundaries inside the
// prompt) equal one large page; TP = 2, 4, 8 (threads) equal TP = 1.
#include <catch2/catch.hpp>

#include <filesystem>
#include <random>

#include "engine/local_runner.h"
#include "models/shard_plan.h"
#include "models/variant.h"
#include "step_builder.h"

using namespace mlra;
using mlra::testing::build_step;
using mlra::testing::rel_l2;
using mlra::testing::SeqChunk;

namespace {

const std::vector<std::string>& tiny_variants() {
  static const std::vector<std::string> v = {
      "mha",         "gqa",          "mqa",           "gta",           "mfa",
      "tpa",         "mla",          "gla2",          "gla4",          "mlra2",
      "mlra4",       "gqa_gated",    "mla_gated",     "gla2_gated",    "mlra2_gated",
      "mlra4_gated", "mla_no_scale", "gla2_no_scale", "mlra2_no_scale"};
  return v;
}

std::filesystem::path tiny_dir(const std::string& v) {
  return std::filesystem::path(MLRA_TEST_DATA) / "tiny" / v;
}

std::unique_ptr<ModelRunner> runner(const std::string& v, int tp = 1, int32_t page_size = 8) {
  RunnerConfig o;
  o.model_dir = tiny_dir(v);
  o.variant = v;
  o.tp = tp;
  o.page_size = page_size;
  o.num_pages = 8 * (256 / page_size);
  return make_local_runner(o);
}

std::vector<int32_t> random_tokens(int n, uint32_t seed, int vocab) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t(rng() % uint32_t(vocab));
  return t;
}

constexpr int32_t kPagesPerSeq = 32;  // with page size 8: 256 positions per sequence

std::vector<float> prefill(ModelRunner& r, const std::vector<int32_t>& toks, int32_t page_size) {
  std::vector<float> logits;
  r.execute(build_step({{0, 0, toks, true}}, page_size, 256 / page_size), logits);
  return logits;
}

}  // namespace

TEST_CASE("decode token by token and chunked prefill equal the full prefill", "[model]") {
  for (const auto& v : tiny_variants()) {
    INFO(v);
    auto r = runner(v);
    const int vocab = int(r->config().vocab_size);
    const auto toks = random_tokens(23, 7, vocab);
    const auto full = prefill(*r, toks, 8);
    REQUIRE(full.size() == size_t(23 * vocab));

    auto r2 = runner(v);
    std::vector<float> stepwise, logits;
    for (int32_t t = 0; t < 23; ++t) {
      r2->execute(build_step({{0, t, {toks[t]}, false}}, 8, kPagesPerSeq), logits);
      stepwise.insert(stepwise.end(), logits.begin(), logits.end());
    }
    CHECK(rel_l2(stepwise, full) < 1e-5);

    auto r3 = runner(v);
    std::vector<float> chunked;
    int32_t pos = 0;
    for (int len : {5, 7, 11}) {
      std::vector<int32_t> chunk(toks.begin() + pos, toks.begin() + pos + len);
      r3->execute(build_step({{0, pos, chunk, true}}, 8, kPagesPerSeq), logits);
      chunked.insert(chunked.end(), logits.begin(), logits.end());
      pos += len;
    }
    CHECK(rel_l2(chunked, full) < 1e-5);
  }
}

TEST_CASE("a batch of mixed-length sequences equals each sequence alone", "[model]") {
  for (const auto& v : tiny_variants()) {
    INFO(v);
    auto r = runner(v);
    const int vocab = int(r->config().vocab_size);
    const std::vector<std::vector<int32_t>> prompts = {
        random_tokens(1, 1, vocab), random_tokens(9, 2, vocab), random_tokens(17, 3, vocab)};
    std::vector<float> batched;
    r->execute(
        build_step({{0, 0, prompts[0], true}, {1, 0, prompts[1], true}, {2, 0, prompts[2], true}},
                   8, kPagesPerSeq),
        batched);
    std::vector<float> alone;
    for (const auto& p : prompts) {
      auto single = prefill(*runner(v), p, 8);
      alone.insert(alone.end(), single.begin(), single.end());
    }
    CHECK(rel_l2(batched, alone) < 1e-5);
    // Then one decode step of all three together equals three single decodes.
    std::vector<float> step_all, step_one;
    r->execute(
        build_step({{0, 1, {5}, false}, {1, 9, {6}, false}, {2, 17, {7}, false}}, 8, kPagesPerSeq),
        step_all);
    std::vector<float> expect;
    int32_t tok = 5;
    for (const auto& p : prompts) {
      auto solo = runner(v);
      std::vector<float> ignored;
      solo->execute(build_step({{0, 0, p, false}}, 8, kPagesPerSeq), ignored);
      solo->execute(build_step({{0, int32_t(p.size()), {tok++}, false}}, 8, kPagesPerSeq),
                    step_one);
      expect.insert(expect.end(), step_one.begin(), step_one.end());
    }
    CHECK(rel_l2(step_all, expect) < 1e-5);
  }
}

TEST_CASE("page boundaries inside the prompt do not change the logits", "[model]") {
  for (const auto& v : tiny_variants()) {
    INFO(v);
    const auto toks = random_tokens(21, 11, 512);
    const auto small_pages = prefill(*runner(v, 1, 4), toks, 4);
    const auto one_page = prefill(*runner(v, 1, 32), toks, 32);
    CHECK(rel_l2(small_pages, one_page) < 1e-5);
  }
}

TEST_CASE("tensor parallel ranks sum to the TP=1 logits", "[model][tp]") {
  for (const auto& v : tiny_variants()) {
    auto base = runner(v);
    const auto toks = random_tokens(13, 5, int(base->config().vocab_size));
    const auto expect = prefill(*base, toks, 8);
    std::vector<float> decode_expect;
    base->execute(build_step({{0, 13, {3}, false}}, 8, kPagesPerSeq), decode_expect);
    for (int tp : {2, 4, 8}) {
      if (!unsupported_tp_reason(base->config(), tp).empty()) continue;
      INFO(v << " tp=" << tp);
      auto r = runner(v, tp);
      CHECK(rel_l2(prefill(*r, toks, 8), expect) < 1e-5);
      std::vector<float> decode;
      r->execute(build_step({{0, 13, {3}, false}}, 8, kPagesPerSeq), decode);
      CHECK(rel_l2(decode, decode_expect) < 1e-5);
    }
  }
}
