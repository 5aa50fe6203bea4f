// Host-side sampling of one logits row. Order: repetition penalty (HF: divide positive, multiply
// negative logits of every seen token, prompt included), frequency/presence penalties (OpenAI:
// counts of generated tokens), then greedy argmax if temperature == 0, else temperature, top_k,
// min_p, top_p and a draw. Only rows < text_vocab_size are ever chosen. The draw uses a
// counter-based RNG keyed by (seed, generated-token index), so the output depends only on the
// sequence's own logits, never on batch composition or preemption.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/request.h"

namespace mlra {

// Uniform double in [0, 1) from (seed, index); the sampler's only randomness.
double uniform_from(uint64_t seed, uint64_t index);

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
  int32_t draw(const std::vector<float>& logits, const SamplingParams& params, double u);
  void fill_logprobs(std::span<const float> raw, int32_t chosen, int32_t top_n, TokenLogprobs* out);

  int64_t vocab_;
  std::vector<float> work_;      // [vocab] processed logits
  std::vector<int32_t> counts_;  // [vocab] generated-token counts, zeroed after use
  std::vector<uint8_t> seen_;    // [vocab] seen-token flags, zeroed after use
  std::vector<int32_t> order_;   // candidate indices
  std::vector<double> probs_;
};

}  // namespace mlra
