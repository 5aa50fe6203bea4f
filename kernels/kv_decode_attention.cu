// Paged decode attention for K/V caches with head dim 128 (MHA / GQA / MQA): the query heads that
// share one KV head (a HeadTile, <= 16 rows, padded to 16) are scored together, so every cached
// K and V row is read from HBM once per tile. Decode is memory-bound (one K and one V row of
// 256 B per position against 16 query rows), so the kernel is shaped to keep loads in flight:
// 64-position tiles (K 16 KB + V 16 KB) stream through a kStages-deep shared-memory ring by TMA
// (one thread, boxes of 64 dims, an mbarrier per stage); two CTAs fit on an SM, the split-KV
// target aims at one per SM (kv_split_target).
// Warp w of the 4 owns positions 16w..16w+15 of each tile: scores Q.K^T and P.V on tensor cores
// (mma.sync m16n8k16 bf16, Q fragments held in registers, K and V through ldmatrix from the
// 128-byte-swizzled tiles), f32 accumulators, its own online softmax in the exp2 domain. The four
// warp states are combined in shared memory at the end into the final output or the split-KV
// partial (o, lse in log2) that launch_split_kv_merge combines, exactly as the other kernels do.
// Rows past the chunk's end are zeroed after arrival and their scores masked, so stale shared
// memory or garbage past a sequence's end never meets P.V. Rows are token-major (token, head) pairs
// (split_kv_plan.h); decode plans have one token per item (multi-token steps run on the prefill
// kernel), but a packed row would be masked at its own token's end.
// An FP8 cache (kFp8, fp8_e4m3.h: one group per K head and per V head): TMA brings a tile's K and
// V codes into the stage's V blocks; the four warps write the code values, unscaled, as f16 over
// the K and V blocks (one exact conversion per two codes, fp8_tile.cuh; rows past the end as
// zeros) and the tile's per-token K and V scales to shared memory (0 past the end). The scales
// are folded out of the tile: Q is f16 (once per CTA, each row times a power of two,
// q_latent_to_f16), the scores an f16 mma times the row's factor and the token's K scale, and
// P.V multiplies the f16 V codes by P' = P x V scale / g (online_softmax.cuh: fold_value_scales,
// g the warp row's running max of P x V scale); each warp's state carries o x g to the combine.
#include <cuda.h>
#include <cuda_bf16.h>

#include <algorithm>

#include "kernels/attention_tile.cuh"
#include "kernels/cache_tensor_map.h"
#include "kernels/cuda_check.h"
#include "kernels/dtype_access.cuh"
#include "kernels/fp8_tile.cuh"
#include "kernels/hopper_ptx.cuh"
#include "kernels/online_softmax.cuh"
#include "kernels/paged_attention_cuda.h"
#include "kernels/plan_grid_launch.cuh"

