// Paged prefill attention for 128-dim values: K/V caches with head dim 128 (MHA / GQA / MQA: keys
// and values in their own columns), 128-wide latents (MLRA-4 and GLA-4 per rank, absorbed form:
// keys [c | k_pe] of 192 dims, values c) and the expanded form of wide latents (MLA / GLA-2
// prefill: keys [K_nope | shared k_pe], values V, each head's K_nope and V up-projected from the
// latent for the step). 128 query rows per CTA, token-major (token, head) pairs
// of one sequence and one cache segment (query packing, split_kv_plan.h), so every cache tile
// loaded from L2/HBM feeds 128 rows instead of the decode kernels' 16 (K/V) or 64 (latent).
// Prefill is compute-bound, so the work goes to wgmma: two consumer warpgroups each own 64 rows
// and run S = Q.K^T (64 x 128 positions), the online softmax and O += P.V (64 x 128) on their
// own, sharing only the tile ring; a producer warp keeps kStages 128-position tiles (64-dim TMA
// boxes, 128-byte swizzle) in flight and refills a stage once all
// 8 consumer warps have released it (an empty mbarrier per stage). A warpgroup skips the score and
// P.V work of tiles that lie wholly past its rows' causal ends (it still releases them).
// Rows past the chunk's end are zeroed in shared memory by each consumer warpgroup before it reads
// a partial tile (both write the same zeros), so masked positions never meet a NaN in P.V.
// Output: the final rows, or split-KV partials (o, lse in log2) for launch_split_kv_merge.
// An FP8 cache (kFp8, fp8_e4m3.h; K/V and absorbed latent layouts): the producer's TMA brings a
// tile's codes into its upper blocks (latent: the second latent block, k_pe bf16 into its own;
// K/V: K codes into the first V block, V codes into the second); both consumer warpgroups then
// write code value x row scale as bf16 over the tile (fp8_tile.cuh; rows past the end as zeros),
// whatever work their rows have in it, and the wgmma chains run unchanged.
#include "kernels/prefill_attention.h"

#include <cuda_bf16.h>

#include "kernels/attention_tile.cuh"
#include "kernels/cache_tensor_map.h"
#include "kernels/cuda_check.h"
#include "kernels/dtype_access.cuh"
#include "kernels/fp8_tile.cuh"
#include "kernels/hopper_ptx.cuh"
#include "kernels/online_softmax.cuh"
#include "kernels/plan_grid_launch.cuh"

namespace mlra::cuda {
namespace {

using bf16 = __nv_bfloat16;

// Where a cached position's 64-dim blocks come from, per layout: the key blocks first (the query
// rows have as many), then the value blocks.
//   kKv:       keys [K low, K high] at a_offset, values [V low, V high] at v_offset (MHA/GQA/MQA).
//   kLatent:   keys [c low, c high, k_pe] ([c | k_pe] of a latent row), values c (absorbed form).
//   kSplitRope: keys [K low, K high] at a_offset plus k_pe at r_offset, values at v_offset (the
//              expanded form of MLA / GLA prefill: per-head K_nope and V, one shared k_pe).
enum class PrefillLayout { kKv, kLatent, kSplitRope };

template <PrefillLayout L>
struct PrefillConfig {
  static constexpr int kKeyBlocks = L == PrefillLayout::kKv ? 2 : 3;  // 64-dim blocks of a key
  static constexpr int kTileBlocks = L == PrefillLayout::kLatent ? 3 : kKeyBlocks + 2;
  static constexpr int kValueBlock0 = L == PrefillLayout::kLatent ? 0 : kKeyBlocks;
  static constexpr int kD = 128;           // value dims
  static constexpr int kM = kPrefillRows;  // query rows per CTA
  static constexpr int kBN = 128;          // positions per tile
  // Five 16 KB blocks per tile leave room for two stages only (227 KB).
  static constexpr int kStages = kTileBlocks == 5 ? 2 : 3;
  static constexpr int kConsumerThreads = 256;            // two warpgroups
  static constexpr int kThreads = kConsumerThreads + 32;  // + the producer warp
  static constexpr int kChunks = kTileBlocks * 8;         // 16 B chunks per cached position
  static constexpr size_t kQBytes = size_t(kM) * kKeyBlocks * 128;
  static constexpr size_t kStageBytes = size_t(kBN) * kTileBlocks * 128;
  // + 1 KB: the dynamic shared window is aligned up to the 1024 B swizzle atom in the kernel.
  static constexpr size_t kSmem = 1024 + kQBytes + kStages * kStageBytes + 16 * kStages;
  static_assert(kSmem <= 232448, "exceeds the 227 KB of shared memory per block");

