// Sampling inside the runner: the step message with rank 0's sampling rows and the Tokens reply
// round-trip (and refuse corrupt payloads); SamplingBatchBuilder ships exactly the penalty
// history a row needs (checked against an independent count); and every runner kind (in-process
// TP 1 and 2, worker processes at TP 2) returns, token for token and logprob for logprob, what
// the CPU sampler picks from that runner's own raw logits of the same step.
#include <catch2/catch.hpp>

#include <algorithm>
#include <filesystem>
#include <map>
#include <random>

#include "engine/control_channel.h"
#include "engine/local_runner.h"
#include "engine/process_runner.h"
#include "engine/runner_factory.h"
#include "engine/sampling_batch_builder.h"
#include "step_builder.h"

using namespace mlra;
namespace fs = std::filesystem;

namespace {

constexpr int32_t kPageSize = 8;
constexpr int32_t kPagesPerSeq = 8;

SamplingParams random_params(std::mt19937& rng) {
  SamplingParams p;
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  p.temperature = rng() % 4 == 0 ? 0.0f : 0.3f + 1.5f * u(rng);
  p.top_k = rng() % 3 == 0 ? int32_t(rng() % 60) : 0;
  p.top_p = rng() % 2 == 0 ? 0.5f + 0.5f * u(rng) : 1.0f;
  p.min_p = rng() % 3 == 0 ? 0.2f * u(rng) : 0.0f;
  p.repetition_penalty = rng() % 2 == 0 ? 1.0f + u(rng) : 1.0f;
  p.frequency_penalty = rng() % 2 == 0 ? 2.0f * u(rng) - 1.0f : 0.0f;
  p.presence_penalty = rng() % 2 == 0 ? 2.0f * u(rng) - 1.0f : 0.0f;
  p.logprobs = rng() % 2 == 0 ? int32_t(rng() % 6) : 0;
  return p;
}

std::vector<int32_t> random_tokens(std::mt19937& rng, int n, int vocab) {
  std::uniform_int_distribution<int32_t> d(0, vocab - 1);
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = d(rng);
  return t;
}

SamplingBatch random_batch(std::mt19937& rng, int rows, int vocab) {
  SamplingBatchBuilder b(vocab);
  for (int r = 0; r < rows; ++r) {
    const auto history = random_tokens(rng, 5 + int(rng() % 40), vocab);
    b.add(history, int32_t(rng() % 5) + 1, random_params(rng), rng());
  }
  return b.batch();
}

void check_same(const SampledTokens& got, const SampledTokens& want) {
  CHECK(got.tokens == want.tokens);
  CHECK(got.logprobs == want.logprobs);
  CHECK(got.top_indptr == want.top_indptr);
  CHECK(got.top_tokens == want.top_tokens);
  CHECK(got.top_logprobs == want.top_logprobs);
}

}  // namespace

TEST_CASE("control channel: step messages with sampling rows and Tokens replies round-trip",
          "[tp][channel][sampling]") {
  std::mt19937 rng(11);
  const StepBatch step =
      testing::build_step({{0, 0, random_tokens(rng, 9, 300), true}}, kPageSize, kPagesPerSeq);
  const SamplingBatch sampling = random_batch(rng, 9, 300);
  const StepMessage m =
      decode_step_message(encode_step_message(step, StepReply::kTokens, &sampling));
  CHECK(m.reply == StepReply::kTokens);
  CHECK(m.step.tokens == step.tokens);
  CHECK(m.step.logit_rows == step.logit_rows);
  REQUIRE(m.sampling.size() == sampling.size());
  for (size_t r = 0; r < sampling.rows.size(); ++r) {
    CHECK(m.sampling.rows[r].seed == sampling.rows[r].seed);
    CHECK(m.sampling.rows[r].top_p == sampling.rows[r].top_p);
  }
  CHECK(m.sampling.penalty_indptr == sampling.penalty_indptr);
  CHECK(m.sampling.penalty_tokens == sampling.penalty_tokens);
  CHECK(m.sampling.penalty_counts == sampling.penalty_counts);
  // Ranks > 0 get no sampling rows at all.
  const auto plain = encode_step_message(step, StepReply::kAck, nullptr);
  CHECK(plain.size() == encode(step).size() + 1);
  CHECK(decode_step_message(plain).sampling.size() == 0);

  auto corrupt = encode_step_message(step, StepReply::kTokens, &sampling);
  corrupt.resize(corrupt.size() - 3);
  CHECK_THROWS_AS(decode_step_message(corrupt), ProtocolError);
  SamplingBatch short_rows = sampling;  // fewer sampling rows than logit rows
  short_rows.rows.pop_back();
  short_rows.penalty_indptr.pop_back();
  short_rows.penalty_tokens.resize(size_t(short_rows.penalty_indptr.back()));
  short_rows.penalty_counts.resize(size_t(short_rows.penalty_indptr.back()));
  CHECK_THROWS_AS(decode_step_message(encode_step_message(step, StepReply::kTokens, &short_rows)),
                  ProtocolError);

  SampledTokens t;
  t.tokens = {3, 1, 4};
  t.logprobs = {-0.5f, 0.0f, -1.5f};
  t.top_indptr = {0, 2, 2, 3};
  t.top_tokens = {3, 7, 4};
  t.top_logprobs = {-0.5f, -0.9f, -1.5f};
  check_same(decode_sampled_tokens(encode(t)), t);
  auto bad = t;
  bad.top_indptr = {0, 2, 1, 3};
  CHECK_THROWS_AS(decode_sampled_tokens(encode(bad)), ProtocolError);
}

