// Paged latent attention in the absorbed form (MLA / GLA / MLRA): every query head of a latent
// group scores cached token tau with (q_lat . c_tau + q_pe . k_pe_tau) * scale and returns
// sum softmax * c_tau. One CTA serves up to 64 heads of one token over one split-KV chunk, so each
// cache tile is read from HBM once for all heads sharing the latent (64 at MLRA-4 TP4).
// Tiles of kBN cached rows ([c | k_pe], bf16) stream through a kStages-deep ring: by TMA (one
// thread, a tensor map over the cache, an mbarrier per stage) or, as the fallback, by every
// thread's cp.async. Scores and P.V use wgmma on sm_90a (each cache tile read from shared memory
// once per warpgroup; P from registers, V MN-major), mma.sync otherwise; f32 accumulators; online
// softmax in f32 (exp2 domain).
// Shared tiles use the 128-byte swizzle (hopper_ptx.cuh: swizzled_offset): the layout TMA writes,
// cp.async fills conflict-free with full-line global requests, and wgmma/ldmatrix read.
// Warp (rg, cg): rows 16rg..16rg+15, value columns 128cg..+127. With d_c > 128 the CG warps of a
// row group each score a slice of the key dims and sum the slices through shared memory (in a
// fixed order, so every warp of the group holds bit-identical probabilities).
#include <cuda.h>
#include <cuda_bf16.h>

#include <cstdlib>
#include <string>

#include "kernels/cache_tensor_map.h"
#include "kernels/cuda_check.h"
#include "kernels/dtype_access.cuh"
#include "kernels/env_switch.h"
#include "kernels/hopper_ptx.cuh"
#include "kernels/latent_wide_attention.h"
#include "kernels/online_softmax.cuh"
#include "kernels/paged_attention_cuda.h"
#include "kernels/plan_grid_launch.cuh"

