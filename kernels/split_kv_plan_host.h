// The split-KV plan's data types and its sequential host reference (no CUDA needed). The device
// computes the same plan in one CTA (split_kv_plan.cu, from device-resident positions, no host
// sync); this reference defines what that plan must be: CPU tests check its properties, and the
// GPU tests check the device plan against it entry for entry. See split_kv_plan.h for the scheme.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#ifdef __CUDACC__
#define MLRA_HOST_DEVICE __host__ __device__
#else
#define MLRA_HOST_DEVICE
#endif

namespace mlra::cuda {

constexpr int kPlanTile = 64;  // chunk boundaries are multiples of this many positions

struct SplitKvItem {
  int32_t token = 0;       // first token of the group
  int32_t num_tokens = 1;  // tokens token .. token + num_tokens - 1 (one sequence)
  int32_t kv_begin = 0;    // positions [kv_begin, kv_end) of the sequence; each row also stops
  int32_t kv_end = 0;      // at its own token's pos + 1
  int32_t partial = -1;    // partial slot, -1: write the final output
  bool operator==(const SplitKvItem&) const = default;
};

struct TokenMerge {
  int32_t first_partial = 0;
  int32_t count = 0;      // number of chunks; <= 1 means nothing to merge
  int32_t row_block = 0;  // the token's index in its group: its rows start at row_block * rows
  bool operator==(const TokenMerge&) const = default;
};

// Host-side sizes of a plan: how many items and partial slots it can hold (upper bounds that do
// not depend on the positions, so launches and workspace are sized without reading the device).
struct SplitKvShape {
  int32_t num_tokens = 0;
  int32_t target_chunks = 1;    // desired number of (token, chunk) items
  int32_t min_chunk_tiles = 2;  // smallest chunk, in kPlanTile units
  int32_t tokens_per_item = 1;  // query packing limit k (split_kv_plan.h); 1 for decode kernels
  int32_t max_items() const { return num_tokens + target_chunks; }
  MLRA_HOST_DEVICE int32_t max_partials() const { return 2 * target_chunks + 2; }
  // Tokens that need a merge: splitting happens only when all items fit target_chunks, so groups
  // of >= 2 chunks number at most target_chunks / 2, each with at most k tokens; and no more
  // than the step's tokens (it is the merge grid's width: a batch-1 decode launches one column).
  MLRA_HOST_DEVICE int32_t max_merges() const {
    const int32_t bound = tokens_per_item * (target_chunks / 2 + 1);
    return num_tokens < bound ? num_tokens : bound;
  }
};

// A whole plan on the host.
struct SplitKvPlanHost {
  int32_t chunk_tiles = 0;  // the chunk length chosen, in kPlanTile units
  std::vector<SplitKvItem> items;
  std::vector<TokenMerge> merges;     // one per token
  std::vector<int32_t> merge_tokens;  // tokens of multi-chunk groups, ascending
  int32_t num_partials = 0;
};

// The plan for these tokens (token_seq is read only when shape.tokens_per_item > 1).
SplitKvPlanHost plan_split_kv_host(const SplitKvShape& shape, std::span<const int32_t> token_pos,
                                   std::span<const int32_t> token_seq);

}  // namespace mlra::cuda
