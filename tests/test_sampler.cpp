// Sampler: each parameter against an independent reference (greedy equivalences, penalty
// formulas, empirical distributions after temperature/top_k/top_p/min_p), seeded determinism,
// raw logprobs, and padding rows never sampled.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>

#include "engine/sampler.h"

using namespace mlra;

namespace {

constexpr int64_t kText = 40;
constexpr int64_t kVocab = 48;  // rows >= kText are padding

std::vector<float> random_logits(std::mt19937_64& rng, float scale = 3.0f) {
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> l(static_cast<size_t>(kVocab));
  for (auto& x : l) x = d(rng);
  for (int64_t v = kText; v < kVocab; ++v) l[v] = 100.0f;  // must never be chosen
  return l;
}

std::vector<int32_t> random_tokens(std::mt19937_64& rng, int n) {
  std::vector<int32_t> t(static_cast<size_t>(n));
  for (auto& x : t) x = static_cast<int32_t>(rng() % kText);
  return t;
}

int32_t argmax_text(const std::vector<float>& l) {
  return static_cast<int32_t>(std::max_element(l.begin(), l.begin() + kText) - l.begin());
}

// Expected distribution: softmax(l / T) over text rows, then top_k, top_p, min_p (vLLM order).
std::vector<double> reference_probs(const std::vector<float>& l, const SamplingParams& p) {
  std::vector<double> z(static_cast<size_t>(kText));
  for (int64_t v = 0; v < kText; ++v) z[v] = l[v] / p.temperature;
  std::vector<int> order(static_cast<size_t>(kText));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return z[a] > z[b]; });
  const size_t k = p.top_k > 0 ? static_cast<size_t>(p.top_k) : order.size();
  std::vector<double> prob(static_cast<size_t>(kText), 0.0);
  double total = 0.0;
  for (size_t i = 0; i < k; ++i) total += prob[order[i]] = std::exp(z[order[i]] - z[order[0]]);
  for (auto& x : prob) x /= total;
  double cum = 0.0;
  for (size_t i = 0; i < k; ++i) {
    if (cum >= p.top_p) prob[order[i]] = 0.0;
    cum += prob[order[i]];
  }
  const double pmax = prob[order[0]];
  for (auto& x : prob) {
    if (x < p.min_p * pmax) x = 0.0;
  }
  total = std::accumulate(prob.begin(), prob.end(), 0.0);
  for (auto& x : prob) x /= total;
  return prob;
}

std::vector<double> empirical(Sampler& s, const std::vector<float>& l, const SamplingParams& p,
                              int n) {
  std::vector<double> freq(static_cast<size_t>(kVocab), 0.0);
  std::vector<int32_t> prompt = {1};
  for (int i = 0; i < n; ++i) {
    const int32_t t = s.sample(l, prompt, 1, p, static_cast<uint64_t>(i) * 7919 + 3, nullptr);
    freq[static_cast<size_t>(t)] += 1.0 / n;
  }
  return freq;
}

}  // namespace

TEST_CASE("greedy, top_k=1, tiny top_p and min_p=1 all pick the argmax of text rows",
          "[engine][sampler]") {
  std::mt19937_64 rng(1);
  Sampler s(kText);
  for (int trial = 0; trial < 200; ++trial) {
    auto l = random_logits(rng);
    auto toks = random_tokens(rng, 5);
    const int32_t best = argmax_text(l);
    SamplingParams greedy;
    greedy.temperature = 0.0f;
    CHECK(s.sample(l, toks, 5, greedy, rng(), nullptr) == best);
    SamplingParams k1;
    k1.top_k = 1;
    CHECK(s.sample(l, toks, 5, k1, rng(), nullptr) == best);
    SamplingParams p_tiny;
    p_tiny.top_p = 1e-6f;
    p_tiny.temperature = 2.0f;
    CHECK(s.sample(l, toks, 5, p_tiny, rng(), nullptr) == best);
    SamplingParams minp;
    minp.min_p = 1.0f;
    CHECK(s.sample(l, toks, 5, minp, rng(), nullptr) == best);
  }
}

