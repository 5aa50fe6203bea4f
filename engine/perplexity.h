// Held-out perplexity through a ModelRunner, evaluated like the release's eval_ppl.py:
// contiguous non-overlapping windows of `context` tokens, inputs x = data[s : s+ctx],
// targets y = data[s+1 : s+ctx+1], positions restart at 0 in every window, cross-entropy over
// the full (padded) vocabulary averaged over all positions, perplexity = exp(mean).
// With `prefill` > 0 a window runs as two steps: its first `prefill` tokens as a prefill, the
// rest as a continuation of the same sequence, which computes what token-by-token decode would
// (so TPLA's prefill/decode separation is measured: only the first step runs exact MLA).
#pragma once

#include <cstdint>
#include <filesystem>
#include <vector>

#include "engine/model_runner.h"

namespace mlra {

struct PerplexityResult {
  double mean_nll = 0;         // nats per token, full vocabulary softmax
  double mean_nll_masked = 0;  // softmax restricted to rows < text_vocab_size
  int64_t tokens = 0;
  int64_t windows = 0;
  double mean_nll_continuation = 0;  // over the tokens after the prefill part (prefill > 0)
  int64_t continuation_tokens = 0;
  double perplexity() const;
  double perplexity_masked() const;
};

// Reads a token file in the release format (256 x int32 header: magic 20240520, version 1,
// n_tokens; then uint16 tokens). Throws std::runtime_error with the reason.
std::vector<int32_t> read_token_file(const std::filesystem::path& path);

PerplexityResult evaluate_perplexity(ModelRunner& runner, const std::vector<int32_t>& tokens,
                                     int32_t context, int64_t max_windows, int32_t prefill = 0);

}  // namespace mlra
