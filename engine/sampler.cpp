// Sampler (header): request parameters and token history -> one SamplingRow -> CpuRowSampler.
#include "engine/sampler.h"

#include <algorithm>

namespace mlra {

TokenLogprobs token_logprobs(const SampledTokens& sampled, int64_t row) {
  const auto r = size_t(row);
  TokenLogprobs lp;
  lp.token = sampled.tokens[r];
  lp.logprob = sampled.logprobs[r];
  for (int32_t i = sampled.top_indptr[r]; i < sampled.top_indptr[r + 1]; ++i)
    lp.top.push_back({sampled.top_tokens[size_t(i)], sampled.top_logprobs[size_t(i)]});
  return lp;
}

Sampler::Sampler(int64_t text_vocab_size) : row_(text_vocab_size), builder_(text_vocab_size) {}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> tokens,
                        int32_t num_prompt, const SamplingParams& params, uint64_t seed,
                        TokenLogprobs* logprobs) {
  builder_.clear();
  builder_.add(tokens, num_prompt, params, seed);
  SamplingBatch& batch = builder_.batch();
  batch.rows[0].logprobs = logprobs != nullptr ? std::max(params.logprobs, 0) : -1;
  out_.clear();
  const int32_t token =
      row_.sample(logits, batch.rows[0], batch.penalty_tokens, batch.penalty_counts, out_);
  if (logprobs != nullptr) *logprobs = token_logprobs(out_, 0);
  return token;
}

void Sampler::apply_penalties(std::vector<float>& logits, std::span<const int32_t> tokens,
                              int32_t num_prompt, const SamplingParams& params) {
  builder_.clear();
  builder_.add(tokens, num_prompt, params, 0);
  const SamplingBatch& batch = builder_.batch();
  row_.apply_penalties(logits, batch.rows[0], batch.penalty_tokens, batch.penalty_counts);
}

}  // namespace mlra
