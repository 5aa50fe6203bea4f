// Paged latent attention in the absorbed form for 128-wide latents (MLRA-4, GLA-4, MLRA-2; wider
// latents go to latent_wide_attention.cu): every query head of a latent group scores cached token
// tau with (q_lat . c_tau + q_pe . k_pe_tau) * scale and returns sum softmax * c_tau. One CTA
// serves up to 64 heads of one token over one split-KV chunk, so each cache tile is read from HBM
// once for all heads sharing the latent (64 at MLRA-4 TP4).
// Tiles of kBN cached rows ([c | k_pe], bf16) stream through a kStages-deep ring by TMA (one
// thread, a tensor map over the cache, an mbarrier per stage). Scores and P.V use wgmma (each
// cache tile read from shared memory once per warpgroup; P from registers, V MN-major); f32
// accumulators; online softmax in f32 (exp2 domain).
// Shared tiles use the 128-byte swizzle (hopper_ptx.cuh: swizzled_offset): the layout TMA writes
// and wgmma reads. Warp rg of the one warpgroup: rows 16rg..16rg+15, all 128 value columns.
// An FP8 cache (kFp8, fp8_e4m3.h): TMA brings a tile's 128 codes per row into the second latent
// block of the stage and its bf16 k_pe as usual; the warpgroup writes the code values, unscaled,
// as f16 over both latent blocks (one exact conversion per two codes, fp8_tile.cuh; rows past the
// end as zeros) and the tile's per-token scales to shared memory (0 past the end). The scales are
// folded out of the tile: the query's latent part is f16 (once per CTA, each row times a power of
// two, q_latent_to_f16), the latent scores an f16 wgmma chain beside the bf16 rope chain, and
// S = scale_t x row factor x (q'_lat . code_t) + q_pe . k_pe_t. P.V multiplies the f16 code values
// by P' = P x scale_t / g (online_softmax.cuh: fold_value_scales; g the row's running max of
// P x scale_t, so P' <= 1) and the result is the accumulator times g over l.
#include <cuda.h>
#include <cuda_bf16.h>

#include "kernels/cache_tensor_map.h"
#include "kernels/cuda_check.h"
#include "kernels/dtype_access.cuh"
#include "kernels/fp8_tile.cuh"
#include "kernels/hopper_ptx.cuh"
#include "kernels/latent_wide_attention.h"
#include "kernels/online_softmax.cuh"
#include "kernels/paged_attention_cuda.h"
#include "kernels/plan_grid_launch.cuh"