namespace mlra::cuda {
namespace {

using bf16 = __nv_bfloat16;

struct KvConfig {
  static constexpr int kD = 128;         // head dim of K and V
  static constexpr int kM = kKvMaxRows;  // query rows per CTA (one mma row block)
  static constexpr int kWarps = 4;       // each owns 16 positions of a tile
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kBN = 16 * kWarps;  // positions per tile (= kPlanTile)
  static constexpr int kStages = 3;
  static constexpr int kChunks = 2 * kD / 8;  // 16 B chunks per position (K then V)
  static constexpr size_t kQBytes = size_t(kM) * kD * 2;
  static constexpr size_t kHalfBytes = size_t(kBN) * kD * 2;  // K (or V) of one tile
  static constexpr size_t kStageBytes = 2 * kHalfBytes;
  // Epilogue: per warp and row [m, l] and the unnormalized o (row stride padded against bank
  // conflicts), in the ring's memory once the loop is done.
  static constexpr int kOStride = kD + 8;
  static constexpr size_t kCombineBytes = size_t(kWarps) * kM * (kOStride + 2) * 4;
  // + 1 KB: the dynamic shared window is aligned up to the 1024 B swizzle atom in the kernel.
  static constexpr size_t kSmem = 1024 + kStages * kStageBytes + kQBytes + 8 * kStages;
  // FP8: + the per-token K and V scales of each stage's tile and the query rows' factors.
  static constexpr size_t kFp8Smem = kSmem + (2 * kStages * kBN + kM) * sizeof(float);
  static constexpr int kMinBlocks = 2;
};
static_assert(KvConfig::kBN == kPlanTile, "chunks start on tile boundaries");
static_assert(KvConfig::kCombineBytes <= KvConfig::kStages * KvConfig::kStageBytes,
              "the epilogue reuses the ring");

// kFp8: cache_map is the code map (make_fp8_code_map).
template <bool kFp8>
__global__ void __launch_bounds__(KvConfig::kThreads, KvConfig::kMinBlocks)
    kv_attention_kernel(AttentionParams p, HeadTiles tiles, SplitKvPlan plan,
                        const __grid_constant__ CUtensorMap cache_map) {
  using C = KvConfig;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = aligned_smem(smem_raw);
  if (int(blockIdx.x) >= *plan.num_items) return;
  const SplitKvItem item = plan.items[blockIdx.x];
  const HeadTile tile = tiles.tile[blockIdx.y];
  // [stage][K | V][kBN x 128, swizzled], then Q [16 x 128, swizzled], then the barriers.
  unsigned char* ring = smem;
  bf16* q_s = reinterpret_cast<bf16*>(smem + C::kStages * C::kStageBytes);
  const uint32_t full_bar = smem_addr(smem + C::kStages * C::kStageBytes + C::kQBytes);
  // FP8 only: [kStages][K | V][kBN] per-token scales, then the kM query rows' factors.
  float* tile_scale_s =
      reinterpret_cast<float*>(smem + C::kStages * C::kStageBytes + C::kQBytes + 8 * C::kStages);
  float* row_factor_s = tile_scale_s + 2 * C::kStages * C::kBN;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;

  const int t0 = item.token, rows_valid = item.num_tokens * tile.rows;
  const int32_t* pages = p.page_indices + p.page_indptr[p.token_seq[t0]];
  const RowMap rows{t0, tile.rows};

  // Query rows (zero past the tile's rows): their own cp.async group, first.
  load_query_rows<C::kM, C::kD / 8>(smem_addr(q_s), p, tile, rows, rows_valid, tid, C::kThreads);
  cp_async_commit();

  const int n_tiles = (item.kv_end - item.kv_begin + C::kBN - 1) / C::kBN;
  // Thread 0 loads a tile box by box (p.box_rows positions of one page, 64 dims; K low/high
  // then V low/high). Boxes wholly past the end are not requested; rows past it are zeroed later.
  auto tma_tile = [&](int j, int stage) {
    if constexpr (kFp8) {
      // K codes into block 2, V codes into block 3 (128 bytes per row each).
      const int start = item.kv_begin + j * C::kBN,
                boxes = tile_boxes<C::kBN>(p, start, item.kv_end);
      const uint32_t base = smem_addr(ring + stage * C::kStageBytes), bar = full_bar + 8 * stage;
      mbar_expect_tx(bar, uint32_t(boxes * 2 * p.box_rows * 128));
      tma_fp8_codes<C::kBN, 1>(base + 2 * C::kBN * 128, bar, &cache_map, p, pages, start, boxes,
                               tile.a_offset);
      tma_fp8_codes<C::kBN, 1>(base + 3 * C::kBN * 128, bar, &cache_map, p, pages, start, boxes,
                               tile.v_offset);
      return;
    }
    tma_request_tile<C::kBN, 4>(
        smem_addr(ring + stage * C::kStageBytes), full_bar + 8 * stage, &cache_map, p, pages,
        item.kv_begin + j * C::kBN, item.kv_end,
        [&](int kb) { return (kb < 2 ? tile.a_offset : tile.v_offset) + (kb & 1) * 64; });
  };
  // FP8: the K and V scales of row tid / 2 of tile j, 0 past the end. Tile j + 1's are read
  // during tile j (a dependent load through the page list: read at its tile's start, its latency
  // would stall every tile).
  auto kv_scales = [&](int j, float(&scale)[2]) {
    const int pos = item.kv_begin + j * C::kBN + tid / 2;
    scale[0] = fp8_row_scale(p, pages, pos, item.kv_end, tile.a_offset / C::kD);
    scale[1] = fp8_row_scale(p, pages, pos, item.kv_end, tile.v_offset / C::kD);
  };
  init_stage_barriers(full_bar, C::kStages);
  __syncthreads();
  if (tid == 0)
    for (int s = 0; s < C::kStages - 1 && s < n_tiles; ++s) tma_tile(s, s);
  cp_async_wait<0>();
  __syncthreads();
  // FP8: Q in f16 and this thread's rows' factors (rows lane / 4 and lane / 4 + 8) and running
  // value-scale maxima.
  float row_factor[2] = {1.0f, 1.0f}, g_r[2] = {0.0f, 0.0f};
  if constexpr (kFp8) {
    q_latent_to_f16<C::kM, C::kD, C::kThreads>(smem_addr(q_s), row_factor_s, tid);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 2; ++i) row_factor[i] = row_factor_s[lane / 4 + 8 * i];
  }

