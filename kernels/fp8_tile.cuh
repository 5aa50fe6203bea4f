// Shared-memory dequantization of FP8 cache tiles for the tensor-core attention kernels (layout
// and codec in fp8_e4m3.h). A kernel's TMA brings a tile's codes into shared memory (boxes of 128
// codes x rows, row-major, no swizzle) inside the bf16 tile they become; the kernel's threads then
// write code value x row scale as bf16 into the 128-byte-swizzled 64-dim blocks its wgmma /
// ldmatrix reads (hopper_ptx.cuh), rows past the end as zeros. The arithmetic is the same in every
// kernel: the hardware's exact E4M3 -> f16 conversion, the product with the float32 scale in f32
// (exact up to one rounding), rounded to nearest bf16.
#pragma once

#include <cuda.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <cstdint>

#include "kernels/hopper_ptx.cuh"
#include "kernels/paged_attention_cuda.h"

namespace mlra::cuda {

// 16 codes (byte i = code i) x scale -> 16 bf16 values: out[0..3] = values 0..7, out[4..7] =
// values 8..15 (two 16-byte chunks).
__device__ __forceinline__ void fp8x16_to_bf16(const uint4& codes, float scale,
                                               uint32_t (&out)[8]) {
  const uint32_t c32[4] = {codes.x, codes.y, codes.z, codes.w};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const __half2_raw lo =
        __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(c32[k] & 0xffffu), __NV_E4M3);
    const __half2_raw hi =
        __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(c32[k] >> 16), __NV_E4M3);
    const float2 a = __half22float2(__half2(lo)), b = __half22float2(__half2(hi));
    out[2 * k] = pack_bf16(a.x * scale, a.y * scale);
    out[2 * k + 1] = pack_bf16(b.x * scale, b.y * scale);
  }
}

// Stores 8 bf16 values (out[4 h .. 4 h + 3]) as one 16-byte chunk at shared address `addr`.
__device__ __forceinline__ void st_shared_chunk(uint32_t addr, const uint32_t (&out)[8], int h) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(out[4 * h]),
               "r"(out[4 * h + 1]), "r"(out[4 * h + 2]), "r"(out[4 * h + 3])
               : "memory");
}

// The float32 scale of group `group` of sequence position pos (its page from the sequence's page
// list); 0 for pos at or past kv_end (the tile's rows there become zeros).
__device__ __forceinline__ float fp8_row_scale(const AttentionParams& p, const int32_t* pages,
                                               int pos, int kv_end, int group) {
  if (pos >= kv_end) return 0.0f;
  const int64_t ps = int64_t(1) << p.page_shift;
  const unsigned char* page = static_cast<const unsigned char*>(p.cache) +
                              int64_t(__ldg(pages + (pos >> p.page_shift))) * p.fp8.page_bytes(ps);
  return __ldg(reinterpret_cast<const float*>(page + p.fp8.scales_at(ps, pos & int(ps - 1))) +
               group);
}

// One thread requests the codes of a kBN-row tile starting at position `start`: for every box of
// p.box_rows positions (one page) holding a position before kv_end, one 128-code box per code
// block cb < kCodeBlocks, from code column col0 + 128 cb, to dst + cb * kBN * 128 + box * br *
// 128 (code block cb is [kBN][128] bytes, row-major). The caller armed the stage's barrier
// (mbar_expect_tx) with every byte its requests bring, before making them.
template <int kBN, int kCodeBlocks>
__device__ __forceinline__ void tma_fp8_codes(uint32_t dst, uint32_t bar, const CUtensorMap* codes,
                                              const AttentionParams& p, const int32_t* pages,
                                              int start, int boxes, int col0) {
  const int br = p.box_rows, mask = (1 << p.page_shift) - 1;
  for (int b = 0; b < boxes; ++b) {
    const int pos = start + b * br, page = __ldg(pages + (pos >> p.page_shift));
#pragma unroll
    for (int cb = 0; cb < kCodeBlocks; ++cb)
      tma_load_3d(dst + cb * kBN * 128 + b * br * 128, codes, col0 + 128 * cb, pos & mask, page,
                  bar);
  }
}

