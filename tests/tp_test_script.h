// Test helper: the step script the TP tests run on every runner they compare (CPU workers and
// GPU workers sharing a device against the in-process TP1 runner): prefill, a prefill chunk over
// its own cached prefix, a prefill over another sequence's cached first page (what the prefix
// cache hands out), then pure decode steps (which replay decode graphs where they are on).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

#include "engine/model_runner.h"
#include "step_builder.h"

namespace mlra::testing {

inline constexpr int32_t kTpPageSize = 16;
inline constexpr int32_t kTpPagesPerSeq = 16;
inline constexpr int64_t kTpNumPages = 3 * kTpPagesPerSeq;  // three sequences

inline std::vector<int32_t> tp_tokens(std::mt19937& rng, size_t n, int64_t vocab) {
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t(rng() % uint32_t(vocab));
  return t;
}

// Sequence `index` of the step reads sequence 0's first page instead of its own.
inline void share_first_page(StepBatch& s, int index) {
  s.page_indices[size_t(s.page_indptr[size_t(index)])] = 0;
}

// Step 0: seq 0's prompt (29 tokens, every logit) and the first 21 tokens of seq 1. Step 1: seq
// 1's next 17 tokens over its cached 21 (every logit), a decode of seq 0, and seq 2 prefilling
// 13 tokens from position 16 over seq 0's first page. Steps 2-5: decodes of all three.
inline std::vector<StepBatch> tp_script(int64_t vocab, uint32_t seed) {
  std::mt19937 rng(seed);
  const auto p0 = tp_tokens(rng, 29, vocab), p1 = tp_tokens(rng, 38, vocab),
             p2 = tp_tokens(rng, 13, vocab);
  constexpr int32_t P = kTpPageSize, N = kTpPagesPerSeq;
  std::vector<StepBatch> steps;
  steps.push_back(build_step(
      {SeqChunk{0, 0, p0, true}, SeqChunk{1, 0, {p1.begin(), p1.begin() + 21}, false}}, P, N));
  steps.push_back(
      build_step({SeqChunk{0, 29, tp_tokens(rng, 1, vocab)},
                  SeqChunk{1, 21, {p1.begin() + 21, p1.end()}, true}, SeqChunk{2, 16, p2, true}},
                 P, N));
  share_first_page(steps.back(), 2);
  for (int32_t k = 0; k < 4; ++k) {
    steps.push_back(build_step({SeqChunk{0, 30 + k, tp_tokens(rng, 1, vocab)},
                                SeqChunk{1, 38 + k, tp_tokens(rng, 1, vocab)},
                                SeqChunk{2, 29 + k, tp_tokens(rng, 1, vocab)}},
                               P, N));
    share_first_page(steps.back(), 2);
  }
  for (size_t i = 0; i < steps.size(); ++i) steps[i].step = int64_t(i);
  return steps;
}

// Each step's raw logits.
inline std::vector<std::vector<float>> run_tp_script(ModelRunner& r,
                                                     const std::vector<StepBatch>& steps) {
  std::vector<std::vector<float>> out(steps.size());
  for (size_t i = 0; i < steps.size(); ++i) r.execute(steps[i], out[i]);
  return out;
}

}  // namespace mlra::testing