namespace mlra::cuda {
namespace {

using bf16 = __nv_bfloat16;

struct LatentConfig {
  static constexpr int kD = 128;    // latent width
  static constexpr int kR = 64;     // rope key dims
  static constexpr int kWarps = 4;  // 4 row groups of 16 heads: one warpgroup
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kM = 64;   // heads per CTA
  static constexpr int kBN = 64;  // cached rows per tile
  static constexpr int kStages = 3;
  static constexpr size_t kQBytes = size_t(kM) * (kD + kR) * 2;
  static constexpr size_t kStageBytes = size_t(kBN) * (kD + kR) * 2;
  static constexpr int kChunks = (kD + kR) / 8;  // 16 B chunks per cached row
  // + 1 KB: the dynamic shared window is aligned up to the 1024 B swizzle atom in the kernel.
  static constexpr size_t kSmem = 1024 + kQBytes + kStages * kStageBytes + 8 * kStages;
  // FP8: + the per-token scales of each stage's tile and the query rows' factors.
  static constexpr size_t kFp8Smem = kSmem + (kStages * kBN + kM) * sizeof(float);
  static constexpr int kMinBlocks = 2;
};

// Decode plans only (one token per item): multi-token steps of this width go to the prefill kernel
// (bf16) or the generic kernel (FP8). kFp8: cache_map holds the codes, tail_map the bf16 k_pe.
// Each tile runs in turn: conversion (FP8), barrier, scores, softmax, P.V. The wide kernel's
// pipelined schedule (tile j's P.V overlapping tile j + 1's conversion, latent_wide_attention.cu)
// measured 2-4% slower for this kernel (two CTAs per SM) on an H100: MLRA-4 TP4 FP8, 1M tokens,
// batch 16, 2390 -> 2467 us.
template <bool kFp8>
__global__ void __launch_bounds__(LatentConfig::kThreads, LatentConfig::kMinBlocks)
    latent_attention_kernel(AttentionParams p, HeadTiles tiles, SplitKvPlan plan,
                            const __grid_constant__ CUtensorMap cache_map,
                            const __grid_constant__ CUtensorMap tail_map) {
#ifdef MLRA_LATENT_WGMMA
  using C = LatentConfig;
  constexpr int D = C::kD;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  if (int(blockIdx.x) >= *plan.num_items) return;
  const SplitKvItem item = plan.items[blockIdx.x];
  const HeadTile tile = tiles.tile[blockIdx.y];
  bf16* q_s = reinterpret_cast<bf16*>(smem);
  bf16* k_s = reinterpret_cast<bf16*>(smem + C::kQBytes);
  const uint32_t full_bar = smem_addr(smem + C::kQBytes + C::kStages * C::kStageBytes);
  // FP8 only: [kStages][kBN] per-token scales, then the kM query rows' factors.
  float* tile_scale_s =
      reinterpret_cast<float*>(smem + C::kQBytes + C::kStages * C::kStageBytes + 8 * C::kStages);
  float* row_factor_s = tile_scale_s + C::kStages * C::kBN;
  const int tid = threadIdx.x, lane = tid % 32, rg = tid / 32;

  // Row r is head tile.head0 + r of the item's one token.
  const int t0 = item.token, rows_valid = tile.rows;
  const int32_t* pages = p.page_indices + p.page_indptr[p.token_seq[t0]];
  const bf16* q = static_cast<const bf16*>(p.q);
  const int shift = p.page_shift, mask = (1 << p.page_shift) - 1;

  // Query rows (zero past the tile's heads) in one cp.async group. Chunk index fastest: 8
  // consecutive threads copy one 128 B line of a row.
  for (int i = tid; i < C::kM * C::kChunks; i += C::kThreads) {
    const int row = i / C::kChunks, ch = i % C::kChunks;
    const uint32_t dst = smem_addr(q_s) + swizzled_offset<C::kM>(row, ch * 8);
    if (row < rows_valid)
      cp_async16(
          dst,
          q + int64_t(t0) * p.q_token_stride + int64_t(tile.head0 + row) * p.q_head_stride + ch * 8,
          16);
    else
      cp_async16(dst, q, 0);
  }

  const int n_tiles = (item.kv_end - item.kv_begin + C::kBN - 1) / C::kBN;
  // Thread 0 loads whole tiles, box by box (p.box_rows rows of one page, 64 dims). Boxes wholly
  // past the end are not requested; rows past the end are zeroed after arrival.
  auto tma_tile = [&](int j, int stage) {
    const int start = item.kv_begin + j * C::kBN, br = p.box_rows;
    const uint32_t base = smem_addr(k_s + stage * C::kBN * (D + C::kR)), bar = full_bar + 8 * stage;
    const int boxes = min(C::kBN, item.kv_end - start + br - 1) / br;
    if constexpr (kFp8) {
      // 128 codes (into the second latent block) + 64 bf16 per row.
      mbar_expect_tx(bar, uint32_t(boxes * 2 * br * 128));
      tma_fp8_codes<C::kBN, 1>(base + C::kBN * 128, bar, &cache_map, p, pages, start, boxes,
                               tile.a_offset);
      tma_fp8_tail(base + (D / 64) * C::kBN * 128, bar, &tail_map, p, pages, start, boxes,
                   p.r_offset - int(p.fp8.quantized()));
      return;
    }
    mbar_expect_tx(bar, uint32_t(boxes * (D / 64 + 1) * br * 128));
    for (int b = 0; b < boxes; ++b) {
      const int pos = start + b * br;
      const int row = (__ldg(pages + (pos >> shift)) << shift) + (pos & mask);
#pragma unroll
      for (int kb = 0; kb < D / 64; ++kb)
        tma_load_2d(base + kb * C::kBN * 128 + b * br * 128, &cache_map, tile.a_offset + kb * 64,
                    row, bar);
      tma_load_2d(base + (D / 64) * C::kBN * 128 + b * br * 128, &cache_map, p.r_offset, row, bar);
    }
  };
  // FP8: the scale of row tid / 2 of tile j (latent group tile.a_offset / 128), 0 past the end.
  auto row_scale = [&](int j) {
    return fp8_row_scale(p, pages, item.kv_begin + j * C::kBN + tid / 2, item.kv_end,
                         tile.a_offset / 128);
  };
  cp_async_commit();  // the query rows
  init_stage_barriers(full_bar, C::kStages);
  __syncthreads();
  if (tid == 0)
    for (int s = 0; s < C::kStages - 1 && s < n_tiles; ++s) tma_tile(s, s);
  cp_async_wait<0>();
  // FP8: this thread's rows' query factors (rows lane / 4 and lane / 4 + 8 of the warp's 16) and
  // running value-scale maxima.
  float row_factor[2] = {1.0f, 1.0f}, g_r[2] = {0.0f, 0.0f};
  if constexpr (kFp8) {
    __syncthreads();  // every thread's query rows have landed
    q_latent_to_f16<C::kM, D, C::kThreads>(smem_addr(q_s), row_factor_s, tid);
    __syncthreads();
#pragma unroll
    for (int i = 0; i < 2; ++i) row_factor[i] = row_factor_s[rg * 16 + lane / 4 + 8 * i];
  }

  float o[16][4];
#pragma unroll
  for (int i = 0; i < 16; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m_r[2] = {-INFINITY, -INFINITY}, l_r[2] = {0.0f, 0.0f};
  // Causal end of this thread's two rows (lane / 4 and lane / 4 + 8 of the warp's 16): the
  // item's, as all rows belong to one token.
  int row_end[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) row_end[i] = item.kv_end;
  const uint32_t q_addr = smem_addr(q_s);
  // FP8: the scale of tile j + 1 is read during tile j (a dependent load through the page list:
  // read at its tile's start, its latency would stall every tile).
  float scale_next = kFp8 ? row_scale(0) : 0.0f;

  for (int j = 0; j < n_tiles; ++j) {
    const int stage = j % C::kStages, valid = item.kv_end - (item.kv_begin + j * C::kBN);
    const float scale = scale_next;
    if constexpr (kFp8) scale_next = row_scale(j + 1);  // 0 past the end, no load
    mbar_wait(full_bar + 8 * stage, uint32_t(j / C::kStages) & 1u);
    if constexpr (kFp8) {
      fp8_tile_to_f16<C::kBN, C::kThreads, 1, 1>(smem_addr(k_s + stage * C::kBN * (D + C::kR)),
                                                 valid, tid, [] { __syncwarp(); });
      if (tid % 2 == 0) tile_scale_s[stage * C::kBN + tid / 2] = scale;
    }
    if (valid < C::kBN) {
      // Rows past the end hold stale shared memory or other tokens: zero them so that the masked
      // (zero) probabilities never meet a NaN or Inf in P.V (FP8: the latent part is zeroed by
      // the conversion already).
      const uint32_t base = smem_addr(k_s + stage * C::kBN * (D + C::kR));
      constexpr int kFirst = kFp8 ? D / 8 : 0, kN = C::kChunks - kFirst;
      for (int i = tid; i < (C::kBN - valid) * kN; i += C::kThreads) {
        const int r = valid + i / kN, ch = kFirst + i % kN;
        asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(
                         base + swizzled_offset<C::kBN>(r, ch * 8)),
                     "r"(0)
                     : "memory");
      }
    }
    fence_proxy_async();  // generic-proxy writes (cp.async rows, zeroed rows) are read by wgmma
    __syncthreads();
    const int next = j + C::kStages - 1;
    if (tid == 0 && next < n_tiles) tma_tile(next, next % C::kStages);
    const uint32_t kt = smem_addr(k_s + (j % C::kStages) * C::kBN * (D + C::kR));

    // Scores of all 64 rows over the 128 latent dims and the 64 rope dims: one wgmma chain
    // (FP8: the latent dims into their own f16 accumulator, folded in below).
    float s[C::kBN / 8][4], s_lat[C::kBN / 8][4];
#pragma unroll
    for (int i = 0; i < C::kBN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
    if constexpr (kFp8)
#pragma unroll
      for (int i = 0; i < C::kBN / 8; ++i)
        s_lat[i][0] = s_lat[i][1] = s_lat[i][2] = s_lat[i][3] = 0.0f;
    auto score_step = [&](int k0) {
      const uint32_t in_block = uint32_t(k0 & 63) * 2;
      const uint64_t da = sw128_desc(q_addr + (k0 >> 6) * (C::kM * 128) + in_block);
      const uint64_t db = sw128_desc(kt + (k0 >> 6) * (C::kBN * 128) + in_block);
      if constexpr (kFp8) {
        if (k0 < D) return wgmma_n64<true>(s_lat, da, db, 1);
      }
      wgmma_n64(s, da, db, 1);
    };
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) score_step(kk * 16);
#pragma unroll
    for (int kk = 0; kk < C::kR / 16; ++kk) score_step(D + kk * 16);
    wgmma_commit();
    wgmma_wait_all();

    if constexpr (kFp8) {
      float2 cs[C::kBN / 8];
      column_scales(tile_scale_s + stage * C::kBN, cs);
      scale_latent_scores(s_lat, cs, row_factor);
#pragma unroll
      for (int i = 0; i < C::kBN / 8; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) s[i][e] += s_lat[i][e];
      float corr[2];
      online_softmax_update<false>(s, item.kv_begin + j * C::kBN, row_end, p.scale_log2, m_r, l_r,
                                   corr);
      fold_value_scales(s, cs, g_r, corr);
      rescale_rows(o, corr);
    } else {
      online_softmax_step<false>(s, o, item.kv_begin + j * C::kBN, row_end, p.scale_log2, m_r, l_r);
    }

    // o += P . V with V = the tile's latent columns: 64 rows x 128 value columns, P from
    // registers, V read once per warpgroup from the swizzled tile (MN-major). FP8: P' and the
    // code values, f16.
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < C::kBN / 16; ++kk) {
      uint32_t a[4];
      if constexpr (kFp8) {
        probability_fragment_f16(s, kk, a);
        wgmma_rs_n128_tb<true>(o, a, sw128_mn_desc(kt + kk * 16 * 128, C::kBN * 128));
      } else {
        probability_fragment(s, kk, a);
        wgmma_rs_n128_tb(o, a, sw128_mn_desc(kt + kk * 16 * 128, C::kBN * 128));
      }
    }
    wgmma_commit();
    wgmma_wait_all();
  }

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l_r[i] += __shfl_xor_sync(0xffffffffu, l_r[i], 1);
    l_r[i] += __shfl_xor_sync(0xffffffffu, l_r[i], 2);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = rg * 16 + lane / 4 + 8 * i;
    if (row >= rows_valid) continue;
    // 0: a chunk past the row's end. FP8: the accumulator holds O / g.
    const float inv = (l_r[i] > 0.0f ? 1.0f / l_r[i] : 0.0f) * (kFp8 ? g_r[i] : 1.0f);
    if (item.partial < 0) {
      const int64_t base = int64_t(t0) * p.out_token_stride +
                           int64_t(tile.head0 + row) * p.out_head_stride + (lane % 4) * 2;
#pragma unroll
      for (int nb = 0; nb < 16; ++nb) {
        store_from_f32(p.out, p.out_dtype, base + nb * 8, o[nb][2 * i] * inv);
        store_from_f32(p.out, p.out_dtype, base + nb * 8 + 1, o[nb][2 * i + 1] * inv);
      }
    } else {
      const int64_t slot_row =
          (int64_t(item.partial) * tiles.count + blockIdx.y) * p.rows_max + row;
      float* dst = p.partial_o + slot_row * p.v_dim + (lane % 4) * 2;
#pragma unroll
      for (int nb = 0; nb < 16; ++nb)
        *reinterpret_cast<float2*>(dst + nb * 8) =
            make_float2(o[nb][2 * i] * inv, o[nb][2 * i + 1] * inv);
      if (lane % 4 == 0)
        p.partial_lse[slot_row] = l_r[i] > 0.0f ? m_r[i] + log2f(l_r[i]) : -INFINITY;
    }
  }
#else
  __trap();  // device code is built for sm_90a only (hopper_ptx.cuh)
#endif
}

}  // namespace

