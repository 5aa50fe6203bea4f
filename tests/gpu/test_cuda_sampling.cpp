// The CUDA sampling op against the CPU reference: on identical f32 logits (random, never zeros)
// the GPU must pick the CPU's token for every row over a grid of parameters (mixed in one batch,
// so the segmented sort sees partial segments), edge cases included, with logprobs within float
// rounding; and a chi-square test of many seeded draws of one row against the distribution an
// independent reference computes. End to end: the CUDA LocalRunner (eager and decode graphs)
// samples on the device exactly what the CPU sampler picks from that runner's own raw logits.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <numeric>
#include <set>

#include "../step_builder.h"
#include "engine/local_runner.h"
#include "engine/sampling_batch.h"
#include "gpu_test_util.h"
#include "kernels/sampling.h"

using namespace mlra;
using namespace mlra::gputest;

namespace {

struct Case {
  float temperature;
  int32_t top_k;
  float top_p;
  float min_p;
  float repetition, frequency, presence;
  int32_t logprobs;
};

// Rows of `cols` scores; columns >= vocab are padding scored highest, so choosing one fails.
std::vector<float> random_logits(std::mt19937& rng, int64_t rows, int64_t cols, int64_t vocab,
                                 float scale) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> l(size_t(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) l[size_t(r * cols + c)] = c < vocab ? d(rng) : 1e4f;
  return l;
}

// Distinct history tokens with generated counts (0 = prompt only).
void add_history(SamplingBatch& b, std::mt19937& rng, int64_t vocab, int n) {
  std::set<int32_t> seen;
  std::uniform_int_distribution<int32_t> tok(0, int32_t(vocab - 1)), cnt(0, 4);
  while (int(seen.size()) < n) {
    const int32_t t = tok(rng);
    if (!seen.insert(t).second) continue;
    b.penalty_tokens.push_back(t);
    b.penalty_counts.push_back(cnt(rng));
  }
  b.penalty_indptr.push_back(int32_t(b.penalty_tokens.size()));
}

SampledTokens run_cpu(const std::vector<float>& l, int64_t rows, int64_t cols, int64_t vocab,
                      const SamplingBatch& b) {
  SampledTokens out;
  make_cpu_token_sampler(vocab)->sample(
      MatView{const_cast<float*>(l.data()), DType::kF32, rows, cols, cols}, b, out);
  return out;
}

SampledTokens run_gpu(const std::vector<float>& l, int64_t rows, int64_t cols, int64_t vocab,
                      const SamplingBatch& b) {
  Tensor t = make(gpu(), {rows, cols}, DType::kF32, l);
  SampledTokens out;
  make_cuda_token_sampler(gpu(), vocab)->sample(as_mat(t, cols), b, out);
  return out;
}

void compare(const SampledTokens& cpu, const SampledTokens& g, const SamplingBatch& b,
             int64_t vocab) {
  REQUIRE(g.size() == cpu.size());
  g.check(b.size());
  for (int64_t r = 0; r < b.size(); ++r) {
    const SamplingRow& p = b.rows[size_t(r)];
    INFO("row " << r << " T=" << p.temperature << " k=" << p.top_k << " p=" << p.top_p << " min_p="
                << p.min_p << " rep=" << p.repetition_penalty << " freq=" << p.frequency_penalty
                << " pres=" << p.presence_penalty << " seed=" << p.seed << " index=" << p.index);
    CHECK(g.tokens[size_t(r)] == cpu.tokens[size_t(r)]);
    CHECK(g.tokens[size_t(r)] < vocab);
    if (p.logprobs < 0) continue;
    CHECK(g.logprobs[size_t(r)] == Approx(cpu.logprobs[size_t(r)]).margin(1e-4));
    REQUIRE(g.top_indptr[size_t(r) + 1] - g.top_indptr[size_t(r)] ==
            cpu.top_indptr[size_t(r) + 1] - cpu.top_indptr[size_t(r)]);
    for (int32_t i = cpu.top_indptr[size_t(r)]; i < cpu.top_indptr[size_t(r) + 1]; ++i) {
      CHECK(g.top_tokens[size_t(i)] == cpu.top_tokens[size_t(i)]);
      CHECK(g.top_logprobs[size_t(i)] == Approx(cpu.top_logprobs[size_t(i)]).margin(1e-4));
    }
  }
}

}  // namespace

