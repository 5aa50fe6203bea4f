// Pieces the tensor-core paged-attention kernels (prefill, K/V decode; the latent decode kernels
// keep inline copies, see kernels/README.md) repeat around their own math: the 1 KB-aligned dynamic
// shared window, the (token, head) of a packed row, the cp.async of the query rows, the paged row
// of a position, TMA requests for a cache tile box by box, zeroing a tile's rows past the chunk's
// end, and writing a row's result as final output or as a split-KV partial. Layouts are those of
// hopper_ptx.cuh: tiles are 64-dim blocks of kRows x 128 B (128-byte swizzle), block b at b * kRows
// * 128; accumulator fragments o[nb][4] hold columns col0 + 8 nb (+1) of the thread's rows lane/4
// (e = 0, 1) and lane/4 + 8 (e = 2, 3).
#pragma once

#include <cuda.h>

#include <cmath>
#include <cstdint>

#include "kernels/dtype_access.cuh"
#include "kernels/hopper_ptx.cuh"
#include "kernels/paged_attention_cuda.h"

namespace mlra::cuda {

// The dynamic shared memory window aligned up to the 1024 B swizzle atom (kernels ask for 1 KB
// more than they use).
__device__ __forceinline__ unsigned char* aligned_smem(unsigned char* raw) {
  return raw + ((1024 - (smem_addr(raw) & 1023)) & 1023);
}

// Rows of a CTA are token-major (token, head) pairs: `tokens` tokens from t0 times the tile's rows
// (split_kv_plan.h: query packing); a decode item has one token, so row == head.
struct RowMap {
  int t0 = 0;
  int rows_per_token = 1;  // the head tile's rows
  __device__ int token(int row) const { return t0 + row / rows_per_token; }
  __device__ int head(int row) const { return row % rows_per_token; }
};

// Where row `row`'s keys end in this item: its own token's causal end when the item packs several
// tokens (kPacked), else the item's end.
template <bool kPacked>
__device__ __forceinline__ int row_kv_end(const AttentionParams& p, const SplitKvItem& item,
                                          RowMap rows, int row, int rows_valid) {
  return kPacked && row < rows_valid && item.num_tokens > 1
             ? min(item.kv_end, p.token_pos[rows.token(row)] + 1)
             : item.kv_end;
}

// cp.async of rows [0, kRows) x kChunks 16-byte chunks of the query (contiguous from each row's
// start) into a swizzled kRows-row tile at q_base; rows at or past rows_valid are zero-filled.
// Chunk index fastest: 8 consecutive threads copy one 128 B line. The caller commits the group.
template <int kRows, int kChunks>
__device__ __forceinline__ void load_query_rows(uint32_t q_base, const AttentionParams& p,
                                                const HeadTile& tile, RowMap rows, int rows_valid,
                                                int tid, int threads) {
  const auto* q = static_cast<const __nv_bfloat16*>(p.q);
  for (int i = tid; i < kRows * kChunks; i += threads) {
    const int row = i / kChunks, ch = i % kChunks;
    const uint32_t dst = q_base + swizzled_offset<kRows>(row, ch * 8);
    if (row < rows_valid)
      cp_async16(dst,
                 q + int64_t(rows.token(row)) * p.q_token_stride +
                     int64_t(tile.head0 + rows.head(row)) * p.q_head_stride + ch * 8,
                 16);
    else
      cp_async16(dst, q, 0);
  }
}

// The cache row of sequence position pos (pages: the sequence's page list).
__device__ __forceinline__ int paged_row(const int32_t* pages, int pos, int shift) {
  return (__ldg(pages + (pos >> shift)) << shift) + (pos & ((1 << shift) - 1));
}

// One thread requests the kBN-row tile starting at position start into base: for every box of
// p.box_rows positions (one page) that holds a position before kv_end, kBlocks 64-dim blocks,
// block kb from cache column column_of(kb). Boxes wholly past the end are not requested (their
// rows stay stale: zero_tail_rows). Arms bar with the bytes it asked for.
template <int kBN, int kBlocks, class ColumnOf>
__device__ __forceinline__ void tma_request_tile(uint32_t base, uint32_t bar,
                                                 const CUtensorMap* map, const AttentionParams& p,
                                                 const int32_t* pages, int start, int kv_end,
                                                 ColumnOf column_of) {
  const int br = p.box_rows;
  const int boxes = min(kBN, kv_end - start + br - 1) / br;
  mbar_expect_tx(bar, uint32_t(boxes * kBlocks * br * 128));
  for (int b = 0; b < boxes; ++b) {
    const int row = paged_row(pages, start + b * br, p.page_shift);
#pragma unroll
    for (int kb = 0; kb < kBlocks; ++kb)
      tma_load_2d(base + kb * kBN * 128 + b * br * 128, map, column_of(kb), row, bar);
  }
}

// Zeroes rows [valid, kBN) of a tile of `chunks` 16-byte chunks per row (its 64-dim blocks kBN x
// 128 B apart), so masked (zero) probabilities never meet a NaN or Inf there in P.V. The caller
// fences (fence_proxy_async) and synchronises the threads that read the tile next.
template <int kBN>
__device__ __forceinline__ void zero_tail_rows(uint32_t base, int valid, int chunks, int tid,
                                               int threads) {
  for (int i = tid; i < (kBN - valid) * chunks; i += threads) {
    const int r = valid + i / chunks, ch = i % chunks;
    asm volatile(
        "st.shared.v4.u32 [%0], {%1, %1, %1, %1};\n" ::"r"(base + swizzled_offset<kBN>(r, ch * 8)),
        "r"(0)
        : "memory");
  }
}

// Writes fragment row e2 (0: lane/4, 1: lane/4 + 8) of o, scaled by inv, at columns col0 + 8 nb
// (+1) of CTA row `row`: to the final output, or (item.partial >= 0) to the row's partial slot,
// with the row's lse (log2 domain, -inf for an empty row) when write_lse.
template <int NO>
__device__ __forceinline__ void write_row(const AttentionParams& p, const HeadTiles& tiles,
                                          const SplitKvItem& item, const HeadTile& tile,
                                          RowMap rows, int row, const float (&o)[NO][4], int e2,
                                          int col0, float m, float l, bool write_lse) {
  const float inv = l > 0.0f ? 1.0f / l : 0.0f;  // 0: a chunk past the row's end
  if (item.partial < 0) {
    const int64_t base = int64_t(rows.token(row)) * p.out_token_stride +
                         int64_t(tile.head0 + rows.head(row)) * p.out_head_stride + col0;
#pragma unroll
    for (int nb = 0; nb < NO; ++nb) {
      store_from_f32(p.out, p.out_dtype, base + nb * 8, o[nb][2 * e2] * inv);
      store_from_f32(p.out, p.out_dtype, base + nb * 8 + 1, o[nb][2 * e2 + 1] * inv);
    }
    return;
  }
  const int64_t slot_row = (int64_t(item.partial) * tiles.count + blockIdx.y) * p.rows_max + row;
  float* dst = p.partial_o + slot_row * p.v_dim + col0;
#pragma unroll
  for (int nb = 0; nb < NO; ++nb)
    *reinterpret_cast<float2*>(dst + nb * 8) =
        make_float2(o[nb][2 * e2] * inv, o[nb][2 * e2 + 1] * inv);
  if (write_lse) p.partial_lse[slot_row] = l > 0.0f ? m + log2f(l) : -INFINITY;
}

}  // namespace mlra::cuda
