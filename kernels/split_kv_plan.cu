// Split-KV plan (one CTA computes it from token_pos on the device) and the merge kernel that
// combines a token's chunk partials: o = sum_i 2^(lse_i - M) o_i / sum_i 2^(lse_i - M).
// Chunk length = the smallest (>= min_chunk tiles) for which the step has at most target_chunks
// items, so the step runs in one wave; each token's tiles are spread evenly over its chunks.
#include <algorithm>

#include "kernels/cuda_check.h"
#include "kernels/dtype_access.cuh"
#include "kernels/paged_attention_cuda.h"
#include "kernels/split_kv_plan.h"

namespace mlra::cuda {
namespace {

constexpr int kPlanThreads = 1024;

// Exclusive prefix sum over the block; *total gets the block sum. All threads must call it.
__device__ int block_exclusive_scan(int v, int* warp_sums, int* total) {
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int x = v;
  for (int o = 1; o < 32; o <<= 1) {
    const int y = __shfl_up_sync(0xffffffffu, x, o);
    if (lane >= o) x += y;
  }
  if (lane == 31) warp_sums[warp] = x;
  __syncthreads();
  if (warp == 0) {
    int w = lane < int(blockDim.x / 32) ? warp_sums[lane] : 0;
    for (int o = 1; o < 32; o <<= 1) {
      const int y = __shfl_up_sync(0xffffffffu, w, o);
      if (lane >= o) w += y;
    }
    warp_sums[lane] = w;  // inclusive warp prefix
  }
  __syncthreads();
  const int before = (warp > 0 ? warp_sums[warp - 1] : 0) + x - v;
  *total = warp_sums[blockDim.x / 32 - 1];
  __syncthreads();
  return before;
}

// Group of token t under query packing: t starts a group unless it continues the previous
// token's sequence inside the same aligned position block of k. Returns the group's token count
// for a start (0 for a non-start) and its causal length (last token's pos + 1).
__device__ int group_at(const int32_t* token_pos, const int32_t* token_seq, int n_tokens, int k,
                        int t, int* len) {
  auto continues = [&](int u) {  // does token u join the group of token u - 1?
    return k > 1 && token_seq[u] == token_seq[u - 1] && token_pos[u] > token_pos[u - 1] &&
           token_pos[u] / k == token_pos[u - 1] / k;
  };
  *len = 0;
  if (t >= n_tokens || (t > 0 && continues(t))) return 0;
  int n = 1;
  while (t + n < n_tokens && continues(t + n)) ++n;
  *len = max(token_pos[t + n - 1] + 1, 1);
  return n;
}

__global__ void __launch_bounds__(kPlanThreads)
    plan_kernel(const int32_t* token_pos, const int32_t* token_seq, SplitKvPlan plan) {
  __shared__ int warp_sums[32];
  __shared__ int max_tiles;
  __shared__ unsigned long long count;
  const int n_tokens = plan.shape.num_tokens, k = plan.shape.tokens_per_item;
  if (threadIdx.x == 0) max_tiles = 1;
  __syncthreads();
  for (int t = threadIdx.x; t < n_tokens; t += blockDim.x)
    atomicMax(&max_tiles, (max(token_pos[t] + 1, 1) + kPlanTile - 1) / kPlanTile);
  __syncthreads();
  // Smallest chunk (in tiles, >= min_chunk_tiles) whose item count fits target_chunks, so the
  // step runs in one wave of resident CTAs (a few leftover items would double the time).
  const long long target = plan.shape.target_chunks;
  int lo = plan.shape.min_chunk_tiles, hi = max(max_tiles, lo);
  while (lo < hi) {
    const int mid = lo + (hi - lo) / 2;
    __syncthreads();
    if (threadIdx.x == 0) count = 0;
    __syncthreads();
    unsigned long long mine = 0;
    for (int t = threadIdx.x; t < n_tokens; t += blockDim.x) {
      int len = 0;
      if (group_at(token_pos, token_seq, n_tokens, k, t, &len) > 0)
        mine += ((len + kPlanTile - 1) / kPlanTile + mid - 1) / mid;
    }
    atomicAdd(&count, mine);
    __syncthreads();
    if (count <= (unsigned long long)target)
      hi = mid;
    else
      lo = mid + 1;
  }
  const long long chunk_tiles = lo;

  int carry_items = 0, carry_partials = 0, carry_merges = 0;
  for (int base = 0; base < n_tokens; base += blockDim.x) {
    const int t = base + threadIdx.x;
    int len = 0;
    const int g = group_at(token_pos, token_seq, n_tokens, k, t, &len);
    // Spread the group's tiles evenly over its chunks: n chunks of `even` positions at most
    // chunk each; recounting n after rounding keeps every chunk non-empty.
    const long long tiles_t = (len + kPlanTile - 1) / kPlanTile;
    const long long n_cap = (tiles_t + chunk_tiles - 1) / chunk_tiles;
    const long long even_tiles = n_cap > 0 ? (tiles_t + n_cap - 1) / n_cap : 1;
    const long long even = even_tiles * kPlanTile;
    const int n = g > 0 ? int((tiles_t + even_tiles - 1) / even_tiles) : 0;
    int n_total = 0, p_total = 0, m_total = 0;
    const int off = block_exclusive_scan(n, warp_sums, &n_total);
    const int poff = block_exclusive_scan(n > 1 ? n : 0, warp_sums, &p_total);
    const int moff = block_exclusive_scan(n > 1 ? g : 0, warp_sums, &m_total);
    if (g > 0) {
      const int first_partial = carry_partials + poff;
      for (int c = 0; c < n; ++c) {
        SplitKvItem it;
        it.token = t;
        it.num_tokens = g;
        it.kv_begin = int(c * even);
        it.kv_end = int(min((long long)len, (c + 1) * even));
        it.partial = n > 1 ? first_partial + c : -1;
        plan.items[carry_items + off + c] = it;
      }
      for (int i = 0; i < g; ++i) {
        plan.merges[t + i] = TokenMerge{first_partial, n, i};
        // (The bound holds: splitting happens only when all items fit target_chunks.)
        if (n > 1 && carry_merges + moff + i < plan.shape.max_merges())
          plan.merge_tokens[carry_merges + moff + i] = t + i;
      }
    }
    carry_items += n_total;
    carry_partials += p_total;
    carry_merges += m_total;
  }
  if (threadIdx.x == 0) {
    *plan.num_items = carry_items;
    *plan.num_merges = min(carry_merges, plan.shape.max_merges());
  }
}

constexpr int kMergeThreads = 256;

__device__ float block_reduce(float v, bool is_max, float* red) {
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

// grid (merge list entries, tiles, head rows): combines the chunk partials of one (token, head)
// row. Only tokens of multi-chunk groups are listed, so a prefill step launches no empty blocks.
// A batch-1 decode has few rows (8 for GQA TP8, 64 for MLRA-4 TP4) over up to ~260 partials
// each, so the block spreads both the columns (float4 "units" when v_dim % 4 == 0) and the
// partials (groups of threads taking every pgroups-th partial, 8 loads in flight each) over its
// threads, then sums the groups in shared memory in a fixed order.
template <int kVec>
__global__ void __launch_bounds__(kMergeThreads)
    merge_kernel(AttentionParams p, HeadTiles tiles, SplitKvPlan plan) {
  extern __shared__ float smem[];  // weights [max_partials], then sums [pgroups][v_dim]
  __shared__ float red[kMergeThreads / 32];
  const int ti = blockIdx.y, row = blockIdx.z;
  if (int(blockIdx.x) >= *plan.num_merges) return;
  const int t = plan.merge_tokens[blockIdx.x];
  const TokenMerge m = plan.merges[t];
  const HeadTile tile = tiles.tile[ti];
  if (m.count <= 1 || row >= tile.rows) return;
  float* weights = smem;
  float* sums = smem + plan.shape.max_partials();
  const int packed_row = m.row_block * tile.rows + row;  // the row inside the group's CTA
  auto slot_row = [&](int i) {
    return (int64_t(m.first_partial + i) * tiles.count + ti) * p.rows_max + packed_row;
  };
  float mx = -INFINITY;
  for (int i = threadIdx.x; i < m.count; i += blockDim.x)
    mx = fmaxf(mx, p.partial_lse[slot_row(i)]);
  mx = block_reduce(mx, true, red);
  float sum = 0.0f;
  for (int i = threadIdx.x; i < m.count; i += blockDim.x) {
    // A chunk wholly past this row's causal end has lse -inf: weight 0 (the first chunk starts
    // at position 0, so mx is finite).
    const float w = exp2f(p.partial_lse[slot_row(i)] - mx);
    weights[i] = w;
    sum += w;
  }
  sum = block_reduce(sum, false, red);  // its barrier also publishes weights[]
  const float inv = 1.0f / sum;
  const float* po = p.partial_o + slot_row(0) * p.v_dim;
  const int64_t step = int64_t(tiles.count) * p.rows_max * p.v_dim;  // next slot, same row
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
    for (int d = threadIdx.x; d < min(units - u0, kMergeThreads) * kVec; d += blockDim.x) {
      const int c = u0 * kVec + d;
      float v = 0.0f;
      for (int g = 0; g < pgroups; ++g) v += sums[g * p.v_dim + c];
      store_from_f32(p.out, p.out_dtype, out_row + c, v * inv);
    }
    __syncthreads();  // sums is rewritten by the next pass
  }
}

size_t align256(size_t n) {
  return (n + 255) / 256 * 256;
}

}  // namespace

size_t split_kv_plan_bytes(const SplitKvShape& s) {
  return align256(sizeof(SplitKvItem) * size_t(s.max_items())) +
         align256(sizeof(TokenMerge) * size_t(s.num_tokens)) +
         align256(sizeof(int32_t) * size_t(s.max_merges())) + 256;
}

SplitKvPlan split_kv_plan_at(void* memory, const SplitKvShape& s) {
  char* p = static_cast<char*>(memory);
  SplitKvPlan plan;
  plan.shape = s;
  plan.items = reinterpret_cast<SplitKvItem*>(p);
  p += align256(sizeof(SplitKvItem) * size_t(s.max_items()));
  plan.merges = reinterpret_cast<TokenMerge*>(p);
  p += align256(sizeof(TokenMerge) * size_t(s.num_tokens));
  plan.merge_tokens = reinterpret_cast<int32_t*>(p);
  p += align256(sizeof(int32_t) * size_t(s.max_merges()));
  plan.num_items = reinterpret_cast<int32_t*>(p);
  plan.num_merges = plan.num_items + 1;
  return plan;
}

void launch_split_kv_plan(const int32_t* token_pos, const int32_t* token_seq,
                          const SplitKvPlan& plan, cudaStream_t stream) {
  MLRA_REQUIRE(plan.shape.target_chunks >= 1 && plan.shape.min_chunk_tiles >= 1 &&
                   plan.shape.tokens_per_item >= 1,
               "split-kv plan: bad shape");
  MLRA_REQUIRE(plan.shape.tokens_per_item == 1 || token_seq != nullptr,
               "split-kv plan: query packing needs token_seq");
  if (plan.shape.num_tokens == 0) return;
  plan_kernel<<<1, kPlanThreads, 0, stream>>>(token_pos, token_seq, plan);
  MLRA_CUDA_LAUNCH_CHECK();
}

void launch_split_kv_merge(const AttentionParams& p, const HeadTiles& tiles,
                           const SplitKvPlan& plan, cudaStream_t stream) {
  if (plan.shape.num_tokens == 0 || tiles.count == 0) return;
  // Weights, then one v_dim row of sums per partial group (<= 256 groups, v_dim <= 512).
  const bool vec4 = p.v_dim % 4 == 0;
  const int units = p.v_dim / (vec4 ? 4 : 1);
  const int pgroups = std::max(1, kMergeThreads / units);
  const size_t smem =
      sizeof(float) * (size_t(plan.shape.max_partials()) + size_t(pgroups) * size_t(p.v_dim));
  MLRA_REQUIRE(smem <= 48 * 1024, "split-kv merge: too many partials per token");
  int rows = 0;  // head rows of the widest tile (a block per (token, tile, row))
  for (int i = 0; i < tiles.count; ++i) rows = std::max(rows, int(tiles.tile[i].rows));
  const dim3 grid(unsigned(plan.shape.max_merges()), unsigned(tiles.count), unsigned(rows));
  if (vec4)
    merge_kernel<4><<<grid, kMergeThreads, smem, stream>>>(p, tiles, plan);
  else
    merge_kernel<1><<<grid, kMergeThreads, smem, stream>>>(p, tiles, plan);
  MLRA_CUDA_LAUNCH_CHECK();
}

}  // namespace mlra::cuda
