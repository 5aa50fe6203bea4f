// The plan of one forward step, built by the engine's scheduler and identical on every TP rank.
// It is defined here, below the engine, because the forward reads it. Tokens are grouped by
// sequence (sequence-major); every token's cache entry is written at its slot before attention
// runs, and token t attends to positions 0..positions[t] of its sequence.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace mlra {

struct StepBatch {
  int64_t step = 0;                   // step number, for lockstep checks between ranks
  std::vector<int32_t> tokens;        // [T] new token ids
  std::vector<int32_t> positions;     // [T] absolute positions
  std::vector<int32_t> token_seq;     // [T] index (0..S-1) of each token's sequence in this step
  std::vector<int32_t> slots;         // [T] page * page_size + offset of each token's cache row
  std::vector<int32_t> page_indptr;   // [S+1] CSR page tables
  std::vector<int32_t> page_indices;  // pages of each sequence, in position order
  std::vector<int32_t> logit_rows;    // token indices whose logits are returned, in order

  // A sequence is freshly prefilled when its first token in this step is at position 0.
  bool has_fresh_prefill() const {
    for (size_t t = 0; t < positions.size(); ++t)
      if (positions[t] == 0) return true;
    return false;
  }
  bool in_fresh_prefill(int32_t t) const {
    while (t > 0 && token_seq[size_t(t - 1)] == token_seq[size_t(t)]) --t;
    return positions[size_t(t)] == 0;
  }
  int32_t num_tokens() const { return static_cast<int32_t>(tokens.size()); }
  int32_t num_seqs() const {
    return static_cast<int32_t>(page_indptr.empty() ? 0 : page_indptr.size() - 1);
  }
};

}  // namespace mlra
