// Paged latent attention for wide latents (d_c 256: GLA-2, 512: MLA) in the absorbed form, split
// between two consumer warpgroups the FlashMLA way:
// - warpgroup 0 scores each 64-row cache tile for all 64 query rows over the full key width
//   (d_c + 64 rope dims: one wgmma chain, no partial-score reduction), runs the online softmax,
//   publishes the bf16 probabilities and the rows' rescale factors in shared memory, then
//   multiplies P into value columns [0, d_c/2);
// - warpgroup 1 rescales its accumulators and multiplies the same P into columns [d_c/2, d_c).
// Why not d_c/128 warpgroups that each score a slice of the key dims: they must sum the slices
// through shared memory (128 KB of shared traffic per 32-row MLA tile) and repeat the softmax, and
// such a kernel ran latency-bound at 39% DRAM utilisation for MLA. Here the per-tile work is one S
// chain plus two P.V halves that run concurrently; each warpgroup holds a 64 x d_c/2 accumulator.
// Tiles arrive by TMA (thread 0, one mbarrier per stage, the 128-byte swizzle); a stage is refilled
// once both warpgroups are done with it. Named barriers: 1 = P and factors published (wg0 arrives,
// wg1 syncs), 2 = tile released (bf16: wg1 arrives, wg0 syncs), 3 = wg0 internal (bf16), 4 =
// final row sums, 6 = tile j + 1 converted and tile j released (FP8: all 256 threads). Each
// barrier alternates strictly between its two roles, so no phase can be joined early.
// An FP8 cache (kFp8, fp8_e4m3.h): TMA brings a tile's codes (d_c per row) into the upper half of
// the stage's latent blocks and its bf16 k_pe into the rope block; both warpgroups then write the
// code values, unscaled, as f16 over the latent blocks (one exact conversion per two codes,
// fp8_tile.cuh; rows past the end as zeros) and the tile's per-token scales to shared memory (0
// past the end). The scales are folded out of the tile: the query's latent part is f16 (once per
// CTA, each row times a power of two, q_latent_to_f16); warpgroup 0 scores the latent dims with
// an f16 chain, multiplies the scores by scale_t x row factor, then accumulates the rope dims'
// bf16 chain onto them (one accumulator: the registers hold o and s already). P' = P x scale_t /
// g in f16 (online_softmax.cuh: fold_value_scales, g the row's running max of P x scale_t) is
// what both warpgroups multiply into the f16 code values and what warpgroup 0 publishes; the
// published factors carry g_old / g_new, and each row's result is its accumulator times g over l.
// The FP8 kernel's schedule is pipelined: run in turn per tile (conversion by both warpgroups,
// barrier, S and softmax, P.V, barrier), the tensor cores would idle while the CTA converts.
// Instead both warpgroups convert tile 0 before the loop; in iteration j each warpgroup issues
// tile j's P.V and, while those wgmmas run, converts its share of tile j + 1 (the other stage),
// then waits for them; one CTA barrier (6) then marks tile j + 1 converted and tile j released
// (its stage takes tile j + 2). The refill waits for tile j's P.V, so tile j + 2 must arrive
// within tile j + 1's S and softmax. Measured on an H100 (MLA, d_c 512), 1.10-1.12x faster than
// the serial order at 256K-1M tokens, batch 1-16. The latent-128 kernel keeps the serial order
// (latent_decode_attention.cu).
#include "kernels/latent_wide_attention.h"

#include <cuda_bf16.h>

#include <type_traits>

#include "kernels/attention_tile.cuh"
#include "kernels/cuda_check.h"
#include "kernels/dtype_access.cuh"
#include "kernels/fp8_tile.cuh"
#include "kernels/hopper_ptx.cuh"
#include "kernels/online_softmax.cuh"
#include "kernels/plan_grid_launch.cuh"

