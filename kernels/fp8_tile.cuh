// Shared-memory conversion of FP8 cache tiles for the tensor-core attention kernels (layout and
// codec in fp8_e4m3.h). A kernel's TMA brings a tile's codes into shared memory (boxes of 128
// codes x rows, row-major, no swizzle) inside the 16-bit tile they become; the kernel's threads
// then write them into the 128-byte-swizzled 64-dim blocks its wgmma / ldmatrix reads
// (hopper_ptx.cuh), rows past the end as zeros, in one of two forms:
// - fp8_tile_to_f16: the code values themselves as f16 (one exact cvt.rn.f16x2.e4m3x2 per two
//   codes: every E4M3 value is an f16). The kernel folds the per-token scales into the scores and
//   the probabilities instead (the latent decode kernels; f16 queries from q_latent_to_f16).
// - fp8_tile_dequantize: code value x row scale as bf16 (the exact E4M3 -> f16 conversion, the
//   product with the float32 scale in f32, rounded to nearest bf16), for kernels whose bf16
//   chains take the tile as is.
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

// 16 codes (byte i = code i) -> their 16 E4M3 values as f16, exactly: out[0..3] = values 0..7,
// out[4..7] = values 8..15.
__device__ __forceinline__ void fp8x16_to_f16(const uint4& codes, uint32_t (&out)[8]) {
  const uint32_t c32[4] = {codes.x, codes.y, codes.z, codes.w};
  auto cvt = [](uint32_t two_codes) {
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(two_codes), __NV_E4M3);
    return uint32_t(h.x) | (uint32_t(h.y) << 16);
  };
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    out[2 * k] = cvt(c32[k] & 0xffffu);
    out[2 * k + 1] = cvt(c32[k] >> 16);
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

// Converts a kBN-row tile in place: kCodeBlocks code blocks ([kBN][128] codes each, block cb at
// byte kAt * kBN * 128 + cb * kBN * 128 of the tile) become the swizzled 16-bit blocks 2 cb and
// 2 cb + 1 (value dims 128 cb .. 128 cb + 127 of the tile); rows at or past `valid` become zeros.
// kThreads threads take part (thread tid: row tid / (kThreads / kBN)); convert(cb, codes, out)
// turns 16 codes of code block cb into 8 words of 16-bit values. Code blocks whose 16-bit blocks
// lie wholly below the codes are converted straight from shared memory; the others are read into
// registers first, and `sync` separates every read of a code from the writes that cover it. A
// write covers only codes of its own row, and a row's threads are consecutive lanes of one warp,
// so a warp barrier (__syncwarp) suffices. The caller makes the writes visible to their readers
// (fence_proxy_async for wgmma, then a barrier).
template <int kBN, int kThreads, int kCodeBlocks, int kAt, class Convert, class Sync>
__device__ __forceinline__ void fp8_tile_convert(uint32_t tile, int valid, int tid, Convert convert,
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
    if (live) convert(cb, c, out);
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

// The tile's codes as bf16 code value x row scale (scale[cb]: the scale of code block cb for the
// thread's row).
template <int kBN, int kThreads, int kCodeBlocks, int kAt, class Sync>
__device__ __forceinline__ void fp8_tile_dequantize(uint32_t tile, int valid,
                                                    const float (&scale)[kCodeBlocks], int tid,
                                                    Sync sync) {
  fp8_tile_convert<kBN, kThreads, kCodeBlocks, kAt>(
      tile, valid, tid,
      [&](int cb, const uint4& c, uint32_t(&out)[8]) { fp8x16_to_bf16(c, scale[cb], out); }, sync);
}

// The tile's code values as f16, unscaled (exact).
template <int kBN, int kThreads, int kCodeBlocks, int kAt, class Sync>
__device__ __forceinline__ void fp8_tile_to_f16(uint32_t tile, int valid, int tid, Sync sync) {
  fp8_tile_convert<kBN, kThreads, kCodeBlocks, kAt>(
      tile, valid, tid, [](int, const uint4& c, uint32_t(&out)[8]) { fp8x16_to_f16(c, out); },
      sync);
}

// Converts the latent part (dims [0, kD), 64-dim blocks of the swizzled kM-row tile at q) of a
// bf16 query tile in place to f16, row r times 2^k_r with k_r chosen from the row's amax so that
// it lands in [2^15, 2^16) (bf16's 8 significant bits then fit f16 exactly: at most 65280 <
// 65504); row_factor[r] = 2^-k_r multiplies the row's scores back, exactly. Values below 2^-29 of
// the row's amax fall into f16's subnormals (their share of a score is below the f32
// accumulation's rounding). kThreads threads, kThreads / kM per row (adjacent lanes). The caller
// has made the rows visible (cp.async wait and a barrier) and fences and synchronises after.
template <int kM, int kD, int kThreads>
__device__ __forceinline__ void q_latent_to_f16(uint32_t q, float* row_factor, int tid) {
  constexpr int kTpr = kThreads / kM, kPer = kD / 8 / kTpr;  // 16 B chunks per thread
  static_assert(kThreads % kM == 0 && (kTpr & (kTpr - 1)) == 0 && kD % (8 * kTpr) == 0,
                "query shape");
  const int r = tid / kTpr, sub = tid % kTpr;
  auto addr = [&](int i) { return q + swizzled_offset<kM>(r, 8 * (sub + kTpr * i)); };
  // The amax as bf16 bits: magnitudes of non-NaN bf16 values order as their integer bits.
  uint32_t amax2 = 0;
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    uint4 c;
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(c.x), "=r"(c.y), "=r"(c.z), "=r"(c.w)
                 : "r"(addr(i))
                 : "memory");
    amax2 = __vmaxu2(amax2, c.x & 0x7fff7fffu);
    amax2 = __vmaxu2(amax2, c.y & 0x7fff7fffu);
    amax2 = __vmaxu2(amax2, c.z & 0x7fff7fffu);
    amax2 = __vmaxu2(amax2, c.w & 0x7fff7fffu);
  }
  uint32_t amax = max(amax2 & 0xffffu, amax2 >> 16);
