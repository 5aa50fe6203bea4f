// Test helper: builds StepBatches for sequences with a fixed private page range each
// (sequence i owns pages [i * pages_per_seq, (i + 1) * pages_per_seq)), so model tests can run
// prefill, chunked prefill and decode without the scheduler.
#pragma once

#include <cstdint>
#include <vector>

#include "models/step_batch.h"

namespace mlra::testing {

struct SeqChunk {
  int seq = 0;                  // sequence id (selects its page range)
  int32_t start = 0;            // position of the first token of the chunk
  std::vector<int32_t> tokens;  // tokens of this chunk
  bool all_logits = false;      // logits for every token, else only the last
};

inline StepBatch build_step(const std::vector<SeqChunk>& chunks, int32_t page_size,
                            int32_t pages_per_seq) {
  StepBatch s;
  s.page_indptr.push_back(0);
  for (size_t i = 0; i < chunks.size(); ++i) {
    const SeqChunk& c = chunks[i];
    const int32_t end = c.start + int32_t(c.tokens.size());
    const int32_t pages = (end + page_size - 1) / page_size;
    for (int32_t p = 0; p < pages; ++p) s.page_indices.push_back(c.seq * pages_per_seq + p);
    s.page_indptr.push_back(int32_t(s.page_indices.size()));
    for (size_t k = 0; k < c.tokens.size(); ++k) {
      const int32_t pos = c.start + int32_t(k);
      if (c.all_logits || k + 1 == c.tokens.size()) s.logit_rows.push_back(s.num_tokens());
      s.tokens.push_back(c.tokens[k]);
      s.positions.push_back(pos);
      s.token_seq.push_back(int32_t(i));
      s.slots.push_back((c.seq * pages_per_seq + pos / page_size) * page_size + pos % page_size);
    }
  }
  return s;
}

inline double rel_l2(const std::vector<float>& a, const std::vector<float>& b) {
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num += (double(a[i]) - b[i]) * (double(a[i]) - b[i]);
    den += double(b[i]) * b[i];
  }
  return a.size() == b.size() ? std::sqrt(num / std::max(den, 1e-30)) : 1e30;
}

}  // namespace mlra::testing