namespace mlra::cuda {
namespace {

using bf16 = __nv_bfloat16;

template <int D>
struct WideConfig {
  static constexpr int kR = 64;  // rope key dims
  static constexpr int kM = 64;  // query rows per CTA
  // Cached rows per tile: 128 where two stages of them fit (fewer softmax steps and barriers
  // per byte), else 64.
  static constexpr int kBN = D == 256 ? 128 : 64;
  static constexpr int kK = D + kR;        // key width
  static constexpr int kChunks = kK / 8;   // 16 B chunks per cached row
  static constexpr int kNO = D / 16;       // accumulator fragments: 64 x D/2 per warpgroup
  static constexpr int kHalves = D / 256;  // n128 wgmmas per P.V k-step and warpgroup
  static constexpr int kStages = 2;
  static constexpr int kThreads = 256;
  static constexpr size_t kQBytes = size_t(kM) * kK * 2;
  static constexpr size_t kStageBytes = size_t(kBN) * kK * 2;
  static constexpr size_t kPBytes = size_t(kM) * kBN * 2;
  static constexpr size_t kRowBytes = 2 * kM * sizeof(float);  // factors + final row sums
  // + 1 KB: the dynamic shared window is aligned up to the 1024 B swizzle atom in the kernel.
  static constexpr size_t kSmem =
      1024 + kQBytes + kStages * kStageBytes + kPBytes + kRowBytes + 8 * kStages;
  // FP8: + the per-token scales of each stage's tile and the query rows' factors.
  static constexpr size_t kFp8Smem = kSmem + (kStages * kBN + kM) * sizeof(float);
  static_assert(kFp8Smem <= 232448, "exceeds the 227 KB of shared memory per block");
};

#ifdef MLRA_LATENT_WGMMA
// The n128 slab h (value columns 128h..128h+127 of this warpgroup) of a 64 x D/2 accumulator.
template <int NO>
__device__ __forceinline__ float (&slab(float (&o)[NO][4], int h))[16][4] {
  return *reinterpret_cast<float(*)[16][4]>(&o[16 * h]);
}
#endif

// kFp8: cache_map holds the codes, tail_map the bf16 k_pe (cache_tensor_map.h); the pipelined
// schedule of the file comment's last paragraph.
template <int D, bool kPacked, bool kFp8>
__global__ void __launch_bounds__(256, 1)
    latent_wide_kernel(AttentionParams p, HeadTiles tiles, SplitKvPlan plan,
                       const __grid_constant__ CUtensorMap cache_map,
                       const __grid_constant__ CUtensorMap tail_map) {
#ifdef MLRA_LATENT_WGMMA
  using C = WideConfig<D>;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  if (int(blockIdx.x) >= *plan.num_items) return;
  const SplitKvItem item = plan.items[blockIdx.x];
  const HeadTile tile = tiles.tile[blockIdx.y];
  bf16* q_s = reinterpret_cast<bf16*>(smem);
  bf16* k_s = reinterpret_cast<bf16*>(smem + C::kQBytes);
  unsigned char* p_s = smem + C::kQBytes + C::kStages * C::kStageBytes;
  float* corr_s = reinterpret_cast<float*>(p_s + C::kPBytes);
  float* rowsum_s = corr_s + C::kM;
  const uint32_t full_bar = smem_addr(p_s + C::kPBytes + C::kRowBytes);
  // FP8 only: [kStages][kBN] per-token scales, then the kM query rows' factors.
  float* tile_scale_s = reinterpret_cast<float*>(p_s + C::kPBytes + C::kRowBytes + 8 * C::kStages);
  float* row_factor_s = tile_scale_s + C::kStages * C::kBN;
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  // Broadcast from lane 0 so that the compiler sees the warpgroup index as warp-uniform (else
  // it treats the warpgroup branches as divergent and serialises their wgmmas).
  const int wg = __shfl_sync(0xffffffffu, warp / 4, 0), rg = warp % 4;

  // Rows are token-major (token, head) pairs (query packing, split_kv_plan.h).
  const int t0 = item.token, rows_valid = kPacked ? item.num_tokens * tile.rows : tile.rows;
  const int32_t* pages = p.page_indices + p.page_indptr[p.token_seq[t0]];
  const bf16* q = static_cast<const bf16*>(p.q);
  const int shift = p.page_shift, mask = (1 << p.page_shift) - 1;

  // Query rows (zero past the tile's rows) by every thread's cp.async; 8 consecutive threads copy
  // one 128 B line of a row.
  for (int i = tid; i < C::kM * C::kChunks; i += C::kThreads) {
    const int row = i / C::kChunks, ch = i % C::kChunks;
    const uint32_t dst = smem_addr(q_s) + swizzled_offset<C::kM>(row, ch * 8);
    const int token = kPacked ? t0 + row / tile.rows : t0;
    const int head = kPacked ? row % tile.rows : row;
    if (row < rows_valid)
      cp_async16(dst,
                 q + int64_t(token) * p.q_token_stride +
                     int64_t(tile.head0 + head) * p.q_head_stride + ch * 8,
                 16);
    else
      cp_async16(dst, q, 0);
  }
  cp_async_commit();

  const int n_tiles = (item.kv_end - item.kv_begin + C::kBN - 1) / C::kBN;
  // Thread 0 loads whole tiles, box by box (p.box_rows rows of one page, 64 dims). Boxes wholly
  // past the end are not requested; rows past the end are zeroed after arrival.
  auto tma_tile = [&](int j, int stage) {
    const int start = item.kv_begin + j * C::kBN, br = p.box_rows;
    const uint32_t base = smem_addr(k_s + stage * C::kBN * C::kK), bar = full_bar + 8 * stage;
    const int boxes = min(C::kBN, item.kv_end - start + br - 1) / br;
    if constexpr (kFp8) {
      // D codes and 64 bf16 per row: D / 128 + 1 boxes of 128 bytes per row.
      mbar_expect_tx(bar, uint32_t(boxes * (D / 128 + 1) * br * 128));
      tma_fp8_codes<C::kBN, D / 128>(base + (D / 128) * C::kBN * 128, bar, &cache_map, p, pages,
                                     start, boxes, tile.a_offset);
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
  // FP8: both warpgroups convert tile j in its stage (rows past the end zeroed, the rope block's
  // too) and store its per-token scales; the caller fences and synchronises (barrier 6) before
  // the wgmmas read it. The scale of this thread's row of a tile is read one conversion ahead (a
  // dependent load through the page list: read at its conversion, its latency would stall every
  // tile).
  const int group = kFp8 ? tile.a_offset / p.fp8.group_width : 0;
  auto fp8_scale = [&](int j) {
    return fp8_row_scale(p, pages, item.kv_begin + j * C::kBN + tid / (256 / C::kBN), item.kv_end,
                         group);
  };
  auto convert_tile = [&](int j, float scale) {
    const int stage = j % C::kStages, valid = item.kv_end - (item.kv_begin + j * C::kBN);
    const uint32_t kt = smem_addr(k_s + stage * C::kBN * C::kK);
    mbar_wait(full_bar + 8 * stage, uint32_t(j / C::kStages) & 1u);
    fp8_tile_to_f16<C::kBN, 256, D / 128, D / 128>(kt, valid, tid, [] { __syncwarp(); });
    if (tid % (256 / C::kBN) == 0) tile_scale_s[stage * C::kBN + tid / (256 / C::kBN)] = scale;
    if (valid < C::kBN) zero_tail_rows<C::kBN>(kt + (D / 64) * C::kBN * 128, valid, 8, tid, 256);
  };
  init_stage_barriers(full_bar, C::kStages);
  __syncthreads();
  if (tid == 0)
    for (int s = 0; s < C::kStages && s < n_tiles; ++s) tma_tile(s, s);
  cp_async_wait<0>();
  if constexpr (kFp8) {
    __syncthreads();  // every thread's query rows have landed
    q_latent_to_f16<C::kM, D, C::kThreads>(smem_addr(q_s), row_factor_s, tid);
  }
  fence_proxy_async();  // the query rows (cp.async; FP8: converted) are read by wgmma
  __syncthreads();

  float o[C::kNO][4];
#pragma unroll
  for (int i = 0; i < C::kNO; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  // Rows lane/4 and lane/4 + 8 of this warp's 16 (the same rows in both warpgroups).
  int my_row[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) my_row[i] = rg * 16 + lane / 4 + 8 * i;
  const uint32_t p_addr = smem_addr(p_s);
  // This warpgroup's value columns start at 64-dim block wg * D/128 of the tile.
  const int v_block0 = wg * (D / 128);
  float m_r[2] = {-INFINITY, -INFINITY}, l_r[2] = {0.0f, 0.0f};
  // FP8 (warpgroup 0): the rows' running value-scale maxima.
  float g_r[2] = {0.0f, 0.0f};
  auto stage_addr = [&](int j) { return smem_addr(k_s + (j % C::kStages) * C::kBN * C::kK); };
  // o += P . V over this warpgroup's value columns of the tile at kt (P as A fragments, V read
  // MN-major from the swizzled tile); both warpgroups run it on every tile. issue_pv leaves the
  // wgmmas in flight (FP8: the caller converts the next tile, then waits); multiply_pv waits.
  auto issue_pv = [&](const uint32_t(&a)[C::kBN / 16][4], uint32_t kt) {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < C::kBN / 16; ++kk)
#pragma unroll
      for (int h = 0; h < C::kHalves; ++h)
        wgmma_rs_n128_tb<kFp8>(
            slab(o, h), a[kk],
            sw128_mn_desc(kt + (v_block0 + 2 * h) * (C::kBN * 128) + kk * 16 * 128, C::kBN * 128));
    wgmma_commit();
  };
  auto multiply_pv = [&](const uint32_t(&a)[C::kBN / 16][4], uint32_t kt) {
    issue_pv(a, kt);
    wgmma_wait_all();
  };
  // Warpgroup 0's part of tile j: S = Q . K^T over the full key width (one chain of 64 x kBN x
  // 16 wgmmas; FP8: the f16 latent chain, its scores scaled, then the bf16 rope chain onto them),
  // the online softmax (FP8: P' = P x scale / g), o rescaled, P (bf16; FP8: P', f16) published in
  // the A layout warpgroup 1 reads back with ldmatrix, with the rows' factors (barrier 1).
  int row_end[2];
#pragma unroll
  for (int i = 0; i < 2; ++i)
    row_end[i] = kPacked && my_row[i] < rows_valid && item.num_tokens > 1
                     ? min(item.kv_end, p.token_pos[t0 + my_row[i] / tile.rows] + 1)
                     : item.kv_end;
  float row_factor[2] = {1.0f, 1.0f};
  if constexpr (kFp8)
#pragma unroll
    for (int i = 0; i < 2; ++i) row_factor[i] = row_factor_s[my_row[i]];
  auto score_tile = [&](int j, float(&s)[C::kBN / 8][4]) {
    const int stage = j % C::kStages, start = item.kv_begin + j * C::kBN;
    const uint32_t q_addr = smem_addr(q_s), kt = stage_addr(j);
#pragma unroll
    for (int i = 0; i < C::kBN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
    auto score_chain = [&](auto f16, int k_begin, int k_end) {
      wgmma_fence();
#pragma unroll
      for (int k0 = k_begin; k0 < k_end; k0 += 16) {
        const uint32_t in_block = uint32_t(k0 & 63) * 2;
        const uint64_t da = sw128_desc(q_addr + (k0 >> 6) * (C::kM * 128) + in_block);
        const uint64_t db = sw128_desc(kt + (k0 >> 6) * (C::kBN * 128) + in_block);
        if constexpr (C::kBN == 128)
          wgmma_n128<decltype(f16)::value>(s, da, db, 1);
        else
          wgmma_n64<decltype(f16)::value>(s, da, db, 1);
      }
      wgmma_commit();
      wgmma_wait_all();
    };
    if constexpr (kFp8) {
      score_chain(std::true_type{}, 0, D);
      float2 cs[C::kBN / 8];
      column_scales(tile_scale_s + stage * C::kBN, cs);
      scale_latent_scores(s, cs, row_factor);
      score_chain(std::false_type{}, D, C::kK);
    } else {
      score_chain(std::false_type{}, 0, C::kK);
    }
    float corr[2];
    online_softmax_update<kPacked>(s, start, row_end, p.scale_log2, m_r, l_r, corr);
    if constexpr (kFp8) {
      float2 cs[C::kBN / 8];  // read again: cheaper than holding them over the rope chain
      column_scales(tile_scale_s + stage * C::kBN, cs);
      fold_value_scales(s, cs, g_r, corr);
    }
    rescale_rows(o, corr);
#pragma unroll
    for (int nb = 0; nb < C::kBN / 8; ++nb)
#pragma unroll
      for (int i = 0; i < 2; ++i)
        *reinterpret_cast<uint32_t*>(p_s +
                                     swizzled_offset<C::kM>(my_row[i], nb * 8 + (lane % 4) * 2)) =
            kFp8 ? pack_f16(s[nb][2 * i], s[nb][2 * i + 1])
                 : pack_bf16(s[nb][2 * i], s[nb][2 * i + 1]);
    if (lane % 4 == 0) {
      corr_s[my_row[0]] = corr[0];
      corr_s[my_row[1]] = corr[1];
    }
    named_barrier_arrive(1, 256);
  };
  // Every A fragment is packed before the fence: registers an in-flight wgmma reads must not be
  // written after it (the compiler would insert a warpgroup arrive).
  auto pack_probabilities = [&](const float(&s)[C::kBN / 8][4], uint32_t(&a)[C::kBN / 16][4]) {
#pragma unroll
    for (int kk = 0; kk < C::kBN / 16; ++kk) {
      if constexpr (kFp8)
        probability_fragment_f16(s, kk, a[kk]);
      else
        probability_fragment(s, kk, a[kk]);
    }
  };
  // Warpgroup 1: tile j's factors and P, after barrier 1.
  const int a_row = rg * 16 + (lane % 8) + ((lane / 8) & 1) * 8, a_col = (lane / 16) * 8;
  auto read_probabilities = [&](uint32_t(&a)[C::kBN / 16][4]) {
    named_barrier(1, 256);
    const float corr[2] = {corr_s[my_row[0]], corr_s[my_row[1]]};
    rescale_rows(o, corr);
#pragma unroll
    for (int kk = 0; kk < C::kBN / 16; ++kk)
      ldmatrix_x4(a[kk], p_addr + swizzled_offset<C::kM>(a_row, kk * 16 + a_col));
  };

  if constexpr (kFp8) {
    // Both warpgroups convert tile 0; in iteration j, tile j's P.V (both warpgroups) runs on the
    // tensor cores while both convert tile j + 1, and one CTA barrier then marks tile j + 1
    // converted and tile j released, so the stage takes tile j + 2.
    float scale_next = fp8_scale(0);
    if (n_tiles > 0) {
      const float scale = scale_next;
      scale_next = fp8_scale(1);
      convert_tile(0, scale);
      fence_proxy_async();
      named_barrier(6, 256);
    }
    for (int j = 0; j < n_tiles; ++j) {
      uint32_t a[C::kBN / 16][4];
      if (wg == 0) {
        float s[C::kBN / 8][4];
        score_tile(j, s);
        pack_probabilities(s, a);
      } else {
        read_probabilities(a);
      }
      issue_pv(a, stage_addr(j));
      if (j + 1 < n_tiles) {
        const float scale = scale_next;
        scale_next = fp8_scale(j + 2);
        convert_tile(j + 1, scale);
      }
      wgmma_wait_all();
      fence_proxy_async();
      named_barrier(6, 256);
      if (tid == 0 && j + C::kStages < n_tiles) tma_tile(j + C::kStages, j % C::kStages);
    }
  } else if (wg == 0) {
    for (int j = 0; j < n_tiles; ++j) {
      const int stage = j % C::kStages, valid = item.kv_end - (item.kv_begin + j * C::kBN);
      const uint32_t kt = stage_addr(j);
      mbar_wait(full_bar + 8 * stage, uint32_t(j / C::kStages) & 1u);
      if (valid < C::kBN) {
        // Rows past the end hold stale shared memory or other tokens: zero them so that the
        // masked (zero) probabilities never meet a NaN or Inf in P.V.
        for (int i = tid; i < (C::kBN - valid) * C::kChunks; i += 128) {
          const int r = valid + i / C::kChunks, ch = i % C::kChunks;
          asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(
                           kt + swizzled_offset<C::kBN>(r, ch * 8)),
                       "r"(0)
                       : "memory");
        }
        fence_proxy_async();
        named_barrier(3, 128);
      }
      float s[C::kBN / 8][4];
      score_tile(j, s);
      uint32_t a[C::kBN / 16][4];
      pack_probabilities(s, a);
      multiply_pv(a, kt);
      // Warpgroup 1 is done with this tile and with P: refill the stage.
      named_barrier(2, 256);
      if (tid == 0 && j + C::kStages < n_tiles) tma_tile(j + C::kStages, stage);
    }
  } else {
    for (int j = 0; j < n_tiles; ++j) {
      const int stage = j % C::kStages;
      uint32_t a[C::kBN / 16][4];
      read_probabilities(a);
      // Already complete (warpgroup 0 waited): makes the tile's TMA bytes visible here too.
      mbar_wait(full_bar + 8 * stage, uint32_t(j / C::kStages) & 1u);
      multiply_pv(a, stage_addr(j));
      named_barrier_arrive(2, 256);
    }
  }
  if (wg == 0) {
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      l_r[i] += __shfl_xor_sync(0xffffffffu, l_r[i], 1);
      l_r[i] += __shfl_xor_sync(0xffffffffu, l_r[i], 2);
      if (lane % 4 == 0) rowsum_s[my_row[i]] = l_r[i];
      // FP8: the rows' g for warpgroup 1 (it has read its last factors: barrier 6).
      if (kFp8 && lane % 4 == 0) corr_s[my_row[i]] = g_r[i];
    }
    named_barrier_arrive(4, 256);
  } else {
    named_barrier(4, 256);
    l_r[0] = rowsum_s[my_row[0]];
    l_r[1] = rowsum_s[my_row[1]];
    if constexpr (kFp8) {
      g_r[0] = corr_s[my_row[0]];
      g_r[1] = corr_s[my_row[1]];
    }
  }
  // Each warpgroup writes its value columns; warpgroup 0 the rows' log-sum-exp.
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = my_row[i];
    if (row >= rows_valid) continue;
    // 0: a chunk past the row's end. FP8: the accumulator holds O / g.
    const float inv = (l_r[i] > 0.0f ? 1.0f / l_r[i] : 0.0f) * (kFp8 ? g_r[i] : 1.0f);
    const int col0 = wg * (D / 2) + (lane % 4) * 2;
    if (item.partial < 0) {
      const int token = kPacked ? t0 + row / tile.rows : t0;
      const int head = kPacked ? row % tile.rows : row;
      const int64_t base =
          int64_t(token) * p.out_token_stride + int64_t(tile.head0 + head) * p.out_head_stride;
#pragma unroll
      for (int nb = 0; nb < C::kNO; ++nb) {
        store_from_f32(p.out, p.out_dtype, base + col0 + nb * 8, o[nb][2 * i] * inv);
        store_from_f32(p.out, p.out_dtype, base + col0 + nb * 8 + 1, o[nb][2 * i + 1] * inv);
      }
    } else {
      const int64_t slot_row =
          (int64_t(item.partial) * tiles.count + blockIdx.y) * p.rows_max + row;
      float* dst = p.partial_o + slot_row * p.v_dim + col0;
#pragma unroll
      for (int nb = 0; nb < C::kNO; ++nb)
        *reinterpret_cast<float2*>(dst + nb * 8) =
            make_float2(o[nb][2 * i] * inv, o[nb][2 * i + 1] * inv);
      if (wg == 0 && lane % 4 == 0)
        p.partial_lse[slot_row] = l_r[i] > 0.0f ? m_r[i] + log2f(l_r[i]) : -INFINITY;
    }
  }
#else
  __trap();  // device code is built for sm_90a only (hopper_ptx.cuh)
#endif
}

template <int D, bool kFp8>
void launch(const AttentionParams& p, const HeadTiles& tiles, const SplitKvPlan& plan,
            const CUtensorMap& map, const CUtensorMap& tail, cudaStream_t stream) {
  using C = WideConfig<D>;
  const bool packed = plan.shape.tokens_per_item > 1;
  launch_plan_grid(packed ? latent_wide_kernel<D, true, kFp8> : latent_wide_kernel<D, false, kFp8>,
                   plan, tiles, C::kThreads, kFp8 ? C::kFp8Smem : C::kSmem, stream, p, tiles, plan,
                   map, tail);
}

template <bool kFp8>
void launch_width(const AttentionParams& p, const HeadTiles& tiles, const SplitKvPlan& plan,
                  int d_c, const CUtensorMap& map, const CUtensorMap& tail, cudaStream_t stream) {
  if (d_c == 512) return launch<512, kFp8>(p, tiles, plan, map, tail, stream);
  MLRA_REQUIRE(d_c == 256, "latent wide attention: d_c must be 256 or 512");
  launch<256, kFp8>(p, tiles, plan, map, tail, stream);
}

}  // namespace

int latent_wide_tile_rows(int d_c) {
  return d_c == 256 ? WideConfig<256>::kBN : WideConfig<512>::kBN;
}

void launch_latent_wide(const AttentionParams& p, const HeadTiles& tiles, const SplitKvPlan& plan,
                        int d_c, const CUtensorMap& map, cudaStream_t stream) {
  launch_width<false>(p, tiles, plan, d_c, map, map, stream);
}

void launch_latent_wide_fp8(const AttentionParams& p, const HeadTiles& tiles,
                            const SplitKvPlan& plan, int d_c, const CUtensorMap& codes,
                            const CUtensorMap& tail, cudaStream_t stream) {
  MLRA_REQUIRE(p.fp8_cache && p.fp8.group_width == d_c && p.fp8.tail == 64,
               "latent wide attention: an FP8 tile reads one d_c-wide group and a 64-wide tail");
  launch_width<true>(p, tiles, plan, d_c, codes, tail, stream);
}

}  // namespace mlra::cuda