// The tail (bf16 k_pe, 64 values) of the same boxes into the swizzled 64-dim block at dst.
__device__ __forceinline__ void tma_fp8_tail(uint32_t dst, uint32_t bar, const CUtensorMap* tail,
                                             const AttentionParams& p, const int32_t* pages,
                                             int start, int boxes, int col) {
  const int br = p.box_rows, mask = (1 << p.page_shift) - 1;
  for (int b = 0; b < boxes; ++b) {
    const int pos = start + b * br;
    tma_load_3d(dst + b * br * 128, tail, col, pos & mask, __ldg(pages + (pos >> p.page_shift)),
                bar);
  }
}

// Dequantizes a kBN-row tile in place: kCodeBlocks code blocks ([kBN][128] codes each, block cb
// at byte kAt * kBN * 128 + cb * kBN * 128 of the tile) become the swizzled bf16 blocks 2 cb and
// 2 cb + 1 (value dims 128 cb .. 128 cb + 127 of the tile); rows at or past `valid` become zeros.
// kThreads threads take part (thread tid: row tid / (kThreads / kBN)); scale[cb] is the scale of
// code block cb for the thread's row. Code blocks whose bf16 blocks lie wholly below the codes
// are converted straight from shared memory; the others are read into registers first, and
// `sync` (a barrier of the kThreads) separates every read of a code from the writes that cover
// it. The caller makes the writes visible to their readers (fence_proxy_async for wgmma, then a
// barrier).
template <int kBN, int kThreads, int kCodeBlocks, int kAt, class Sync>
__device__ __forceinline__ void fp8_tile_dequantize(uint32_t tile, int valid,
                                                    const float (&scale)[kCodeBlocks], int tid,
                                                    Sync sync) {
  constexpr int kTpr = kThreads / kBN;  // threads per row
  constexpr int kPer = 8 / kTpr;        // 16-code chunks per thread and code block
  constexpr int kDirect = kAt / 2 < kCodeBlocks ? kAt / 2 : kCodeBlocks;
  static_assert(kThreads % kBN == 0 && 8 % kTpr == 0 && kAt >= 1, "tile shape");
  const int r = tid / kTpr, sub = tid % kTpr;
  const bool live = r < valid;
  // Chunk q of code block cb for step i: the rotation by row spreads a quarter warp's rows over
  // the banks.
  auto chunk = [&](int i) { return sub + kTpr * ((i + r) % kPer); };
  auto code_addr = [&](int cb, int q) {
    return tile + uint32_t((kAt + cb) * kBN * 128 + r * 128 + q * 16);
  };
  auto store = [&](int cb, int q, const uint4& c) {
    uint32_t out[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    if (live) fp8x16_to_bf16(c, scale[cb], out);
    const int d = 128 * cb + 16 * q;
    st_shared_chunk(tile + swizzled_offset<kBN>(r, d), out, 0);
    st_shared_chunk(tile + swizzled_offset<kBN>(r, d + 8), out, 1);
  };
  auto load = [&](uint32_t addr) {
    uint4 c;
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(c.x), "=r"(c.y), "=r"(c.z), "=r"(c.w)
                 : "r"(addr)
                 : "memory");
    return c;
  };
  uint4 held[kCodeBlocks - kDirect > 0 ? kCodeBlocks - kDirect : 1][kPer];
#pragma unroll
  for (int cb = kDirect; cb < kCodeBlocks; ++cb)
#pragma unroll
    for (int i = 0; i < kPer; ++i)
      held[cb - kDirect][i] = live ? load(code_addr(cb, chunk(i))) : make_uint4(0, 0, 0, 0);
#pragma unroll
  for (int cb = 0; cb < kDirect; ++cb)
#pragma unroll
    for (int i = 0; i < kPer; ++i)
      store(cb, chunk(i), live ? load(code_addr(cb, chunk(i))) : make_uint4(0, 0, 0, 0));
  if constexpr (kDirect < kCodeBlocks) {
    sync();
#pragma unroll
    for (int cb = kDirect; cb < kCodeBlocks; ++cb)
#pragma unroll
      for (int i = 0; i < kPer; ++i) store(cb, chunk(i), held[cb - kDirect][i]);
  }
}

// Boxes of a kBN-row tile at `start` that hold a position before kv_end.
template <int kBN>
__device__ __forceinline__ int tile_boxes(const AttentionParams& p, int start, int kv_end) {
  return min(kBN, kv_end - start + p.box_rows - 1) / p.box_rows;
}

}  // namespace mlra::cuda