namespace mlra::cuda {
namespace {

using bf16 = __nv_bfloat16;

template <int D>
struct LatentConfig {
  static constexpr int kR = 64;           // rope key dims
  static constexpr int kCG = D / 128;     // value column groups
  static constexpr int kWarps = 4 * kCG;  // 4 row groups of 16 heads
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kM = 64;                   // heads per CTA
  static constexpr int kBN = D == 512 ? 32 : 64;  // cached rows per tile
  static constexpr int kStages = 3;
  static constexpr int kRopeSlice = kR / kCG;
  static constexpr int kChunks = (D + kR) / 8;  // 16 B chunks per cached row
  static constexpr size_t kQBytes = size_t(kM) * (D + kR) * 2;
  static constexpr size_t kStageBytes = size_t(kBN) * (D + kR) * 2;
  static constexpr size_t kXBytes = kCG > 1 ? size_t(kWarps) * 16 * kBN * 4 : 0;
  // + 1 KB: the dynamic shared window is aligned up to the 1024 B swizzle atom in the kernel.
  static constexpr size_t kSmem = 1024 + kQBytes + kStages * kStageBytes + kXBytes + 8 * kStages;
  static constexpr int kMinBlocks = D == 128 ? 2 : 1;
};

// kPacked: the plan packs several tokens per item (prefill). Decode plans (one token per item)
// take the kernel without the per-row bookkeeping.
template <int D, bool kWgmma, bool kPvWgmma, bool kTma, bool kPacked>
__global__ void __launch_bounds__(LatentConfig<D>::kThreads, LatentConfig<D>::kMinBlocks)
    latent_attention_kernel(AttentionParams p, HeadTiles tiles, SplitKvPlan plan,
                            const __grid_constant__ CUtensorMap cache_map) {
  using C = LatentConfig<D>;
  extern __shared__ __align__(1024) unsigned char smem_raw[];
  unsigned char* smem = smem_raw + ((1024 - (smem_addr(smem_raw) & 1023)) & 1023);
  if (int(blockIdx.x) >= *plan.num_items) return;
  const SplitKvItem item = plan.items[blockIdx.x];
  const HeadTile tile = tiles.tile[blockIdx.y];
  bf16* q_s = reinterpret_cast<bf16*>(smem);
  bf16* k_s = reinterpret_cast<bf16*>(smem + C::kQBytes);
  float* x_s = reinterpret_cast<float*>(smem + C::kQBytes + C::kStages * C::kStageBytes);
  const uint32_t full_bar = smem_addr(smem + C::kQBytes + C::kStages * C::kStageBytes + C::kXBytes);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32;
  const int rg = warp % 4, cg = warp / 4;

  // Rows are token-major (token, head) pairs: item.num_tokens tokens x tile.rows heads (query
  // packing, split_kv_plan.h); a decode item has one token.
  const int t0 = item.token, rows_valid = kPacked ? item.num_tokens * tile.rows : tile.rows;
  const int32_t* pages = p.page_indices + p.page_indptr[p.token_seq[t0]];
  const bf16* cache = static_cast<const bf16*>(p.cache);
  const bf16* q = static_cast<const bf16*>(p.q);
  const int shift = p.page_shift, mask = (1 << p.page_shift) - 1;

  // Query rows (zero past the tile's heads) join the first cp.async group. Chunk index fastest:
  // 8 consecutive threads copy one 128 B line of a row.
  for (int i = tid; i < C::kM * C::kChunks; i += C::kThreads) {
    const int row = i / C::kChunks, ch = i % C::kChunks;
    const uint32_t dst = smem_addr(q_s) + swizzled_offset<C::kM>(row, ch * 8);
    if (row < rows_valid)
      cp_async16(dst,
                 kPacked ? q + int64_t(t0 + row / tile.rows) * p.q_token_stride +
                               int64_t(tile.head0 + row % tile.rows) * p.q_head_stride + ch * 8
                         : q + int64_t(t0) * p.q_token_stride +
                               int64_t(tile.head0 + row) * p.q_head_stride + ch * 8,
                 16);
    else
      cp_async16(dst, q, 0);
  }

  const int n_tiles = (item.kv_end - item.kv_begin + C::kBN - 1) / C::kBN;
  // TMA: thread 0 loads whole tiles, box by box (p.box_rows rows of one page, 64 dims). Boxes
  // wholly past the end are not requested; rows past the end are zeroed after arrival.
  auto tma_tile = [&](int j, int stage) {
    const int start = item.kv_begin + j * C::kBN, br = p.box_rows;
    const uint32_t base = smem_addr(k_s + stage * C::kBN * (D + C::kR)), bar = full_bar + 8 * stage;
    const int boxes = min(C::kBN, item.kv_end - start + br - 1) / br;
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
  auto load_tile = [&](int j, int stage) {
    const int start = item.kv_begin + j * C::kBN;
    const uint32_t base = smem_addr(k_s + stage * C::kBN * (D + C::kR));
    for (int i = tid; i < C::kBN * C::kChunks; i += C::kThreads) {
      const int r = i / C::kChunks, ch = i % C::kChunks, pos = start + r;
      const uint32_t dst = base + swizzled_offset<C::kBN>(r, ch * 8);
      if (pos < item.kv_end) {
        const int64_t row = (int64_t(__ldg(pages + (pos >> shift))) << shift) + (pos & mask);
        const int col = ch < D / 8 ? tile.a_offset + ch * 8 : p.r_offset + (ch - D / 8) * 8;
        cp_async16(dst, cache + row * p.row_width + col, 16);
      } else {
        cp_async16(dst, cache, 0);
      }
    }
  };
  if constexpr (kTma) {
    cp_async_commit();  // the query rows
    init_stage_barriers(full_bar, C::kStages);
    __syncthreads();
    if (tid == 0)
      for (int s = 0; s < C::kStages - 1 && s < n_tiles; ++s) tma_tile(s, s);
    cp_async_wait<0>();
  } else {
#pragma unroll
    for (int s = 0; s < C::kStages - 1; ++s) {
      if (s < n_tiles) load_tile(s, s);
      cp_async_commit();
    }
  }

  float o[16][4];
#pragma unroll
  for (int i = 0; i < 16; ++i) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
  float m_r[2] = {-INFINITY, -INFINITY}, l_r[2] = {0.0f, 0.0f};
  const int a_row = rg * 16 + (lane % 8) + ((lane / 8) & 1) * 8, a_col = (lane / 16) * 8;
  const int b_row = (lane % 8) + (lane / 16) * 8, b_col = ((lane / 8) & 1) * 8;
  // Causal end of this thread's two rows (lane / 4 and lane / 4 + 8 of the warp's 16).
  int row_end[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = rg * 16 + lane / 4 + 8 * i;
    row_end[i] = kPacked && row < rows_valid && item.num_tokens > 1
                     ? min(item.kv_end, p.token_pos[t0 + row / tile.rows] + 1)
                     : item.kv_end;
  }
  const int v_row = (lane % 8) + ((lane / 8) & 1) * 8, v_col = (lane / 16) * 8;
  const uint32_t q_addr = smem_addr(q_s);

  for (int j = 0; j < n_tiles; ++j) {
    if constexpr (kTma) {
      const int stage = j % C::kStages, valid = item.kv_end - (item.kv_begin + j * C::kBN);
      mbar_wait(full_bar + 8 * stage, uint32_t(j / C::kStages) & 1u);
      if (valid < C::kBN) {
        // Rows past the end hold stale shared memory or other tokens: zero them so that the
        // masked (zero) probabilities never meet a NaN or Inf in P.V.
        const uint32_t base = smem_addr(k_s + stage * C::kBN * (D + C::kR));
        for (int i = tid; i < (C::kBN - valid) * C::kChunks; i += C::kThreads) {
          const int r = valid + i / C::kChunks, ch = i % C::kChunks;
          asm volatile("st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(
                           base + swizzled_offset<C::kBN>(r, ch * 8)),
                       "r"(0)
                       : "memory");
        }
      }
    } else {
      cp_async_wait<C::kStages - 2>();
    }
#ifdef MLRA_LATENT_WGMMA
    if constexpr (kWgmma) fence_proxy_async();  // cp.async writes are read by wgmma (async proxy)
#endif
    __syncthreads();
    const int next = j + C::kStages - 1;
    if constexpr (kTma) {
      if (tid == 0 && next < n_tiles) tma_tile(next, next % C::kStages);
    } else {
      if (next < n_tiles) load_tile(next, next % C::kStages);
      cp_async_commit();
    }
    const uint32_t kt = smem_addr(k_s + (j % C::kStages) * C::kBN * (D + C::kR));

    // Scores of this warp's key-dim slice: 128 latent dims + kRopeSlice rope dims.
    float s[C::kBN / 8][4];
#pragma unroll
    for (int i = 0; i < C::kBN / 8; ++i) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
    if constexpr (kWgmma) {
#ifdef MLRA_LATENT_WGMMA
      // The warpgroup of column group cg scores all 64 rows over its key-dim slice.
      auto score_step = [&](int k0) {
        const uint32_t in_block = uint32_t(k0 & 63) * 2;
        const uint64_t da = sw128_desc(q_addr + (k0 >> 6) * (C::kM * 128) + in_block);
        const uint64_t db = sw128_desc(kt + (k0 >> 6) * (C::kBN * 128) + in_block);
        if constexpr (C::kBN == 64)
          wgmma_n64(s, da, db, 1);
        else
          wgmma_n32(s, da, db, 1);
      };
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < 8; ++kk) score_step(cg * 128 + kk * 16);
#pragma unroll
      for (int kk = 0; kk < C::kRopeSlice / 16; ++kk) score_step(D + cg * C::kRopeSlice + kk * 16);
      wgmma_commit();
      wgmma_wait_all();
#else
      __trap();  // never launched: the host probes for the sm_90a build first
#endif
    } else {
      auto score_step = [&](int k0) {
        uint32_t a[4];
        ldmatrix_x4(a, q_addr + swizzled_offset<C::kM>(a_row, k0 + a_col));
#pragma unroll
        for (int np = 0; np < C::kBN / 16; ++np) {
          uint32_t b[4];
          ldmatrix_x4(b, kt + swizzled_offset<C::kBN>(np * 16 + b_row, k0 + b_col));
          mma_bf16(s[2 * np], a, b[0], b[1]);
          mma_bf16(s[2 * np + 1], a, b[2], b[3]);
        }
      };
#pragma unroll
      for (int kk = 0; kk < 8; ++kk) score_step(cg * 128 + kk * 16);
#pragma unroll
      for (int kk = 0; kk < C::kRopeSlice / 16; ++kk) score_step(D + cg * C::kRopeSlice + kk * 16);
    }
    if constexpr (C::kCG > 1) {
      float* mine = x_s + warp * 16 * C::kBN;
#pragma unroll
      for (int nb = 0; nb < C::kBN / 8; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) mine[(nb * 4 + e) * 32 + lane] = s[nb][e];
      named_barrier(1 + rg, C::kCG * 32);
#pragma unroll
      for (int nb = 0; nb < C::kBN / 8; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          float sum = 0.0f;
#pragma unroll
          for (int c = 0; c < C::kCG; ++c)
            sum += x_s[(rg + 4 * c) * 16 * C::kBN + (nb * 4 + e) * 32 + lane];
          s[nb][e] = sum;
        }
    }

    // Online softmax over the tile (a packed row may have no valid position in this chunk yet).
    online_softmax_step<kPacked>(s, o, item.kv_begin + j * C::kBN, row_end, p.scale_log2, m_r, l_r);

    // o += P . V with V = the latent columns of this warp's column group.
    if constexpr (kPvWgmma) {
#ifdef MLRA_LATENT_WGMMA
      // The warpgroup of column group cg: 64 rows x its 128 value columns, P from registers, V
      // read once per warpgroup from the swizzled tile (MN-major).
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < C::kBN / 16; ++kk) {
        uint32_t a[4];
        probability_fragment(s, kk, a);
        wgmma_rs_n128_tb(
            o, a, sw128_mn_desc(kt + (2 * cg) * (C::kBN * 128) + kk * 16 * 128, C::kBN * 128));
      }
      wgmma_commit();
      wgmma_wait_all();
#else
      __trap();
#endif
    } else {
#pragma unroll
      for (int kk = 0; kk < C::kBN / 16; ++kk) {
        uint32_t a[4];
        probability_fragment(s, kk, a);
#pragma unroll
        for (int np = 0; np < 8; ++np) {
          uint32_t b[4];
          ldmatrix_x4_trans(
              b, kt + swizzled_offset<C::kBN>(kk * 16 + v_row, cg * 128 + np * 16 + v_col));
          mma_bf16(o[2 * np], a, b[0], b[1]);
          mma_bf16(o[2 * np + 1], a, b[2], b[3]);
        }
      }
    }
  }
  cp_async_wait<0>();

#pragma unroll
  for (int i = 0; i < 2; ++i) {
    l_r[i] += __shfl_xor_sync(0xffffffffu, l_r[i], 1);
    l_r[i] += __shfl_xor_sync(0xffffffffu, l_r[i], 2);
  }
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const int row = rg * 16 + lane / 4 + 8 * i;
    if (row >= rows_valid) continue;
    const float inv = l_r[i] > 0.0f ? 1.0f / l_r[i] : 0.0f;  // 0: a chunk past the row's end
    if (item.partial < 0) {
      const int64_t base = kPacked ? int64_t(t0 + row / tile.rows) * p.out_token_stride +
                                         int64_t(tile.head0 + row % tile.rows) * p.out_head_stride
                                   : int64_t(t0) * p.out_token_stride +
                                         int64_t(tile.head0 + row) * p.out_head_stride;
#pragma unroll
      for (int nb = 0; nb < 16; ++nb) {
        const int col = cg * 128 + nb * 8 + (lane % 4) * 2;
        store_from_f32(p.out, p.out_dtype, base + col, o[nb][2 * i] * inv);
        store_from_f32(p.out, p.out_dtype, base + col + 1, o[nb][2 * i + 1] * inv);
      }
    } else {
      const int64_t slot_row =
          (int64_t(item.partial) * tiles.count + blockIdx.y) * p.rows_max + row;
      float* dst = p.partial_o + slot_row * p.v_dim;
#pragma unroll
      for (int nb = 0; nb < 16; ++nb) {
        const int col = cg * 128 + nb * 8 + (lane % 4) * 2;
        *reinterpret_cast<float2*>(dst + col) =
            make_float2(o[nb][2 * i] * inv, o[nb][2 * i + 1] * inv);
      }
      if (cg == 0 && lane % 4 == 0)
        p.partial_lse[slot_row] = l_r[i] > 0.0f ? m_r[i] + log2f(l_r[i]) : -INFINITY;
    }
  }
}

