// The split-KV merge of one (token, head tile, head row): o = sum_i 2^(lse_i - M) o_i / sum_i
// 2^(lse_i - M) over the row's chunk partials, in one fixed order: that of 256 "merge threads"
// (per-thread partial sums, shuffle trees within each warp of them, the 8 warp results in order;
// columns by float4 units, each unit's partials in kPG groups summed in order). Two forms compute
// exactly these operations, so their results agree bit for bit: merge_row, a block of the 256 per
// row (the merge kernel, split_kv_plan.cu), and merge_row_warp, a warp per row (the decode
// attention kernels' inline merge, attention_inline_merge: the CTA that completes a split group
// merges all its rows, its warps in parallel).
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels/dtype_access.cuh"
#include "kernels/paged_attention_cuda.h"
#include "kernels/split_kv_plan.h"

namespace mlra::cuda {

constexpr int kMergeThreads = 256;

// Floats of shared memory merge_row needs: [8] warp results, weights [max_partials], then sums
// [pgroups][v_dim].
__host__ __device__ inline int merge_smem_floats(int max_partials, int v_dim) {
  const int units = v_dim % 4 == 0 ? v_dim / 4 : v_dim;
  const int pgroups = units >= kMergeThreads ? 1 : kMergeThreads / units;
  return 8 + max_partials + pgroups * v_dim;
}

// Reduces v over the block (max or sum) and returns the result to every thread: warp shuffles,
// then the 8 warp results in order.
__device__ __forceinline__ float merge_reduce(float v, bool is_max, float* red) {
  for (int o = 16; o > 0; o >>= 1) {
    const float y = __shfl_xor_sync(0xffffffffu, v, o);
    v = is_max ? fmaxf(v, y) : v + y;
  }
  if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = v;
  __syncthreads();
  float r = red[0];
  for (int i = 1; i < kMergeThreads / 32; ++i) r = is_max ? fmaxf(r, red[i]) : r + red[i];
  __syncthreads();
  return r;
}

// Merges the m.count partials of head row `row` of token t (tile ti of tiles_count, the token's
// rows at m.row_block * tile.rows in its group's CTA) into the output: the merge kernel's block
// of kMergeThreads threads. The block spreads both the columns (float4 "units" when kVec is 4)
// and the partials (groups of threads taking every pgroups-th partial, 8 loads in flight each)
// over its threads, then sums the groups in shared memory in a fixed order.
template <int kVec>
__device__ __forceinline__ void merge_row(const AttentionParams& p, int tiles_count, int ti,
                                          const HeadTile& tile, int t, const TokenMerge& m, int row,
                                          int max_partials, float* smem) {
  float* red = smem;
  float* weights = smem + 8;
  float* sums = weights + max_partials;
  const int packed_row = m.row_block * tile.rows + row;
  auto slot_row = [&](int i) {
    return (int64_t(m.first_partial + i) * tiles_count + ti) * p.rows_max + packed_row;
  };
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < m.count; i += kMergeThreads)
    mx = fmaxf(mx, p.partial_lse[slot_row(i)]);
  mx = merge_reduce(mx, true, red);
  float sum = 0.0f;
  for (int i = threadIdx.x; i < m.count; i += kMergeThreads) {
    // A chunk wholly past this row's causal end has lse -inf: weight 0 (the first chunk starts
    // at position 0, so mx is finite).
    const float w = exp2f(p.partial_lse[slot_row(i)] - mx);
    weights[i] = w;
    sum += w;
  }
  sum = merge_reduce(sum, false, red);  // its barrier also publishes weights[]
  const float inv = 1.0f / sum;
  const float* po = p.partial_o + slot_row(0) * p.v_dim;
  const int64_t step = int64_t(tiles_count) * p.rows_max * p.v_dim;  // next slot, same row
  const int units = p.v_dim / kVec;                                  // kVec columns each
  const int pgroups = max(1, kMergeThreads / units);
  for (int u0 = 0; u0 < units; u0 += kMergeThreads) {  // more than 256 units: several passes
    const int unit = u0 + int(threadIdx.x) % units, pg = int(threadIdx.x) / units;
    float acc[kVec] = {};
    if (pg < pgroups && unit < units) {
      const float* col = po + unit * kVec;
#pragma unroll 8
      for (int i = pg; i < m.count; i += pgroups) {
        const float w = weights[i];
        if constexpr (kVec == 4) {
          const float4 v = *reinterpret_cast<const float4*>(col + i * step);
          acc[0] += w * v.x, acc[1] += w * v.y, acc[2] += w * v.z, acc[3] += w * v.w;
        } else {
          acc[0] += w * col[i * step];
        }
      }
#pragma unroll
      for (int j = 0; j < kVec; ++j) sums[pg * p.v_dim + unit * kVec + j] = acc[j];
    }
    __syncthreads();
    const int64_t out_row = t * p.out_token_stride + int64_t(tile.head0 + row) * p.out_head_stride;
    for (int d = threadIdx.x; d < min(units - u0, kMergeThreads) * kVec; d += kMergeThreads) {
      const int c = u0 * kVec + d;
      float v = 0.0f;
      for (int g = 0; g < pgroups; ++g) v += sums[g * p.v_dim + c];
      store_from_f32(p.out, p.out_dtype, out_row + c, v * inv);
    }
    __syncthreads();  // sums is rewritten by the next pass
  }
}

