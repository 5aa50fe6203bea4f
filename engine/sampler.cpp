// Sampler: penalties, temperature, top_k / min_p / top_p truncation and a seeded draw (header).
#include "engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

namespace mlra {

namespace {

uint64_t splitmix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Candidates first tried by nucleus sampling before falling back to a full sort.
constexpr int32_t kNucleusProbe = 1024;
// Below this temperature 1/T overflows the logits; treat as greedy (as vLLM does).
constexpr float kGreedyTemperature = 1e-5f;

}  // namespace

double uniform_from(uint64_t seed, uint64_t index) {
  const uint64_t bits = splitmix(splitmix(seed) ^ splitmix(index + 0x51ed2701f3a5c7b9ULL));
  return static_cast<double>(bits >> 11) * 0x1.0p-53;
}

Sampler::Sampler(int64_t text_vocab_size)
    : vocab_(text_vocab_size),
      counts_(static_cast<size_t>(text_vocab_size), 0),
      seen_(static_cast<size_t>(text_vocab_size), 0) {
  if (vocab_ <= 0) throw std::invalid_argument("Sampler needs a positive vocabulary size");
}

void Sampler::apply_penalties(std::vector<float>& logits, std::span<const int32_t> tokens,
                              int32_t num_prompt, const SamplingParams& params) {
  if (params.repetition_penalty != 1.0f) {
    const float rp = params.repetition_penalty;
    for (int32_t t : tokens) {
      if (t < 0 || t >= vocab_ || seen_[t]) continue;
      seen_[t] = 1;
      logits[t] = logits[t] > 0 ? logits[t] / rp : logits[t] * rp;
    }
    for (int32_t t : tokens) {
      if (t >= 0 && t < vocab_) seen_[t] = 0;
    }
  }
  if (params.frequency_penalty != 0.0f || params.presence_penalty != 0.0f) {
    auto generated = tokens.subspan(static_cast<size_t>(num_prompt));
    for (int32_t t : generated) {
      if (t >= 0 && t < vocab_) ++counts_[t];
    }
    for (int32_t t : generated) {
      if (t < 0 || t >= vocab_ || counts_[t] == 0) continue;
      logits[t] -= params.frequency_penalty * static_cast<float>(counts_[t]) + params.presence_penalty;
      counts_[t] = 0;  // each token penalised once
    }
  }
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> tokens,
                        int32_t num_prompt, const SamplingParams& params, uint64_t seed,
                        TokenLogprobs* logprobs) {
  if (static_cast<int64_t>(logits.size()) < vocab_) throw std::invalid_argument("logits row too short");
  auto raw = logits.first(static_cast<size_t>(vocab_));
  work_.assign(raw.begin(), raw.end());
  apply_penalties(work_, tokens, num_prompt, params);

  int32_t chosen;
  if (params.temperature < kGreedyTemperature) {
    chosen = static_cast<int32_t>(std::max_element(work_.begin(), work_.end()) - work_.begin());
  } else {
    const float inv_t = 1.0f / params.temperature;
    for (float& x : work_) x *= inv_t;
    const auto index = static_cast<uint64_t>(static_cast<int64_t>(tokens.size()) - num_prompt);
    chosen = draw(work_, params, uniform_from(seed, index));
  }
  if (logprobs != nullptr) fill_logprobs(raw, chosen, params.logprobs, logprobs);
  return chosen;
}

// Picks from the tempered logits: sort candidates (only as far as truncation needs), apply
// top_k, min_p and top_p, then inverse-CDF with u. Ties order by token id for determinism.
int32_t Sampler::draw(const std::vector<float>& logits, const SamplingParams& params, double u) {
  const int32_t v = static_cast<int32_t>(vocab_);
  auto by_logit = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  order_.resize(static_cast<size_t>(v));
  std::iota(order_.begin(), order_.end(), 0);
  int32_t k = (params.top_k > 0 && params.top_k < v) ? params.top_k : v;
  const bool truncating = k < v || params.top_p < 1.0f || params.min_p > 0.0f;
  const float max_logit = *std::max_element(logits.begin(), logits.end());

  // Unnormalised probabilities relative to the maximum.
  auto weight = [&](int32_t t) { return std::exp(static_cast<double>(logits[t]) - max_logit); };
  if (truncating) {
    int32_t sorted = k;
    if (k == v && params.top_p < 1.0f && v > kNucleusProbe) {
      // Nucleus usually lives in the head: sort a probe first, sort everything only if needed.
      std::partial_sort(order_.begin(), order_.begin() + kNucleusProbe, order_.end(), by_logit);
      double total = 0.0, head = 0.0;
      for (int32_t t = 0; t < v; ++t) total += weight(t);
      for (int32_t i = 0; i < kNucleusProbe; ++i) head += weight(order_[i]);
      sorted = head >= params.top_p * total ? kNucleusProbe : v;
      if (sorted == v) std::sort(order_.begin(), order_.end(), by_logit);
    } else if (k < v) {
      std::partial_sort(order_.begin(), order_.begin() + k, order_.end(), by_logit);
    } else {
      std::sort(order_.begin(), order_.end(), by_logit);
    }
    order_.resize(static_cast<size_t>(std::min(sorted, k)));
  }
  probs_.resize(order_.size());
  double total = 0.0;
  for (size_t i = 0; i < order_.size(); ++i) total += probs_[i] = weight(order_[i]);
  size_t keep = order_.size();
  if (truncating) {
    // order_ is sorted descending here (vLLM order: top_k, then top_p, then min_p).
    if (params.top_p < 1.0f) {
      double mass = total;  // top_k-truncated mass, or the whole vocabulary's
      if (k == v && static_cast<int32_t>(order_.size()) < v) {
        mass = 0.0;
        for (int32_t t = 0; t < v; ++t) mass += weight(t);
      }
      double cum = 0.0;
      size_t n = 0;
      while (n < keep) {
        cum += probs_[n++];
        if (cum >= params.top_p * mass) break;
      }
      keep = std::max<size_t>(n, 1);
    }
    if (params.min_p > 0.0f) {
      const double floor = params.min_p * probs_[0];
      size_t n = 1;
      while (n < keep && probs_[n] >= floor) ++n;
      keep = n;
    }
    total = 0.0;
    for (size_t i = 0; i < keep; ++i) total += probs_[i];
  }
  const double target = u * total;
  double cum = 0.0;
  for (size_t i = 0; i < keep; ++i) {
    cum += probs_[i];
    if (cum > target) return order_[i];
  }
  return order_[keep - 1];
}

void Sampler::fill_logprobs(std::span<const float> raw, int32_t chosen, int32_t top_n, TokenLogprobs* out) {
  const float max_logit = *std::max_element(raw.begin(), raw.end());
  double sum = 0.0;
  for (float x : raw) sum += std::exp(static_cast<double>(x) - max_logit);
  const double lse = max_logit + std::log(sum);
  out->token = chosen;
  out->logprob = static_cast<float>(raw[chosen] - lse);
  out->top.clear();
  const int32_t n = std::min<int32_t>(std::max(top_n, 0), static_cast<int32_t>(raw.size()));
  if (n == 0) return;
  order_.resize(raw.size());
  std::iota(order_.begin(), order_.end(), 0);
  std::partial_sort(order_.begin(), order_.begin() + n, order_.end(),
                    [&](int32_t a, int32_t b) { return raw[a] > raw[b] || (raw[a] == raw[b] && a < b); });
  for (int32_t i = 0; i < n; ++i) out->top.push_back({order_[i], static_cast<float>(raw[order_[i]] - lse)});
}

}  // namespace mlra
