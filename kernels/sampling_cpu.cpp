// CPU sampling (header): penalties, temperature, top_k / top_p / min_p truncation, a seeded draw
// and raw logprobs, one row at a time; the CPU TokenSampler loops it over a batch.
#include "kernels/sampling_cpu.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

#include "kernels/counter_rng.h"

namespace mlra {
namespace {

// Candidates first tried by nucleus sampling before falling back to a full sort.
constexpr int32_t kNucleusProbe = 1024;

class CpuTokenSampler final : public TokenSampler {
 public:
  explicit CpuTokenSampler(int64_t text_vocab) : row_(text_vocab) {}

  void sample(const MatView& logits, const SamplingView& batch, SampledTokens& out) override {
    batch.check();
    if (logits.dtype != DType::kF32) throw std::invalid_argument("cpu sampler: logits must be f32");
    if (logits.rows != batch.size() || logits.cols < row_.text_vocab())
      throw std::invalid_argument("cpu sampler: logits are " + std::to_string(logits.rows) + " x " +
                                  std::to_string(logits.cols) + " for " +
                                  std::to_string(batch.size()) + " rows of text vocabulary " +
                                  std::to_string(row_.text_vocab()));
    out.clear();
    const auto* base = static_cast<const float*>(logits.data);
    for (int64_t r = 0; r < batch.size(); ++r) {
      const auto b = size_t(batch.penalty_indptr[size_t(r)]),
                 e = size_t(batch.penalty_indptr[size_t(r) + 1]);
      row_.sample({base + r * logits.ld, size_t(logits.cols)}, batch.rows[size_t(r)],
                  std::span(batch.penalty_tokens).subspan(b, e - b),
                  std::span(batch.penalty_counts).subspan(b, e - b), out);
    }
  }