TEST_CASE("cuda sampling picks the cpu token on identical logits over a parameter grid",
          "[gpu][sampling]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  const std::vector<Case> cases = {
      {1.0f, 0, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f, -1},      // plain draw, token-id order CDF
      {0.0f, 0, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f, 5},       // greedy with logprobs
      {0.7f, 50, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f, -1},     // top_k
      {0.9f, 0, 0.9f, 0.0f, 1.0f, 0.0f, 0.0f, 3},       // top_p
      {1.2f, 0, 1.0f, 0.05f, 1.0f, 0.0f, 0.0f, -1},     // min_p
      {0.8f, 40, 0.95f, 0.02f, 1.3f, 0.5f, 0.4f, 20},   // everything
      {1.0f, 0, 1.0f, 0.0f, 1.5f, 0.0f, 0.0f, -1},      // repetition only, no truncation
      {0.0f, 0, 1.0f, 0.0f, 1.2f, 1.0f, -0.5f, -1},     // greedy with penalties
      {1.5f, 1000, 0.99f, 0.0f, 1.0f, -1.0f, 2.0f, 1},  // negative frequency, big top_k
      {2.0f, 0, 0.5f, 0.0f, 1.0f, 0.0f, 0.0f, -1},      // hot nucleus
  };
  for (int64_t vocab : {50304, 777}) {
    for (float scale : {1.0f, 4.0f}) {
      const int64_t cols = vocab + (vocab == 777 ? 23 : 128);
      const int reps = 6;  // each case several times with different seeds, all in one batch
      const int64_t rows = int64_t(cases.size()) * reps;
      const auto logits = random_logits(rng, rows, cols, vocab, scale);
      SamplingBatch b;
      for (int rep = 0; rep < reps; ++rep)
        for (const Case& c : cases) {
          SamplingRow row;
          row.temperature = c.temperature;
          row.top_k = c.top_k;
          row.top_p = c.top_p;
          row.min_p = c.min_p;
          row.repetition_penalty = c.repetition;
          row.frequency_penalty = c.frequency;
          row.presence_penalty = c.presence;
          row.logprobs = c.logprobs;
          row.seed = rng();
          row.index = rng() % 500;
          b.rows.push_back(row);
          const bool penalties = c.repetition != 1.0f || c.frequency != 0.0f || c.presence != 0.0f;
          add_history(b, rng, vocab, penalties ? int(rng() % 300) + 1 : 0);
        }
      INFO("vocab " << vocab << " scale " << scale);
      compare(run_cpu(logits, rows, cols, vocab, b), run_gpu(logits, rows, cols, vocab, b), b,
              vocab);
    }
  }
}

