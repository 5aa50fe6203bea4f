// Turns the sequences that sample in a step into the step plan's SamplingBatch: one SamplingRow
// per sequence (parameters, seed, generated-token index) and only the token history its
// penalties need: distinct prompt + generated tokens when the repetition penalty is on, distinct
// generated tokens with their counts for frequency / presence penalties, nothing otherwise.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/request.h"
#include "engine/sampling_batch.h"

namespace mlra {

class SamplingBatchBuilder {
 public:
  explicit SamplingBatchBuilder(int64_t text_vocab);

  void clear() { batch_.clear(); }
  // tokens: [P + G] the sequence's prompt (first num_prompt) and generated tokens. Logprobs are
  // asked for when params.logprobs > 0 (the engine's convention).
  void add(std::span<const int32_t> tokens, int32_t num_prompt, const SamplingParams& params,
           uint64_t seed);

  const SamplingBatch& batch() const { return batch_; }
  SamplingBatch& batch() { return batch_; }

 private:
  int64_t vocab_;
  SamplingBatch batch_;
  std::vector<int32_t> counts_;  // [vocab] generated counts, zeroed after each row
  std::vector<uint8_t> seen_;    // [vocab] listed flags, zeroed after each row
  std::vector<int32_t> listed_;
};

}  // namespace mlra
