// Sequential reference of the split-KV plan (split_kv_plan_host.h): the same rules as the
// device's plan kernel, one token at a time.
#include "kernels/split_kv_plan_host.h"

#include <algorithm>
#include <stdexcept>

namespace mlra::cuda {
namespace {

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

}  // namespace

SplitKvPlanHost plan_split_kv_host(const SplitKvShape& shape, std::span<const int32_t> token_pos,
                                   std::span<const int32_t> token_seq) {
  const int n_tokens = shape.num_tokens, k = shape.tokens_per_item;
  if (int(token_pos.size()) != n_tokens || (k > 1 && int(token_seq.size()) != n_tokens))
    throw std::invalid_argument("split-kv plan: one position (and sequence) per token");
  // Token u joins the group of u - 1: same sequence, later position, same aligned block of k.
  auto continues = [&](int u) {
    return k > 1 && token_seq[u] == token_seq[u - 1] && token_pos[u] > token_pos[u - 1] &&
           token_pos[u] / k == token_pos[u - 1] / k;
  };
  struct Group {
    int first, count;
    int64_t len;  // causal length: the last token's pos + 1
  };
  std::vector<Group> groups;
  for (int t = 0; t < n_tokens; ++t) {
    if (t > 0 && continues(t)) continue;
    int n = 1;
    while (t + n < n_tokens && continues(t + n)) ++n;
    groups.push_back({t, n, std::max<int64_t>(token_pos[t + n - 1] + 1, 1)});
  }
  int64_t max_tiles = 1;
  for (int t = 0; t < n_tokens; ++t)
    max_tiles = std::max(max_tiles, ceil_div(std::max<int64_t>(token_pos[t] + 1, 1), kPlanTile));
  // The smallest chunk (>= min_chunk_tiles) whose item count fits target_chunks.
  int64_t lo = shape.min_chunk_tiles, hi = std::max<int64_t>(max_tiles, lo);
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    int64_t count = 0;
    for (const Group& g : groups) count += ceil_div(ceil_div(g.len, kPlanTile), mid);
    if (count <= shape.target_chunks)
      hi = mid;
    else
      lo = mid + 1;
  }
  SplitKvPlanHost plan;
  plan.chunk_tiles = int32_t(lo);
  plan.merges.resize(size_t(n_tokens));
  for (const Group& g : groups) {
    // The group's tiles spread evenly over its chunks (every chunk non-empty).
    const int64_t tiles = ceil_div(g.len, kPlanTile);
    const int64_t n_cap = ceil_div(tiles, lo);
    const int64_t even_tiles = n_cap > 0 ? ceil_div(tiles, n_cap) : 1;
    const int64_t even = even_tiles * kPlanTile;
    const int n = int(ceil_div(tiles, even_tiles));
    const int32_t first_partial = plan.num_partials;
    for (int c = 0; c < n; ++c)
      plan.items.push_back({g.first, g.count, int32_t(c * even),
                            int32_t(std::min<int64_t>(g.len, (c + 1) * even)),
                            n > 1 ? first_partial + c : -1});
    for (int i = 0; i < g.count; ++i) {
      plan.merges[size_t(g.first + i)] = {first_partial, n, i};
      if (n > 1 && int(plan.merge_tokens.size()) < shape.max_merges())
        plan.merge_tokens.push_back(g.first + i);
    }
    if (n > 1) plan.num_partials += n;
  }
  return plan;
}

}  // namespace mlra::cuda