template <int D, bool kWgmma, bool kPvWgmma, bool kTma>
void launch(const AttentionParams& p, const HeadTiles& tiles, const SplitKvPlan& plan,
            const CUtensorMap& map, cudaStream_t stream) {
  using C = LatentConfig<D>;
  // MLRA_LATENT_PACKED=1 runs decode plans through the packed kernel too (A/B of its cost).
  static const bool always_packed = env_value("MLRA_LATENT_PACKED") == "1";
  auto* kernel = plan.shape.tokens_per_item > 1 || always_packed
                     ? latent_attention_kernel<D, kWgmma, kPvWgmma, kTma, true>
                     : latent_attention_kernel<D, kWgmma, kPvWgmma, kTma, false>;
  launch_plan_grid(kernel, plan, tiles, C::kThreads, C::kSmem, stream, p, tiles, plan, map);
}

template <int D>
void launch_variant(const AttentionParams& p, const HeadTiles& tiles, const SplitKvPlan& plan,
                    LatentMma mma, const CUtensorMap* map, cudaStream_t stream) {
  static const CUtensorMap none{};
  if (map && mma == LatentMma::kWgmma)
    return launch<D, true, true, true>(p, tiles, plan, *map, stream);
  switch (mma) {
    case LatentMma::kWgmma:
      return launch<D, true, true, false>(p, tiles, plan, none, stream);
    case LatentMma::kWgmmaScores:
      return launch<D, true, false, false>(p, tiles, plan, none, stream);
    case LatentMma::kMmaSync:
      return launch<D, false, false, false>(p, tiles, plan, none, stream);
  }
}