  // Cache column of tile block kb of a head tile.
  __device__ static int column(int kb, const HeadTile& tile, const AttentionParams& p) {
    if (kb < 2) return tile.a_offset + kb * 64;
    if (L == PrefillLayout::kLatent || (L == PrefillLayout::kSplitRope && kb == 2))
      return p.r_offset;
    return tile.v_offset + (kb - kValueBlock0) * 64;
  }
};

// kFp8 (kKv and kLatent): cache_map is the code map, tail_map the bf16 k_pe's (kLatent).
template <PrefillLayout L, bool kPacked, bool kFp8>
__global__ void __launch_bounds__(PrefillConfig<L>::kThreads, 1)
    prefill_kernel(AttentionParams p, HeadTiles tiles, SplitKvPlan plan,
                   const __grid_constant__ CUtensorMap cache_map,
                   const __grid_constant__ CUtensorMap tail_map) {
#ifdef MLRA_LATENT_WGMMA
  using C = PrefillConfig<L>;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = aligned_smem(smem_raw);
  const int num_items = *plan.num_items;
  if (int(blockIdx.x) >= num_items) return;
  // Items are in token order, so a sequence's longest causal rows come last; CTAs start in
  // blockIdx order, and starting those first keeps them out of the last wave (tail effect).
  const SplitKvItem item = plan.items[num_items - 1 - int(blockIdx.x)];
  const HeadTile tile = tiles.tile[blockIdx.y];
  bf16* q_s = reinterpret_cast<bf16*>(smem);
  unsigned char* ring = smem + C::kQBytes;
  const uint32_t full_bar = smem_addr(ring + C::kStages * C::kStageBytes);
  const uint32_t empty_bar = full_bar + 8 * C::kStages;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;

  const int t0 = item.token, rows_valid = kPacked ? item.num_tokens * tile.rows : tile.rows;
  const int32_t* pages = p.page_indices + p.page_indptr[p.token_seq[t0]];
  const RowMap rows{t0, tile.rows};

  load_query_rows<C::kM, C::kKeyBlocks * 8>(smem_addr(q_s), p, tile, rows, rows_valid, tid,
                                            C::kThreads);
  cp_async_commit();
  if (tid == 0) {
    for (int s = 0; s < C::kStages; ++s) {
      mbar_init(full_bar + 8 * s, 1);
      mbar_init(empty_bar + 8 * s, C::kConsumerThreads / 32);
    }
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  cp_async_wait<0>();
  fence_proxy_async();  // the query rows (cp.async) are read by wgmma
  __syncthreads();

  const int n_tiles = (item.kv_end - item.kv_begin + C::kBN - 1) / C::kBN;
  if (warp == C::kConsumerThreads / 32) {
    // Producer: one lane requests tile j + kStages once every consumer warp released tile j.
    if (lane != 0) return;
    auto tma_tile = [&](int j, int stage) {
      if constexpr (kFp8) {
        const int start = item.kv_begin + j * C::kBN;
        const int boxes = tile_boxes<C::kBN>(p, start, item.kv_end);
        const uint32_t base = smem_addr(ring + stage * C::kStageBytes), bar = full_bar + 8 * stage;
        mbar_expect_tx(bar, uint32_t(boxes * 2 * p.box_rows * 128));  // two 128-byte parts a row
        if constexpr (L == PrefillLayout::kLatent) {
          tma_fp8_codes<C::kBN, 1>(base + C::kBN * 128, bar, &cache_map, p, pages, start, boxes,
                                   tile.a_offset);
          tma_fp8_tail(base + 2 * C::kBN * 128, bar, &tail_map, p, pages, start, boxes,
                       p.r_offset - int(p.fp8.quantized()));
        } else {
          tma_fp8_codes<C::kBN, 1>(base + 2 * C::kBN * 128, bar, &cache_map, p, pages, start, boxes,
                                   tile.a_offset);
          tma_fp8_codes<C::kBN, 1>(base + 3 * C::kBN * 128, bar, &cache_map, p, pages, start, boxes,
                                   tile.v_offset);
        }
        return;
      }
      tma_request_tile<C::kBN, C::kTileBlocks>(
          smem_addr(ring + stage * C::kStageBytes), full_bar + 8 * stage, &cache_map, p, pages,
          item.kv_begin + j * C::kBN, item.kv_end, [&](int kb) { return C::column(kb, tile, p); });
    };
    for (int j = 0; j < n_tiles; ++j) {
      const int stage = j % C::kStages;
      if (j >= C::kStages) mbar_wait(empty_bar + 8 * stage, uint32_t(j / C::kStages - 1) & 1u);
      tma_tile(j, stage);
    }
    return;
  }

  // Consumer warpgroup wg: rows 64 wg .. 64 wg + 63; warp rg of it: 16 of them.
  const int wg = __shfl_sync(0xffffffffu, warp / 4, 0), rg = warp % 4, wtid = tid % 128;
  int my_row[2], row_end[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    my_row[i] = 64 * wg + rg * 16 + lane / 4 + 8 * i;
    row_end[i] = row_kv_end<kPacked>(p, item, rows, my_row[i], rows_valid);
  }
  // The warpgroup's last causal end: tiles from there on are released without work.
  int wg_end = item.kv_begin;
  {
    const int last_row = min(64 * wg + 63, rows_valid - 1);
    if (last_row >= 64 * wg) wg_end = row_kv_end<kPacked>(p, item, rows, last_row, rows_valid);
  }
  float o[C::kD / 8][4];
#pragma unroll
  for (int i = 0; i < C::kD / 8; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m_r[2] = {-INFINITY, -INFINITY}, l_r[2] = {0.0f, 0.0f};
  const uint32_t q_addr = smem_addr(q_s) + wg * 64 * 128;  // row 64 wg of every 64-dim block

  for (int j = 0; j < n_tiles; ++j) {
    const int stage = j % C::kStages, start = item.kv_begin + j * C::kBN;
    const uint32_t kt = smem_addr(ring + stage * C::kStageBytes);
    if constexpr (kFp8) {
      // Both warpgroups dequantize the tile (tid < 256: row tid / 2); the scales before the wait.
      constexpr bool kLat = L == PrefillLayout::kLatent;
      const int pos = start + tid / 2, valid = item.kv_end - start;
      float scale[kLat ? 1 : 2];
      scale[0] = fp8_row_scale(p, pages, pos, item.kv_end, tile.a_offset / 128);
      if constexpr (!kLat)
        scale[1] = fp8_row_scale(p, pages, pos, item.kv_end, tile.v_offset / 128);
      mbar_wait(full_bar + 8 * stage, uint32_t(j / C::kStages) & 1u);
      fp8_tile_dequantize<C::kBN, C::kConsumerThreads, kLat ? 1 : 2, kLat ? 1 : 2>(
          kt, valid, scale, tid, [] { named_barrier(3, C::kConsumerThreads); });
      if (kLat && valid < C::kBN)
        zero_tail_rows<C::kBN>(kt + 2 * C::kBN * 128, valid, 8, tid, C::kConsumerThreads);
      fence_proxy_async();
      named_barrier(4, C::kConsumerThreads);
    } else {
      mbar_wait(full_bar + 8 * stage, uint32_t(j / C::kStages) & 1u);
    }
    if (start < wg_end) {
      const int valid = item.kv_end - start;
      if (!kFp8 && valid < C::kBN) {
        zero_tail_rows<C::kBN>(kt, valid, C::kChunks, wtid, 128);
        fence_proxy_async();
        named_barrier(1 + wg, 128);
      }
      float s[C::kBN / 8][4];
#pragma unroll
      for (int i = 0; i < C::kBN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
      wgmma_fence();
#pragma unroll
      for (int k0 = 0; k0 < C::kKeyBlocks * 64; k0 += 16) {
        const uint32_t in_block = uint32_t(k0 & 63) * 2;
        wgmma_n128(s, sw128_desc(q_addr + (k0 >> 6) * (C::kM * 128) + in_block),
                   sw128_desc(kt + (k0 >> 6) * (C::kBN * 128) + in_block), 1);
      }
      wgmma_commit();
      wgmma_wait_all();
      float corr[2];
      online_softmax_update<true>(s, start, row_end, p.scale_log2, m_r, l_r, corr);
      rescale_rows(o, corr);
      uint32_t a[C::kBN / 16][4];
#pragma unroll
      for (int kk = 0; kk < C::kBN / 16; ++kk) probability_fragment(s, kk, a[kk]);
      const uint32_t vt = kt + C::kValueBlock0 * C::kBN * 128;
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < C::kBN / 16; ++kk)
        wgmma_rs_n128_tb(o, a[kk], sw128_mn_desc(vt + kk * 16 * 128, C::kBN * 128));
      wgmma_commit();
      wgmma_wait_all();
    }
    __syncwarp();
    if (lane == 0) mbar_arrive(empty_bar + 8 * stage);
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l_r[i] += __shfl_xor_sync(0xffffffffu, l_r[i], 1);
    l_r[i] += __shfl_xor_sync(0xffffffffu, l_r[i], 2);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
    if (my_row[i] < rows_valid)
      write_row(p, tiles, item, tile, rows, my_row[i], o, i, (lane % 4) * 2, m_r[i], l_r[i],
                lane % 4 == 0);
#else
  __trap();  // device code is built for sm_90a only (hopper_ptx.cuh)
#endif
}

}  // namespace

template <PrefillLayout L, bool kFp8 = false>
void launch(const AttentionParams& p, const HeadTiles& tiles, const SplitKvPlan& plan,
            const CUtensorMap& map, const CUtensorMap& tail, cudaStream_t stream) {
  using C = PrefillConfig<L>;
  auto* kernel = plan.shape.tokens_per_item > 1 ? prefill_kernel<L, true, kFp8>
                                                : prefill_kernel<L, false, kFp8>;
  launch_plan_grid(kernel, plan, tiles, C::kThreads, C::kSmem, stream, p, tiles, plan, map, tail);
}

void launch_prefill_attention(const AttentionParams& p, const HeadTiles& tiles,
                              const SplitKvPlan& plan, AttentionPath path, cudaStream_t stream) {
  const bool latent = path == AttentionPath::kLatent128, split = path == AttentionPath::kKvRope128;
  MLRA_REQUIRE(latent || split || path == AttentionPath::kKv128,
               "prefill attention: K/V, latent-128 or K/V with a shared rope part");
  MLRA_REQUIRE(p.a_dim == 128 && p.v_dim == 128 && p.r_dim == (latent || split ? 64 : 0),
               "prefill attention: 128-dim values (and a 64-dim rope part)");
  MLRA_REQUIRE(p.q_dtype == DType::kBF16 && (p.cache_dtype == DType::kBF16 || p.fp8_cache),
               "prefill attention: q must be bf16, the cache bf16 or FP8");
  MLRA_REQUIRE(!p.fp8_cache || (!split && p.fp8.group_width == 128),
               "prefill attention: an FP8 cache holds 128-wide groups (K/V or latent layout)");
  MLRA_REQUIRE(p.rows_max == kPrefillRows, "prefill attention: 128 rows per tile");
  MLRA_REQUIRE(p.box_rows > 0 && 128 % p.box_rows == 0,
               "prefill attention: TMA box rows must divide the tile");
  for (int i = 0; i < tiles.count; ++i)
    MLRA_REQUIRE(tiles.tile[i].rows * plan.shape.tokens_per_item <= kPrefillRows &&
                     latent == (tiles.tile[i].a_offset == tiles.tile[i].v_offset),
                 "prefill attention: bad head tile");
  if (plan.shape.num_tokens == 0 || tiles.count == 0) return;
  CUtensorMap map{}, tail{};
  if (p.fp8_cache) {
    for (int i = 0; i < tiles.count; ++i)
      MLRA_REQUIRE(tiles.tile[i].a_offset % 128 == 0 && tiles.tile[i].v_offset % 128 == 0,
                   "prefill attention: an FP8 tile reads whole 128-wide groups");
    MLRA_REQUIRE(p.cache_rows > 0 &&
                     (latent ? make_fp8_cache_maps(p, map, tail) : make_fp8_code_map(p, map)),
                 "prefill attention: no tensor maps for the FP8 cache");
    if (latent) return launch<PrefillLayout::kLatent, true>(p, tiles, plan, map, tail, stream);
    return launch<PrefillLayout::kKv, true>(p, tiles, plan, map, map, stream);
  }
  MLRA_REQUIRE(p.cache_rows > 0 && make_cache_map(p, map),
               "prefill attention: no tensor map for the cache");
  if (latent)
    launch<PrefillLayout::kLatent>(p, tiles, plan, map, map, stream);
  else if (split)
    launch<PrefillLayout::kSplitRope>(p, tiles, plan, map, map, stream);
  else
    launch<PrefillLayout::kKv>(p, tiles, plan, map, map, stream);
}

}  // namespace mlra::cuda