TEST_CASE(
    "cuda sampling edge cases equal the cpu: top_k=1, tiny top_p, high min_p, huge penalties, tiny "
    "temperature",
    "[gpu][sampling]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  const int64_t vocab = 50304, cols = vocab;
  const std::vector<Case> cases = {
      {1.0f, 1, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f, -1},
      {1.0f, 0, 1e-6f, 0.0f, 1.0f, 0.0f, 0.0f, -1},
      {1.0f, 0, 1.0f, 1.0f, 1.0f, 0.0f, 0.0f, -1},
      {1.0f, 0, 1.0f, 0.9f, 1.0f, 0.0f, 0.0f, -1},
      {1.0f, 0, 1.0f, 0.0f, 50.0f, 0.0f, 0.0f, -1},
      {1.0f, 0, 1.0f, 0.0f, 1.0f, 2.0f, 2.0f, -1},
      {1e-3f, 0, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f, 2},
      {1e-6f, 0, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f, -1},
      {1.0f, 50303, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f, -1},
      {1.0f, 50304, 0.999f, 0.0f, 1.0f, 0.0f, 0.0f, -1},
      {0.5f, 2, 1e-6f, 1.0f, 20.0f, 2.0f, -2.0f, 4},
  };
  const int reps = 8;
  const int64_t rows = int64_t(cases.size()) * reps;
  const auto logits = random_logits(rng, rows, cols, vocab, 3.0f);
  SamplingBatch b;
  for (int rep = 0; rep < reps; ++rep)
    for (const Case& c : cases) {
      SamplingRow row{c.temperature, c.top_k,    c.top_p,    c.min_p, c.repetition,
                      c.frequency,   c.presence, c.logprobs, rng(),   rng() % 100};
      b.rows.push_back(row);
      const bool penalties = c.repetition != 1.0f || c.frequency != 0.0f || c.presence != 0.0f;
      add_history(b, rng, vocab, penalties ? 2000 : 0);
    }
  compare(run_cpu(logits, rows, cols, vocab, b), run_gpu(logits, rows, cols, vocab, b), b, vocab);
}

TEST_CASE("cuda sampling: zero rows and bad shapes", "[gpu][sampling]") {
  auto s = make_cuda_token_sampler(gpu(), 100);
  SampledTokens out;
  Tensor t = make(gpu(), {2, 100}, DType::kF32, std::vector<float>(200, 0.5f));
  SamplingBatch empty;
  s->sample(MatView{t.data, DType::kF32, 0, 100, 100}, empty, out);
  CHECK(out.size() == 0);
  SamplingBatch one;
  one.rows.push_back(SamplingRow{});
  one.penalty_indptr.push_back(0);
  CHECK_THROWS_AS(s->sample(as_mat(t, 100), one, out),
                  std::invalid_argument);  // 2 logits rows, 1 param row
}

TEST_CASE("cuda sampling draws follow the reference distribution (chi-square over seeds)",
          "[gpu][sampling]") {
  const uint32_t seed = fresh_seed();
  INFO("seed " << seed);
  std::mt19937 rng(seed);
  const int64_t vocab = 64, cols = 64, draws = 40000;
  std::normal_distribution<float> d(0.0f, 1.5f);
  std::vector<float> row(static_cast<size_t>(vocab));
  for (auto& x : row) x = d(rng);
  const float temperature = 0.9f, top_p = 0.9f;
  const int32_t top_k = 20;
  // Independent reference: softmax(l / T) over the top_k, then the smallest top_p prefix.
  std::vector<double> expect(static_cast<size_t>(vocab), 0.0);
  {
    std::vector<int> order(static_cast<size_t>(vocab));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return row[a] > row[b]; });
    double z = 0.0;
    for (int i = 0; i < top_k; ++i) z += std::exp((row[order[i]] - row[order[0]]) / temperature);
    double cum = 0.0;
    for (int i = 0; i < top_k && cum < top_p; ++i) {
      const double p = std::exp((row[order[i]] - row[order[0]]) / temperature) / z;
      expect[size_t(order[i])] = p;
      cum += p;
    }
    const double kept = std::accumulate(expect.begin(), expect.end(), 0.0);
    for (auto& x : expect) x /= kept;
  }
  std::vector<float> logits;
  SamplingBatch b;
  for (int64_t i = 0; i < draws; ++i) {
    logits.insert(logits.end(), row.begin(), row.end());
    SamplingRow p;
    p.temperature = temperature;
    p.top_k = top_k;
    p.top_p = top_p;
    p.seed = uint64_t(seed) * 1000003ULL + uint64_t(i);
    p.index = uint64_t(i % 7);
    b.rows.push_back(p);
    b.penalty_indptr.push_back(0);
  }
  const SampledTokens g = run_gpu(logits, draws, cols, vocab, b);
  const SampledTokens c = run_cpu(logits, draws, cols, vocab, b);
  CHECK(g.tokens == c.tokens);
  std::vector<double> counts(static_cast<size_t>(vocab), 0.0);
  for (int32_t t : g.tokens) counts[size_t(t)] += 1.0;
  double chi2 = 0.0, pooled_obs = 0.0, pooled_exp = 0.0;
  int dof = -1;
  for (int64_t v = 0; v < vocab; ++v) {
    const double e = expect[size_t(v)] * double(draws);
    if (e == 0.0) {
      CHECK(counts[size_t(v)] == 0.0);  // truncated tokens never drawn
    } else if (e < 5.0) {
      pooled_obs += counts[size_t(v)];
      pooled_exp += e;
    } else {
      chi2 += (counts[size_t(v)] - e) * (counts[size_t(v)] - e) / e;
      ++dof;
    }
  }
  if (pooled_exp > 0.0) {
    chi2 += (pooled_obs - pooled_exp) * (pooled_obs - pooled_exp) / pooled_exp;
    ++dof;
  }
  REQUIRE(dof >= 3);
  // Wilson-Hilferty: the chi-square quantile at p = 1e-4 (z = 3.719).
  const double k = dof, h = 2.0 / (9.0 * k);
  const double critical = k * std::pow(1.0 - h + 3.719 * std::sqrt(h), 3.0);
  INFO("chi2 " << chi2 << " dof " << dof << " critical " << critical);
  CHECK(chi2 < critical);
}