int latent_ctas_per_sm(int d_c) {
  return d_c == 128 ? LatentConfig::kMinBlocks : 1;
}

int latent_tile_rows(int d_c) {
  return d_c == 128 ? LatentConfig::kBN : latent_wide_tile_rows(d_c);
}

void launch_latent_attention(const AttentionParams& p, const HeadTiles& tiles,
                             const SplitKvPlan& plan, int d_c, cudaStream_t stream) {
  MLRA_REQUIRE(p.r_dim == 64 && p.a_dim == d_c && p.v_dim == d_c, "latent attention: dims");
  MLRA_REQUIRE(p.q_dtype == DType::kBF16 && (p.fp8_cache || p.cache_dtype == DType::kBF16),
               "latent attention: q must be bf16, the cache bf16 or FP8");
  MLRA_REQUIRE(p.rows_max == 64, "latent attention: 64 rows per tile");
  MLRA_REQUIRE(d_c != 128 || plan.shape.tokens_per_item == 1,
               "latent attention: multi-token steps of d_c 128 run on the prefill kernel");
  MLRA_REQUIRE(d_c == 128 || d_c == 256 || d_c == 512,
               "latent attention: d_c must be 128, 256 or 512");
  for (int i = 0; i < tiles.count; ++i)
    MLRA_REQUIRE(tiles.tile[i].rows <= 64 && tiles.tile[i].a_offset == tiles.tile[i].v_offset,
                 "latent attention: bad head tile");
  if (plan.shape.num_tokens == 0 || tiles.count == 0) return;
  CUtensorMap map{};
  MLRA_REQUIRE(p.box_rows > 0 && latent_tile_rows(d_c) % p.box_rows == 0,
               "latent attention: TMA box rows must divide the tile");
  if (p.fp8_cache) {
    for (int i = 0; i < tiles.count; ++i)
      MLRA_REQUIRE(tiles.tile[i].a_offset % d_c == 0 && p.fp8.group_width == d_c,
                   "latent attention: an FP8 tile reads one d_c-wide group");
    CUtensorMap tail{};
    MLRA_REQUIRE(p.cache_rows > 0 && make_fp8_cache_maps(p, map, tail),
                 "latent attention: no tensor maps for the FP8 cache");
    if (d_c != 128) return launch_latent_wide_fp8(p, tiles, plan, d_c, map, tail, stream);
    return launch_plan_grid(latent_attention_kernel<true>, plan, tiles, LatentConfig::kThreads,
                            LatentConfig::kFp8Smem, stream, p, tiles, plan, map, tail);
  }
  MLRA_REQUIRE(p.cache_rows > 0 && make_cache_map(p, map),
               "latent attention: no tensor map for the cache");
  if (d_c != 128) return launch_latent_wide(p, tiles, plan, d_c, map, stream);
  launch_plan_grid(latent_attention_kernel<false>, plan, tiles, LatentConfig::kThreads,
                   LatentConfig::kSmem, stream, p, tiles, plan, map, map);
}

}  // namespace mlra::cuda
