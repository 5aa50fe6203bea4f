// SamplingBatchBuilder (header): request parameters -> SamplingRow, token history -> the
// distinct-token penalty lists of SamplingBatch.
#include "engine/sampling_batch_builder.h"

#include <algorithm>
#include <stdexcept>

namespace mlra {

SamplingBatchBuilder::SamplingBatchBuilder(int64_t text_vocab)
    : vocab_(text_vocab),
      counts_(size_t(std::max<int64_t>(text_vocab, 0)), 0),
      seen_(size_t(std::max<int64_t>(text_vocab, 0)), 0) {
  if (vocab_ <= 0) throw std::invalid_argument("sampling batch needs a positive vocabulary size");
}

void SamplingBatchBuilder::add(std::span<const int32_t> tokens, int32_t num_prompt,
                               const SamplingParams& params, uint64_t seed) {
  SamplingRow row;
  row.temperature = params.temperature;
  row.top_k = params.top_k;
  row.top_p = params.top_p;
  row.min_p = params.min_p;
  row.repetition_penalty = params.repetition_penalty;
  row.frequency_penalty = params.frequency_penalty;
  row.presence_penalty = params.presence_penalty;
  row.logprobs = params.logprobs > 0 ? params.logprobs : -1;
  row.seed = seed;
  row.index = static_cast<uint64_t>(static_cast<int64_t>(tokens.size()) - num_prompt);
  batch_.rows.push_back(row);

  const bool repetition = params.repetition_penalty != 1.0f;
  const bool frequency = params.frequency_penalty != 0.0f || params.presence_penalty != 0.0f;
  if (repetition || frequency) {
    const size_t first = repetition ? 0 : static_cast<size_t>(num_prompt);
    listed_.clear();
    for (size_t i = first; i < tokens.size(); ++i) {
      const int32_t t = tokens[i];
      if (t < 0 || t >= vocab_) continue;
      if (!seen_[size_t(t)]) {
        seen_[size_t(t)] = 1;
        listed_.push_back(t);
      }
      if (i >= static_cast<size_t>(num_prompt)) ++counts_[size_t(t)];
    }
    for (int32_t t : listed_) {
      batch_.penalty_tokens.push_back(t);
      batch_.penalty_counts.push_back(counts_[size_t(t)]);
      seen_[size_t(t)] = 0;
      counts_[size_t(t)] = 0;
    }
  }
  batch_.penalty_indptr.push_back(static_cast<int32_t>(batch_.penalty_tokens.size()));
}

}  // namespace mlra