// Writes 1 when the loaded device code was built for sm_90a (wgmma available).
__global__ void probe_wgmma_kernel(int* out) {
#ifdef MLRA_LATENT_WGMMA
  *out = 1;
#else
  *out = 0;
#endif
}

}  // namespace

int latent_ctas_per_sm(int d_c) {
  return d_c == 128 ? 2 : 1;
}

LatentMma latent_mma() {
  // Probed once per process (all our GPUs are one kind). MLRA_LATENT_MMA=mma forces mma.sync,
  // =scores wgmma for the scores only (A/B comparisons in the benchmark).
  static const LatentMma mode = [] {
    const std::string want = env_value("MLRA_LATENT_MMA");
    if (want == "mma") return LatentMma::kMmaSync;
    int* d = nullptr;
    int h = 0;
    MLRA_CUDA_CHECK(cudaMalloc(&d, sizeof(int)));
    probe_wgmma_kernel<<<1, 1>>>(d);
    MLRA_CUDA_LAUNCH_CHECK();
    MLRA_CUDA_CHECK(cudaMemcpy(&h, d, sizeof(int), cudaMemcpyDeviceToHost));
    MLRA_CUDA_CHECK(cudaFree(d));
    if (h != 1) return LatentMma::kMmaSync;
    return want == "scores" ? LatentMma::kWgmmaScores : LatentMma::kWgmma;
  }();
  return mode;
}