// The same merge of one row by one warp, for the inline merge (rows in parallel, a warp each):
// lane l plays merge threads 32k + l (k = 0..7, its registers v[k]), so each shuffle tree and
// the sum of the 8 warp results in order are the block's; in the column pass lane l takes the
// units l, l + 32, ... and, for each, the kPG groups of partials (i = g, g + kPG, ... in order)
// that merge threads unit + g * kUnits sum, then sums the groups in order as the block's threads
// do. weights: the warp's own [count] floats of shared memory.
template <int kVdim>
__device__ __forceinline__ void merge_row_warp(const AttentionParams& p, int tiles_count, int ti,
                                               const HeadTile& tile, int t, const TokenMerge& m,
                                               int row, float* weights) {
  constexpr int kUnits = kVdim / 4, kPG = kMergeThreads / kUnits;
  static_assert(kUnits % 32 == 0 && kUnits * kPG == kMergeThreads, "v_dim 128, 256 or 512");
  const int lane = int(threadIdx.x % 32);
  const int packed_row = m.row_block * tile.rows + row;
  auto slot_row = [&](int i) {
    return (int64_t(m.first_partial + i) * tiles_count + ti) * p.rows_max + packed_row;
  };
  float v[kMergeThreads / 32];
#pragma unroll
  for (int k = 0; k < kMergeThreads / 32; ++k) {
    v[k] = -INFINITY;
    for (int i = 32 * k + lane; i < m.count; i += kMergeThreads)
      v[k] = fmaxf(v[k], __ldcg(p.partial_lse + slot_row(i)));
    for (int o = 16; o > 0; o >>= 1) v[k] = fmaxf(v[k], __shfl_xor_sync(0xffffffffu, v[k], o));
  }
  float mx = v[0];
  for (int k = 1; k < kMergeThreads / 32; ++k) mx = fmaxf(mx, v[k]);
#pragma unroll
  for (int k = 0; k < kMergeThreads / 32; ++k) {
    v[k] = 0.0f;
    for (int i = 32 * k + lane; i < m.count; i += kMergeThreads) {
      const float w = exp2f(__ldcg(p.partial_lse + slot_row(i)) - mx);
      weights[i] = w;
      v[k] += w;
    }
    for (int o = 16; o > 0; o >>= 1) v[k] = v[k] + __shfl_xor_sync(0xffffffffu, v[k], o);
  }
  float sum = v[0];
  for (int k = 1; k < kMergeThreads / 32; ++k) sum = sum + v[k];
  const float inv = 1.0f / sum;
  __syncwarp();  // weights[] of every lane
  const float* po = p.partial_o + slot_row(0) * kVdim;
  const int64_t step = int64_t(tiles_count) * p.rows_max * kVdim;  // next slot, same row
  const int64_t out_row = t * p.out_token_stride + int64_t(tile.head0 + row) * p.out_head_stride;
#pragma unroll 1
  for (int unit = lane; unit < kUnits; unit += 32) {
    float acc[kPG][4];
#pragma unroll
    for (int g = 0; g < kPG; ++g) acc[g][0] = acc[g][1] = acc[g][2] = acc[g][3] = 0.0f;
    const float* col = po + unit * 4;
    constexpr int kUnroll = 8 / kPG;  // 8 loads in flight
#pragma unroll kUnroll
    for (int i0 = 0; i0 < m.count; i0 += kPG) {
#pragma unroll
      for (int g = 0; g < kPG; ++g) {
        const int i = i0 + g;
        if (i < m.count) {
          const float w = weights[i];
          const float4 c = __ldcg(reinterpret_cast<const float4*>(col + i * step));
          acc[g][0] += w * c.x, acc[g][1] += w * c.y, acc[g][2] += w * c.z, acc[g][3] += w * c.w;
        }
      }
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      float s = 0.0f;
#pragma unroll
      for (int g = 0; g < kPG; ++g) s += acc[g][j];
      store_from_f32(p.out, p.out_dtype, out_row + unit * 4 + j, s * inv);
    }
  }
  __syncwarp();  // weights[] is rewritten by the warp's next row
}