TEST_CASE("cuda local runner samples on the device what the cpu sampler picks from its logits",
          "[gpu][sampling]") {
  for (int graphs : {0, 8}) {
    INFO("cuda_graph_max_batch " << graphs);
    RunnerConfig o;
    o.model_dir = std::filesystem::path(MLRA_TEST_DATA) / "tiny" / "mlra4";
    o.variant = "mlra4";
    o.backend = "cuda";
    o.page_size = 16;
    o.num_pages = 64;
    o.cuda_graph_max_batch = graphs;
    auto runner = make_local_runner(o);
    const int64_t V = runner->config().vocab_size, text = runner->config().text_vocab_size;
    auto cpu = make_cpu_token_sampler(text);
    std::mt19937 rng(23);
    auto tokens = [&](int n) {
      std::vector<int32_t> t(static_cast<size_t>(n));
      for (auto& x : t) x = int32_t(rng() % uint32_t(text));
      return t;
    };
    std::vector<StepBatch> steps = {mlra::testing::build_step(
        {{0, 0, tokens(21), true}, {1, 0, tokens(9), false}, {2, 0, tokens(16), false}}, 16, 16)};
    for (int k = 0; k < 4; ++k)
      steps.push_back(mlra::testing::build_step(
          {{0, 21 + k, tokens(1)}, {1, 9 + k, tokens(1)}, {2, 16 + k, tokens(1)}}, 16, 16));
    for (const StepBatch& step : steps) {
      const auto rows = int64_t(step.logit_rows.size());
      SamplingBatch b;
      for (int64_t r = 0; r < rows; ++r) {
        SamplingRow row;
        row.temperature = r % 4 == 0 ? 0.0f : 0.9f;
        row.top_p = r % 3 == 0 ? 0.9f : 1.0f;
        row.top_k = r % 5 == 1 ? 20 : 0;
        row.repetition_penalty = r % 2 == 0 ? 1.3f : 1.0f;
        row.logprobs = r % 2 == 1 ? 3 : -1;
        row.seed = rng();
        row.index = uint64_t(r);
        b.rows.push_back(row);
        add_history(b, rng, text, row.repetition_penalty != 1.0f ? 12 : 0);
      }
      // The same step twice rewrites the same cache rows, so both runs see the same logits.
      std::vector<float> logits;
      runner->execute(step, logits);
      SampledTokens want, got;
      cpu->sample(MatView{logits.data(), DType::kF32, rows, V, V}, b, want);
      runner->execute(step, b, got);
      compare(want, got, b, text);
    }
  }
}
