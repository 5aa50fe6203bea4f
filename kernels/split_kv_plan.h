// Split-KV (flash-decoding) work plan shared by the paged-attention kernels.
// A plan cuts every token's causal range [0, pos + 1) into chunks of whole 64-position tiles so
// that (tokens x chunks x head tiles) fills the GPU; chunks of one token write partial (o, lse)
// that the merge kernel combines. The plan is computed ON THE DEVICE from token_pos (page tables
// and positions live in device memory; no host sync), once per step by whoever owns the step, and
// reused by every layer's run; the backend also recomputes it per call when none is supplied.
// Query packing (prefill): with tokens_per_item = k > 1, up to k consecutive tokens of one
// sequence whose positions lie in one aligned block of k (pos / k equal, strictly increasing) share
// their items: one CTA scores all their rows against each cache tile it loads (rows = token-major
// (token, head) pairs, each row masked at its own causal end). Decode batches (one token per
// sequence) plan exactly as with k = 1.
// Data types and the sequential host reference: split_kv_plan_host.h.
// Invariant: items of one group are consecutive; a group with one chunk writes the final output
// directly (partial == -1); only tokens of multi-chunk groups appear in the merge list.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "kernels/split_kv_plan_host.h"

namespace mlra::cuda {

// Device buffers of a plan (sized by SplitKvShape).
struct SplitKvPlan {
  SplitKvShape shape;
  SplitKvItem* items = nullptr;     // [max_items]
  TokenMerge* merges = nullptr;     // [num_tokens]
  int32_t* merge_tokens = nullptr;  // [max_merges]: tokens whose group has >= 2 chunks
  int32_t* num_items = nullptr;     // [1]
  int32_t* num_merges = nullptr;    // [1]
};

// Bytes of device memory a plan of this shape needs (items, merges, counter; 256-aligned).
size_t split_kv_plan_bytes(const SplitKvShape& shape);
// Lays a plan's arrays out in `memory` (split_kv_plan_bytes(shape) bytes of device memory).
SplitKvPlan split_kv_plan_at(void* memory, const SplitKvShape& shape);
// Fills the plan from token_pos [num_tokens] (device) on the stream; token_seq [num_tokens] is
// read only when tokens_per_item > 1.
void launch_split_kv_plan(const int32_t* token_pos, const int32_t* token_seq,
                          const SplitKvPlan& plan, cudaStream_t stream);

}  // namespace mlra::cuda