TEST_CASE("padding rows are never sampled, even at high temperature", "[engine][sampler]") {
  std::mt19937_64 rng(2);
  Sampler s(kText);
  SamplingParams hot;
  hot.temperature = 5.0f;
  auto l = random_logits(rng);
  for (int i = 0; i < 2000; ++i)
    CHECK(s.sample(l, {}, 0, hot, static_cast<uint64_t>(i), nullptr) < kText);
}

TEST_CASE("repetition, frequency and presence penalties follow the HF and OpenAI formulas",
          "[engine][sampler]") {
  std::mt19937_64 rng(3);
  Sampler s(kText);
  for (int trial = 0; trial < 50; ++trial) {
    auto raw = random_logits(rng);
    raw.resize(static_cast<size_t>(kText));
    auto tokens = random_tokens(rng, 30);
    const int32_t num_prompt = 12;
    SamplingParams p;
    p.repetition_penalty = 1.0f + static_cast<float>(rng() % 100) / 50.0f;
    p.frequency_penalty = static_cast<float>(static_cast<int>(rng() % 400) - 200) / 100.0f;
    p.presence_penalty = static_cast<float>(static_cast<int>(rng() % 400) - 200) / 100.0f;
    auto got = raw;
    s.apply_penalties(got, tokens, num_prompt, p);
    for (int32_t v = 0; v < kText; ++v) {
      const bool seen = std::count(tokens.begin(), tokens.end(), v) > 0;
      const auto gen_count = std::count(tokens.begin() + num_prompt, tokens.end(), v);
      double expect = raw[v];
      if (seen) expect = expect > 0 ? expect / p.repetition_penalty : expect * p.repetition_penalty;
      expect -= p.frequency_penalty * gen_count + (gen_count > 0 ? p.presence_penalty : 0.0);
      CHECK(got[v] == Approx(expect).margin(1e-5));
    }
  }
  // A strong repetition penalty moves greedy away from a token already in the prompt.
  std::vector<float> l(static_cast<size_t>(kVocab), 0.0f);
  l[3] = 2.0f;
  l[5] = 1.5f;
  SamplingParams greedy;
  greedy.temperature = 0.0f;
  CHECK(s.sample(l, std::vector<int32_t>{3}, 1, greedy, 0, nullptr) == 3);
  greedy.repetition_penalty = 1.5f;
  CHECK(s.sample(l, std::vector<int32_t>{3}, 1, greedy, 0, nullptr) == 5);
  // Frequency/presence see generated tokens only: a prompt occurrence does not count.
  SamplingParams freq;
  freq.temperature = 0.0f;
  freq.frequency_penalty = 1.0f;
  CHECK(s.sample(l, std::vector<int32_t>{3}, 1, freq, 0, nullptr) == 3);
  CHECK(s.sample(l, std::vector<int32_t>{0, 3}, 1, freq, 0, nullptr) == 5);
}

TEST_CASE("temperature, top_k, top_p and min_p give the reference distribution",
          "[engine][sampler]") {
  std::mt19937_64 rng(4);
  Sampler s(kText);
  struct Case {
    float t;
    int32_t k;
    float p;
    float min_p;
  };
  for (Case c :
       {Case{1.0f, 0, 1.0f, 0.0f}, Case{0.5f, 0, 1.0f, 0.0f}, Case{1.5f, 5, 1.0f, 0.0f},
        Case{1.0f, 0, 0.7f, 0.0f}, Case{1.0f, 0, 1.0f, 0.2f}, Case{0.8f, 8, 0.9f, 0.05f}}) {
    auto l = random_logits(rng, 1.5f);
    SamplingParams p;
    p.temperature = c.t;
    p.top_k = c.k;
    p.top_p = c.p;
    p.min_p = c.min_p;
    auto expect = reference_probs(l, p);
    auto got = empirical(s, l, p, 40000);
    INFO("T=" << c.t << " k=" << c.k << " p=" << c.p << " min_p=" << c.min_p);
    for (int64_t v = 0; v < kText; ++v) {
      CHECK(got[v] == Approx(expect[v]).margin(0.012));
      if (expect[v] == 0.0) CHECK(got[v] == 0.0);
    }
  }
}