  // Q as mma A fragments (16 rows x 128 dims: 8 k-steps), held for the whole chunk.
  uint32_t qa[C::kD / 16][4];
  {
    const int a_row = (lane % 8) + ((lane / 8) & 1) * 8, a_col = (lane / 16) * 8;
#pragma unroll
    for (int kk = 0; kk < C::kD / 16; ++kk)
      ldmatrix_x4(qa[kk], smem_addr(q_s) + swizzled_offset<C::kM>(a_row, kk * 16 + a_col));
  }

  float o[C::kD / 8][4];
#pragma unroll
  for (int i = 0; i < C::kD / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m_r[2] = {-INFINITY, -INFINITY}, l_r[2] = {0.0f, 0.0f};
  const int b_row = 16 * warp + (lane % 8) + (lane / 16) * 8, b_col = ((lane / 8) & 1) * 8;
  const int v_row = 16 * warp + (lane % 8) + ((lane / 8) & 1) * 8, v_col = (lane / 16) * 8;
  // Causal end of this thread's two rows (lane / 4 and lane / 4 + 8).
  int row_end[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = lane / 4 + 8 * i;
    row_end[i] = row_kv_end<true>(p, item, rows, row, rows_valid);
  }

  float scale_next[2] = {0.0f, 0.0f};
  if constexpr (kFp8) kv_scales(0, scale_next);

  for (int j = 0; j < n_tiles; ++j) {
    const int stage = j % C::kStages;
    const int valid = item.kv_end - (item.kv_begin + j * C::kBN);
    if constexpr (kFp8) {
      const float scale[2] = {scale_next[0], scale_next[1]};
      kv_scales(j + 1, scale_next);
      mbar_wait(full_bar + 8 * stage, uint32_t(j / C::kStages) & 1u);
      fp8_tile_to_f16<C::kBN, C::kThreads, 2, 2>(smem_addr(ring + stage * C::kStageBytes), valid,
                                                 tid, [] { __syncwarp(); });
      if (tid % 2 == 0) {
        tile_scale_s[(2 * stage) * C::kBN + tid / 2] = scale[0];
        tile_scale_s[(2 * stage + 1) * C::kBN + tid / 2] = scale[1];
      }
#ifdef MLRA_LATENT_WGMMA
      fence_proxy_async();  // the stage's next TMA write follows these generic-proxy writes
#endif
    } else {
      mbar_wait(full_bar + 8 * stage, uint32_t(j / C::kStages) & 1u);
    }
    if (!kFp8 && valid < C::kBN) {
      // Rows past the end hold stale shared memory or other tokens' rows: zero them so that the
      // masked (zero) probabilities never meet a NaN or Inf in P.V.
      const uint32_t base = smem_addr(ring + stage * C::kStageBytes);
      zero_tail_rows<C::kBN>(base, valid, C::kChunks, tid, C::kThreads);
    }
    __syncthreads();  // tile j visible to all; everyone is done with tile j - 1's stage
    const int next = j + C::kStages - 1;
    if (tid == 0 && next < n_tiles) tma_tile(next, next % C::kStages);
    const uint32_t kt = smem_addr(ring + stage * C::kStageBytes), vt = kt + C::kHalfBytes;

    // Scores of this warp's 16 positions: s[nb] = positions 16w + 8nb .. +7.
    float s[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
    for (int kk = 0; kk < C::kD / 16; ++kk) {
      uint32_t b[4];
      ldmatrix_x4(b, kt + swizzled_offset<C::kBN>(b_row, kk * 16 + b_col));
      if constexpr (kFp8) {
        mma_f16(s[0], qa[kk], b[0], b[1]);
        mma_f16(s[1], qa[kk], b[2], b[3]);
      } else {
        mma_bf16(s[0], qa[kk], b[0], b[1]);
        mma_bf16(s[1], qa[kk], b[2], b[3]);
      }
    }

    // Online softmax over the warp's 16 positions (its slice may lie past the sequence's end).
    // FP8: the scores times the rows' factors and the K scales first, P' for the f16 V after.
    const int start = item.kv_begin + j * C::kBN + 16 * warp;
    if constexpr (kFp8) {
      float2 cs[2];
      column_scales(tile_scale_s + (2 * stage) * C::kBN + 16 * warp, cs);
      scale_latent_scores(s, cs, row_factor);
      float corr[2];
      online_softmax_update<true>(s, start, row_end, p.scale_log2, m_r, l_r, corr);
      column_scales(tile_scale_s + (2 * stage + 1) * C::kBN + 16 * warp, cs);
      fold_value_scales(s, cs, g_r, corr);
      rescale_rows(o, corr);
    } else {
      online_softmax_step<true>(s, o, start, row_end, p.scale_log2, m_r, l_r);
    }

    // o += P (16 x 16 positions) . V (16 positions x 128 dims).
    uint32_t pa[4];
    if constexpr (kFp8)
      probability_fragment_f16(s, 0, pa);
    else
      probability_fragment(s, 0, pa);
#pragma unroll
    for (int np = 0; np < C::kD / 16; ++np) {
      uint32_t b[4];
      ldmatrix_x4_trans(b, vt + swizzled_offset<C::kBN>(v_row, np * 16 + v_col));
      if constexpr (kFp8) {
        mma_f16(o[2 * np], pa, b[0], b[1]);
        mma_f16(o[2 * np + 1], pa, b[2], b[3]);
      } else {
        mma_bf16(o[2 * np], pa, b[0], b[1]);
        mma_bf16(o[2 * np + 1], pa, b[2], b[3]);
      }
    }
  }
  __syncthreads();  // the ring is free: every tile arrived and every warp is past its last tile

  // Combine the four warps: warp w's state of row r at st + (w * kM + r) * (kOStride + 2):
  // [m, l, o (unnormalized)...].
  float* st = reinterpret_cast<float*>(ring);
  constexpr int kS = C::kOStride + 2;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l_r[i] += __shfl_xor_sync(0xffffffffu, l_r[i], 1);
    l_r[i] += __shfl_xor_sync(0xffffffffu, l_r[i], 2);
    float* my = st + (warp * C::kM + lane / 4 + 8 * i) * kS;
    if (lane % 4 == 0) {
      my[0] = m_r[i];
      my[1] = l_r[i];
    }
    const float g = kFp8 ? g_r[i] : 1.0f;  // FP8: the accumulator holds o / g
#pragma unroll
    for (int nb = 0; nb < C::kD / 8; ++nb)
      *reinterpret_cast<float2*>(my + 2 + nb * 8 + (lane % 4) * 2) =
          make_float2(o[nb][2 * i] * g, o[nb][2 * i + 1] * g);
  }
  __syncthreads();
  for (int i = tid; i < rows_valid * C::kD; i += C::kThreads) {
    const int row = i / C::kD, d = i % C::kD;
    float mx = -INFINITY;
#pragma unroll
    for (int w = 0; w < C::kWarps; ++w) mx = fmaxf(mx, st[(w * C::kM + row) * kS]);
    float sum = 0.0f, acc = 0.0f;
#pragma unroll
    for (int w = 0; w < C::kWarps; ++w) {
      const float* ws = st + (w * C::kM + row) * kS;
      const float f = ws[1] > 0.0f ? exp2f(ws[0] - mx) : 0.0f;
      sum += ws[1] * f;
      acc += ws[2 + d] * f;
    }
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;  // 0: a chunk past the row's end
    if (item.partial < 0) {
      store_from_f32(p.out, p.out_dtype,
                     int64_t(t0 + row / tile.rows) * p.out_token_stride +
                         int64_t(tile.head0 + row % tile.rows) * p.out_head_stride + d,
                     acc * inv);
    } else {
      const int64_t slot_row =
          (int64_t(item.partial) * tiles.count + blockIdx.y) * p.rows_max + row;
      p.partial_o[slot_row * p.v_dim + d] = acc * inv;
      if (d == 0) p.partial_lse[slot_row] = sum > 0.0f ? mx + log2f(sum) : -INFINITY;
    }
  }
}

}  // namespace

int kv_split_target(int num_sms, int n_tiles, int num_tokens, int per_sm) {
  n_tiles = std::max(1, n_tiles);
  if (per_sm > 0) return std::max(1, num_sms * per_sm / n_tiles);
  // One CTA per SM keeps HBM busy once every SM has one (its two tiles in flight), and fewer
  // chunks mean fewer partials for the merge. But a token count that does not divide the SMs can
  // leave many idle (MHA TP8 batch 16: 96 of 132 busy): then take the fewest chunks per token
  // that busy every SM (<= 2 CTAs per SM, both resident).
  // A step with at least a CTA per SM without any split (prefill, big batches) keeps the
  // one-per-SM target, under which nothing splits (a target of tokens x chunks would overflow
  // the merge's per-token partial list: 8K GQA prefill tokens asked for 16K partial slots).
  const int64_t pairs = int64_t(n_tiles) * std::max(1, num_tokens);  // CTAs without a split
  const int64_t per_token = num_sms / pairs;  // chunks per token at one CTA per SM
  if (per_token == 0 || 10 * per_token * pairs >= 9 * int64_t(num_sms))
    return std::max(1, num_sms / n_tiles);
  return std::max(1, num_tokens) * int((num_sms + pairs - 1) / pairs);  // <= 2 per SM
}

void launch_kv_attention(const AttentionParams& p, const HeadTiles& tiles, const SplitKvPlan& plan,
                         cudaStream_t stream) {
  MLRA_REQUIRE(p.a_dim == KvConfig::kD && p.v_dim == KvConfig::kD && p.r_dim == 0,
               "kv attention: head dim 128, no rope part");
  MLRA_REQUIRE(p.q_dtype == DType::kBF16 && (p.fp8_cache || p.cache_dtype == DType::kBF16),
               "kv attention: q must be bf16, the cache bf16 or FP8");
  MLRA_REQUIRE(p.rows_max == KvConfig::kM, "kv attention: 16 rows per tile");
  for (int i = 0; i < tiles.count; ++i)
    MLRA_REQUIRE(tiles.tile[i].rows * plan.shape.tokens_per_item <= KvConfig::kM,
                 "kv attention: head tile too large");
  if (plan.shape.num_tokens == 0 || tiles.count == 0) return;
  CUtensorMap map{};
  MLRA_REQUIRE(p.box_rows > 0 && KvConfig::kBN % p.box_rows == 0,
               "kv attention: TMA box rows must divide the tile");
  if (p.fp8_cache) {
    for (int i = 0; i < tiles.count; ++i)
      MLRA_REQUIRE(tiles.tile[i].a_offset % KvConfig::kD == 0 &&
                       tiles.tile[i].v_offset % KvConfig::kD == 0 &&
                       p.fp8.group_width == KvConfig::kD,
                   "kv attention: an FP8 tile reads one 128-wide group for K and one for V");
    MLRA_REQUIRE(p.cache_rows > 0 && make_fp8_code_map(p, map),
                 "kv attention: no tensor map for the FP8 cache");
    return launch_plan_grid(kv_attention_kernel<true>, plan, tiles, KvConfig::kThreads,
                            KvConfig::kFp8Smem, stream, p, tiles, plan, map);
  }
  MLRA_REQUIRE(p.cache_rows > 0 && make_cache_map(p, map),
               "kv attention: no tensor map for the cache");
  launch_plan_grid(kv_attention_kernel<false>, plan, tiles, KvConfig::kThreads, KvConfig::kSmem,
                   stream, p, tiles, plan, map);
}

}  // namespace mlra::cuda
