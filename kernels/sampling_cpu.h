// CPU reference of the sampling op: one row at a time on host logits, with scratch buffers kept
// between calls. The engine's Sampler wraps it for single rows, the CPU TokenSampler runs it over
// a SamplingView, and the CUDA sampler is tested against it token for token.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/sampling.h"

namespace mlra {

class CpuRowSampler {
 public:
  explicit CpuRowSampler(int64_t text_vocab);

  // logits: [>= text_vocab] raw scores; penalty_tokens / penalty_counts: [E] the row's distinct
  // history (SamplingView). Appends the row's token (and logprobs when row.logprobs >= 0) to out.
  int32_t sample(std::span<const float> logits, const SamplingRow& row,
                 std::span<const int32_t> penalty_tokens, std::span<const int32_t> penalty_counts,
                 SampledTokens& out);

  // Applies both penalty kinds in place to logits [text_vocab].
  void apply_penalties(std::vector<float>& logits, const SamplingRow& row,
                       std::span<const int32_t> penalty_tokens,
                       std::span<const int32_t> penalty_counts) const;

  int64_t text_vocab() const { return vocab_; }

 private:
  int32_t draw(const std::vector<float>& logits, const SamplingRow& row, double u);
  void append_logprobs(std::span<const float> raw, int32_t chosen, int32_t top_n,
                       SampledTokens& out);

  int64_t vocab_;
  std::vector<float> work_;     // [vocab] processed logits
  std::vector<int32_t> order_;  // candidate indices
  std::vector<double> probs_;
};

}  // namespace mlra
