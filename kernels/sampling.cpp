// Shape checks of the sampling batch types (sampling.h): decoded or hand-built batches must be
// consistent before a sampler indexes with them.
#include "kernels/sampling.h"

#include <stdexcept>
#include <string>

namespace mlra {

void SamplingView::check() const {
  const size_t r = rows.size();
  if (penalty_indptr.size() != r + 1 || penalty_indptr.front() != 0)
    throw std::invalid_argument("sampling batch: penalty_indptr must have rows + 1 entries from 0");
  for (size_t i = 0; i < r; ++i)
    if (penalty_indptr[i + 1] < penalty_indptr[i])
      throw std::invalid_argument("sampling batch: penalty_indptr decreases");
  if (size_t(penalty_indptr.back()) != penalty_tokens.size() ||
      penalty_tokens.size() != penalty_counts.size())
    throw std::invalid_argument("sampling batch: penalty arrays disagree with penalty_indptr");
}

void SampledTokens::check(int64_t rows) const {
  const auto r = size_t(rows);
  if (tokens.size() != r || logprobs.size() != r || top_indptr.size() != r + 1 ||
      top_indptr.front() != 0)
    throw std::invalid_argument("sampled tokens: expected " + std::to_string(rows) + " rows");
  for (size_t i = 0; i < r; ++i)
    if (top_indptr[i + 1] < top_indptr[i])
      throw std::invalid_argument("sampled tokens: top_indptr decreases");
  if (size_t(top_indptr.back()) != top_tokens.size() || top_tokens.size() != top_logprobs.size())
    throw std::invalid_argument("sampled tokens: top arrays disagree with top_indptr");
}

}  // namespace mlra