TEST_CASE("top_p over a large vocabulary matches a full sort", "[engine][sampler]") {
  // Exercises the probe-then-fallback path (vocabulary above the 1024-candidate probe).
  std::mt19937_64 rng(9);
  const int64_t big = 5000;
  Sampler s(big);
  for (float scale : {0.1f, 4.0f}) {  // flat: nucleus beyond the probe; peaked: inside it
    std::normal_distribution<float> d(0.0f, scale);
    std::vector<float> l(static_cast<size_t>(big));
    for (auto& x : l) x = d(rng);
    SamplingParams p;
    p.top_p = 0.5f;
    std::vector<int> order(static_cast<size_t>(big));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int a, int b) { return l[a] > l[b]; });
    double total = 0.0;
    for (float x : l) total += std::exp(x - l[order[0]]);
    std::vector<char> allowed(static_cast<size_t>(big), 0);
    double cum = 0.0;
    for (int v : order) {
      allowed[v] = 1;
      cum += std::exp(l[v] - l[order[0]]) / total;
      if (cum >= 0.5) break;
    }
    for (int i = 0; i < 500; ++i) {
      const int32_t t = s.sample(l, {}, 0, p, static_cast<uint64_t>(i), nullptr);
      CHECK(allowed[t]);
    }
  }
}

TEST_CASE("seeded sampling is reproducible and depends on seed and token index",
          "[engine][sampler]") {
  std::mt19937_64 rng(5);
  Sampler a(kText), b(kText);
  auto l = random_logits(rng, 1.0f);
  SamplingParams p;
  std::vector<int32_t> tokens = {1, 2, 3};
  std::vector<int32_t> seq_a, seq_b, seq_c;
  for (int i = 0; i < 64; ++i) {
    tokens.push_back(static_cast<int32_t>(i % kText));
    seq_a.push_back(a.sample(l, tokens, 3, p, 42, nullptr));
    seq_b.push_back(b.sample(l, tokens, 3, p, 42, nullptr));
    seq_c.push_back(b.sample(l, tokens, 3, p, 43, nullptr));
  }
  CHECK(seq_a == seq_b);
  CHECK(seq_a != seq_c);
  CHECK(std::set<int32_t>(seq_a.begin(), seq_a.end()).size() > 5);  // the index moves the draw
  CHECK(uniform_from(1, 2) == uniform_from(1, 2));
  CHECK(uniform_from(1, 2) != uniform_from(2, 1));
}

TEST_CASE("logprobs are the raw model log-softmax with the top-n highest first",
          "[engine][sampler]") {
  std::mt19937_64 rng(6);
  Sampler s(kText);
  auto l = random_logits(rng);
  double z = 0.0;
  for (int64_t v = 0; v < kText; ++v) z += std::exp(static_cast<double>(l[v]));
  SamplingParams p;
  p.temperature = 0.3f;
  p.repetition_penalty = 1.7f;
  p.logprobs = 5;
  TokenLogprobs lp;
  std::vector<int32_t> toks = {argmax_text(l)};
  const int32_t t = s.sample(l, toks, 1, p, 7, &lp);
  CHECK(lp.token == t);
  CHECK(lp.logprob == Approx(l[t] - std::log(z)).margin(1e-4));
  REQUIRE(lp.top.size() == 5);
  std::vector<float> sorted(l.begin(), l.begin() + kText);
  std::sort(sorted.rbegin(), sorted.rend());
  for (size_t i = 0; i < 5; ++i) {
    CHECK(l[lp.top[i].token] == sorted[i]);
    CHECK(lp.top[i].logprob == Approx(sorted[i] - std::log(z)).margin(1e-4));
  }
}