 private:
  CpuRowSampler row_;
};

}  // namespace

CpuRowSampler::CpuRowSampler(int64_t text_vocab) : vocab_(text_vocab) {
  if (vocab_ <= 0) throw std::invalid_argument("sampler needs a positive vocabulary size");
}

void CpuRowSampler::apply_penalties(std::vector<float>& logits, const SamplingRow& row,
                                    std::span<const int32_t> tokens,
                                    std::span<const int32_t> counts) const {
  if (row.repetition_penalty != 1.0f) {
    const float rp = row.repetition_penalty;
    for (int32_t t : tokens) {
      if (t < 0 || t >= vocab_) continue;
      logits[t] = logits[t] > 0 ? logits[t] / rp : logits[t] * rp;
    }
  }
  if (row.frequency_penalty != 0.0f || row.presence_penalty != 0.0f) {
    for (size_t i = 0; i < tokens.size(); ++i) {
      const int32_t t = tokens[i];
      if (t < 0 || t >= vocab_ || counts[i] <= 0) continue;
      // Kept as separate float operations: the CUDA sampler rounds the same way.
      const float penalty = row.frequency_penalty * static_cast<float>(counts[i]);
      logits[t] -= penalty + row.presence_penalty;
    }
  }
}

int32_t CpuRowSampler::sample(std::span<const float> logits, const SamplingRow& row,
                              std::span<const int32_t> penalty_tokens,
                              std::span<const int32_t> penalty_counts, SampledTokens& out) {
  if (static_cast<int64_t>(logits.size()) < vocab_)
    throw std::invalid_argument("logits row too short");
  if (penalty_tokens.size() != penalty_counts.size())
    throw std::invalid_argument("penalty tokens and counts differ in length");
  auto raw = logits.first(static_cast<size_t>(vocab_));
  work_.assign(raw.begin(), raw.end());
  apply_penalties(work_, row, penalty_tokens, penalty_counts);

  int32_t chosen;
  if (row.greedy()) {
    chosen = static_cast<int32_t>(std::max_element(work_.begin(), work_.end()) - work_.begin());
  } else {
    const float inv_t = 1.0f / row.temperature;
    for (float& x : work_) x *= inv_t;
    chosen = draw(work_, row, uniform_from(row.seed, row.index));
  }
  out.tokens.push_back(chosen);
  if (row.logprobs >= 0) {
    append_logprobs(raw, chosen, row.logprobs, out);
  } else {
    out.logprobs.push_back(0.0f);
    out.top_indptr.push_back(out.top_indptr.back());
  }
  return chosen;
}

// Picks from the tempered logits: sort candidates (only as far as truncation needs), apply
// top_k, top_p and min_p, then inverse-CDF with u. Without truncation the CDF runs in token-id
// order; with it, in (logit desc, id asc) order.
int32_t CpuRowSampler::draw(const std::vector<float>& logits, const SamplingRow& row, double u) {
  const int32_t v = static_cast<int32_t>(vocab_);
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  order_.resize(static_cast<size_t>(v));
  std::iota(order_.begin(), order_.end(), 0);
  const int32_t k = (row.top_k > 0 && row.top_k < v) ? row.top_k : v;
  const bool truncating = row.truncates(vocab_);
  const float max_logit = *std::max_element(logits.begin(), logits.end());

  // Unnormalised probabilities relative to the maximum.
  auto weight = [&](int32_t t) { return std::exp(static_cast<double>(logits[t]) - max_logit); };
  if (truncating) {
    int32_t sorted = k;
    if (k == v && row.top_p < 1.0f && v > kNucleusProbe) {
      // Nucleus usually lives in the head: sort a probe first, sort everything only if needed.
      std::partial_sort(order_.begin(), order_.begin() + kNucleusProbe, order_.end(), by_logit);
      double total = 0.0, head = 0.0;
      for (int32_t t = 0; t < v; ++t) total += weight(t);
      for (int32_t i = 0; i < kNucleusProbe; ++i) head += weight(order_[i]);
      sorted = head >= row.top_p * total ? kNucleusProbe : v;
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
    if (row.top_p < 1.0f) {
      double mass = total;  // top_k-truncated mass, or the whole vocabulary's
      if (k == v && static_cast<int32_t>(order_.size()) < v) {
        mass = 0.0;
        for (int32_t t = 0; t < v; ++t) mass += weight(t);
      }
      double cum = 0.0;
      size_t n = 0;
      while (n < keep) {
        cum += probs_[n++];
        if (cum >= row.top_p * mass) break;
      }
      keep = std::max<size_t>(n, 1);
    }
    if (row.min_p > 0.0f) {
      const double floor = row.min_p * probs_[0];
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

void CpuRowSampler::append_logprobs(std::span<const float> raw, int32_t chosen, int32_t top_n,
                                    SampledTokens& out) {
  const float max_logit = *std::max_element(raw.begin(), raw.end());
  double sum = 0.0;
  for (float x : raw) sum += std::exp(static_cast<double>(x) - max_logit);
  const double lse = max_logit + std::log(sum);
  out.logprobs.push_back(static_cast<float>(raw[chosen] - lse));
  const int32_t n = std::min<int32_t>(std::max(top_n, 0), static_cast<int32_t>(raw.size()));
  if (n > 0) {
    order_.resize(raw.size());
    std::iota(order_.begin(), order_.end(), 0);
    std::partial_sort(order_.begin(), order_.begin() + n, order_.end(), [&](int32_t a, int32_t b) {
      return raw[a] > raw[b] || (raw[a] == raw[b] && a < b);
    });
    for (int32_t i = 0; i < n; ++i) {
      out.top_tokens.push_back(order_[i]);
      out.top_logprobs.push_back(static_cast<float>(raw[order_[i]] - lse));
    }
  }
  out.top_indptr.push_back(static_cast<int32_t>(out.top_tokens.size()));
}

std::unique_ptr<TokenSampler> make_cpu_token_sampler(int64_t text_vocab) {
  return std::make_unique<CpuTokenSampler>(text_vocab);
}

}  // namespace mlra