// Inline merge (attention_inline_merge), called by every thread of a decode attention CTA once
// its rows' partials are written (item.partial >= 0): each CTA of a split (token group, head
// tile) group bumps the group's counter; the one that completes the group merges all its rows,
// a warp per row (merge_row_warp: the merge kernel's result, bit for bit), and resets the
// counter to 0 for the next launch (graph replays included). It takes 1 + max_partials floats per
// warp at the start of the dynamic shared memory (split_kv_inline_merge_smem_bytes; addressed
// from its own symbol, so no pointer stays live through the caller's main loop): the caller must
// be done with it.
// The release: every thread fences its partial writes before the CTA's arrival; the acquire: the
// last CTA fences after seeing the count, then reads the partials through L2. The CTA's item is
// read again here (through L2: a plain load could be merged with the kernel's first read) rather
// than kept in registers through the caller's main loop.
template <int kThreads, int kVdim>
__device__ __forceinline__ void merge_if_last(const AttentionParams& p, const HeadTiles& tiles,
                                              const SplitKvPlan& plan) {
  extern __shared__ __align__(16) float merge_smem[];
  const SplitKvItem* at = plan.items + blockIdx.x;
  SplitKvItem item;
  item.partial = __ldcg(&at->partial);
  if (item.partial < 0) return;
  item.token = __ldcg(&at->token);
  item.num_tokens = __ldcg(&at->num_tokens);
  const HeadTile tile = tiles.tile[blockIdx.y];
  const TokenMerge first = plan.merges[item.token];
  int* counter = p.merge_counters + int64_t(first.first_partial) * tiles.count + blockIdx.y;
  int* last = reinterpret_cast<int*>(merge_smem);
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) *last = atomicAdd(counter, 1) == first.count - 1;
  __syncthreads();
  if (!*last) return;
  __threadfence();
  const int warp = int(threadIdx.x / 32), rows = item.num_tokens * tile.rows;
  float* weights = merge_smem + 1 + warp * plan.shape.max_partials();
  for (int r = warp; r < rows; r += kThreads / 32) {
    const int u = r / tile.rows;
    merge_row_warp<kVdim>(p, tiles.count, int(blockIdx.y), tile, item.token + u,
                          plan.merges[item.token + u], r % tile.rows, weights);
  }
  __syncthreads();  // every row merged before the counter is reset
  if (threadIdx.x == 0) *counter = 0;
}

}  // namespace mlra::cuda
