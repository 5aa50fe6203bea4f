// Host-side sampling of one logits row with request parameters: the engine-facing wrapper of the
// CPU sampling op (kernels/sampling_cpu.h), which holds the math. Order: repetition penalty (HF:
// divide positive, multiply negative logits of every seen token, prompt included),
// frequency/presence penalties (OpenAI: counts of generated tokens), then greedy argmax if
// temperature == 0, else temperature, top_k, top_p, min_p and a draw. Only rows <
// text_vocab_size are ever chosen. The draw uses a counter-based RNG keyed by (seed,
// generated-token index), so the output depends only on the sequence's own logits, never on
// batch composition or preemption.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/request.h"
#include "engine/sampling_batch_builder.h"
#include "kernels/counter_rng.h"
#include "kernels/sampling_cpu.h"

namespace mlra {

// Row `row` of a runner's sampling result as the engine's logprobs type.
TokenLogprobs token_logprobs(const SampledTokens& sampled, int64_t row);

class Sampler {
 public:
  explicit Sampler(int64_t text_vocab_size);

  // logits: [>= text_vocab_size] raw model scores of the next token; tokens: [P + G] prompt and
  // generated tokens so far (the first num_prompt are prompt). Fills *logprobs (raw model
  // log-softmax of the chosen token and the params.logprobs best) when logprobs != nullptr.
  int32_t sample(std::span<const float> logits, std::span<const int32_t> tokens, int32_t num_prompt,
                 const SamplingParams& params, uint64_t seed, TokenLogprobs* logprobs);

  // Applies both penalty kinds in place to logits [text_vocab_size].
  void apply_penalties(std::vector<float>& logits, std::span<const int32_t> tokens,
                       int32_t num_prompt, const SamplingParams& params);

 private:
  CpuRowSampler row_;
  SamplingBatchBuilder builder_;
  SampledTokens out_;
};

}  // namespace mlra