TEST_CASE("sampling batch ships only the penalty history each row needs", "[engine][sampling]") {
  std::mt19937 rng(12);
  const int vocab = 50;
  for (int trial = 0; trial < 200; ++trial) {
    auto tokens = random_tokens(rng, 1 + int(rng() % 60), vocab);
    if (rng() % 4 == 0) tokens.push_back(vocab + 3);  // out of range: ignored like the Sampler does
    const int32_t num_prompt = int32_t(rng() % tokens.size()) + 1;
    const SamplingParams p = random_params(rng);
    SamplingBatchBuilder b(vocab);
    b.add(tokens, num_prompt, p, 99);
    const SamplingBatch& s = b.batch();
    REQUIRE(s.size() == 1);
    CHECK(s.rows[0].index == tokens.size() - size_t(num_prompt));
    CHECK(s.rows[0].logprobs == (p.logprobs > 0 ? p.logprobs : -1));
    std::map<int32_t, int32_t> want;  // token -> generated count
    const bool rep = p.repetition_penalty != 1.0f,
               freq = p.frequency_penalty != 0.0f || p.presence_penalty != 0.0f;
    for (size_t i = 0; i < tokens.size(); ++i) {
      if (tokens[i] >= vocab) continue;
      const bool generated = i >= size_t(num_prompt);
      if (rep || (freq && generated)) want[tokens[i]] += generated ? 1 : 0;
    }
    if (!rep && !freq) want.clear();
    std::map<int32_t, int32_t> got;
    for (size_t e = 0; e < s.penalty_tokens.size(); ++e) {
      CHECK(got.count(s.penalty_tokens[e]) == 0);  // distinct
      got[s.penalty_tokens[e]] = s.penalty_counts[e];
    }
    CHECK(got == want);
  }
}

TEST_CASE("runners sample what the cpu sampler picks from their own logits", "[tp][sampling]") {
  const fs::path dir = fs::path(MLRA_TEST_DATA) / "tiny" / "mlra4";
  REQUIRE(fs::exists(dir / "config.json"));
  for (int mode = 0; mode < 3; ++mode) {
    RunnerConfig o;
    o.model_dir = dir;
    o.variant = "mlra4";
    o.tp = mode == 0 ? 1 : 2;
    o.page_size = kPageSize;
    o.num_pages = 3 * kPagesPerSeq;
    WorkerProcessOptions workers;
    workers.worker_binary = fs::path(MLRA_BINARY_DIR) / "server" / "mlra-serve";
    workers.load_timeout_s = 60;
    workers.step_timeout_s = 30;
    INFO("tp " << o.tp << (mode == 1 ? " in-process" : ""));
    auto runner = mode == 1 ? make_local_runner(o) : make_runner(o, workers);
    const int vocab = int(runner->config().vocab_size),
              text = int(runner->config().text_vocab_size);
    std::mt19937 rng(13 + mode);
    auto sampler = make_cpu_token_sampler(text);
    // Prefill two sequences (all rows of the first), then decodes; every step runs twice with
    // the same cache writes: raw logits first, then sampled.
    std::vector<StepBatch> steps = {testing::build_step(
        {{0, 0, random_tokens(rng, 11, text), true}, {1, 0, random_tokens(rng, 6, text), false}},
        kPageSize, kPagesPerSeq)};
    for (int k = 0; k < 3; ++k)
      steps.push_back(testing::build_step(
          {{0, 11 + k, random_tokens(rng, 1, text)}, {1, 6 + k, random_tokens(rng, 1, text)}},
          kPageSize, kPagesPerSeq));
    for (const StepBatch& step : steps) {
      const auto rows = int64_t(step.logit_rows.size());
      const SamplingBatch batch = random_batch(rng, int(rows), text);
      std::vector<float> logits;
      runner->execute(step, logits);
      REQUIRE(logits.size() == size_t(rows * vocab));
      SampledTokens want, got;
      sampler->sample(MatView{logits.data(), DType::kF32, rows, vocab, vocab}, batch, want);
      runner->execute(step, batch, got);
      check_same(got, want);
    }
    SampledTokens out;  // one sampling row per logit row, or a clear error
    CHECK_THROWS_AS(runner->execute(steps.back(), SamplingBatch{}, out), RunnerError);
  }
}
