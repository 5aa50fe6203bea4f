// The sampling part of a step plan: one SamplingRow per sampled logits row plus the penalty
// history those rows need, built by SamplingBatchBuilder and shipped to rank 0 with the step
// (the Step message of control_channel.h). The sampling op reads it through its SamplingView
// (kernels/sampling.h); the conversion is implicit so a batch goes wherever a view is asked for.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/sampling.h"

namespace mlra {

// Row r samples logits row r. Penalty history of row r is entries
// [penalty_indptr[r], penalty_indptr[r + 1]): distinct token ids, each with how often it was
// generated. The repetition penalty applies to every listed token (the engine lists prompt +
// generated tokens when it is on), frequency / presence to those with count > 0. Rows without
// penalties list nothing, so the plan carries only the history a row's parameters need.
struct SamplingBatch {
  std::vector<SamplingRow> rows;           // [R]
  std::vector<int32_t> penalty_indptr{0};  // [R + 1]
  std::vector<int32_t> penalty_tokens;     // [E]
  std::vector<int32_t> penalty_counts;     // [E]

  int64_t size() const { return int64_t(rows.size()); }
  void clear() {
    rows.clear();
    penalty_indptr.assign(1, 0);
    penalty_tokens.clear();
    penalty_counts.clear();
  }
  operator SamplingView() const {  // NOLINT(google-explicit-constructor): a batch is its view
    return {rows, penalty_indptr, penalty_tokens, penalty_counts};
  }
  // Throws std::invalid_argument when the arrays disagree (decoded or hand-built batches).
  void check() const { SamplingView(*this).check(); }
};

}  // namespace mlra