#pragma unroll
  for (int m = 1; m < kTpr; m *= 2) amax = max(amax, __shfl_xor_sync(0xffffffffu, amax, m));
  // Biased exponent e: amax < 2^(e - 126), so k = 142 - e; a zero or subnormal row (e = 0)
  // takes the largest k whose 2^k and 2^-k are normal floats.
  const int k = min(142 - int(amax >> 7), 126);
  const float mul = __uint_as_float(uint32_t(k + 127) << 23);
  if (sub == 0) row_factor[r] = __uint_as_float(uint32_t(127 - k) << 23);
#pragma unroll
  for (int i = 0; i < kPer; ++i) {
    uint32_t w[4];
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(w[0]), "=r"(w[1]), "=r"(w[2]), "=r"(w[3])
                 : "r"(addr(i))
                 : "memory");
#pragma unroll
    for (int h = 0; h < 4; ++h)
      w[h] = pack_f16(__uint_as_float(w[h] << 16) * mul, __uint_as_float(w[h] & 0xffff0000u) * mul);
    asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};\n" ::"r"(addr(i)), "r"(w[0]), "r"(w[1]),
                 "r"(w[2]), "r"(w[3])
                 : "memory");
  }
}

// The scales of this thread's accumulator columns of a tile (tile_scale: the tile's kBN per-row
// scales in shared memory, 0 past the end): c[nb] = columns 8 nb + 2 (lane % 4) and the next.
template <int NB>
__device__ __forceinline__ void column_scales(const float* tile_scale, float2 (&c)[NB]) {
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int nb = 0; nb < NB; ++nb)
    c[nb] = *reinterpret_cast<const float2*>(tile_scale + 8 * nb + 2 * (lane % 4));
}

// Scores of the latent part from f16 queries and code values: s[nb][e] times its row's query
// factor (row_factor[i]: rows lane/4 and lane/4 + 8), then its column's scale (in this order, so
// the intermediate never exceeds the score's own magnitude by much: the factor undoes the
// query's scaling into f16 range).
template <int NB>
__device__ __forceinline__ void scale_latent_scores(float (&s)[NB][4], const float2 (&c)[NB],
                                                    const float (&row_factor)[2]) {
#pragma unroll
  for (int nb = 0; nb < NB; ++nb) {
    s[nb][0] = s[nb][0] * row_factor[0] * c[nb].x;
    s[nb][1] = s[nb][1] * row_factor[0] * c[nb].y;
    s[nb][2] = s[nb][2] * row_factor[1] * c[nb].x;
    s[nb][3] = s[nb][3] * row_factor[1] * c[nb].y;
  }
}

// Boxes of a kBN-row tile at `start` that hold a position before kv_end.
template <int kBN>
__device__ __forceinline__ int tile_boxes(const AttentionParams& p, int start, int kv_end) {
  return min(kBN, kv_end - start + p.box_rows - 1) / p.box_rows;
}

}  // namespace mlra::cuda