bool latent_uses_tma() {
  // MLRA_LATENT_LOAD=cpasync: every thread copies with cp.async instead (A/B comparisons).
  static const bool use = env_value("MLRA_LATENT_LOAD") != "cpasync" &&
                          latent_mma() == LatentMma::kWgmma && tensor_maps_available();
  return use;
}

int latent_tile_rows(int d_c) {
  if (latent_wide_enabled(d_c)) return latent_wide_tile_rows(d_c);
  return d_c == 512 ? LatentConfig<512>::kBN : 64;
}

const char* latent_mma_name(LatentMma m) {
  switch (m) {
    case LatentMma::kWgmma:
      return "wgmma (scores and P.V)";
    case LatentMma::kWgmmaScores:
      return "wgmma scores, mma.sync P.V";
    case LatentMma::kMmaSync:
      return "mma.sync";
  }
  return "?";
}

void launch_latent_attention(const AttentionParams& p, const HeadTiles& tiles,
                             const SplitKvPlan& plan, int d_c, cudaStream_t stream) {
  MLRA_REQUIRE(p.r_dim == 64 && p.a_dim == d_c && p.v_dim == d_c, "latent attention: dims");
  MLRA_REQUIRE(p.q_dtype == DType::kBF16 && p.cache_dtype == DType::kBF16,
               "latent attention: q and cache must be bf16");
  MLRA_REQUIRE(p.rows_max == 64, "latent attention: 64 rows per tile");
  for (int i = 0; i < tiles.count; ++i)
    MLRA_REQUIRE(tiles.tile[i].rows <= 64 && tiles.tile[i].a_offset == tiles.tile[i].v_offset,
                 "latent attention: bad head tile");
  if (plan.shape.num_tokens == 0 || tiles.count == 0) return;
  const LatentMma mma = latent_mma();
  CUtensorMap map{};
  const bool tma =
      latent_uses_tma() && p.box_rows > 0 && p.cache_rows > 0 && make_cache_map(p, map);
  const CUtensorMap* m = tma ? &map : nullptr;
  if (tma && latent_wide_enabled(d_c)) return launch_latent_wide(p, tiles, plan, d_c, map, stream);
  switch (d_c) {
    case 128:
      return launch_variant<128>(p, tiles, plan, mma, m, stream);
    case 256:
      return launch_variant<256>(p, tiles, plan, mma, m, stream);
    case 512:
      return launch_variant<512>(p, tiles, plan, mma, m, stream);
    default:
      MLRA_REQUIRE(false, "latent attention: d_c must be 128, 256 or 512");
  }
}

}  // namespace mlra::cuda
