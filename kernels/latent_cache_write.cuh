// The latent cache entry of one token as a block's device function (latent_cache_write.cu runs
// it per (row, group) block; attn_block.cu runs it inside its persistent kernel): row t = [latents
// | k_pe]; latent group y is RMS-normed in place, or (y == groups) k_pe roped in place and, when
// groups == 0, the latents copied; each value rounded to the row's dtype, then copied to cache
// slot slots[t] (capacity 0 skips the cache: an FP8 cache is written from the finished row).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/block_sum.cuh"
#include "kernels/dtype_access.cuh"
#include "kernels/rope_freq.cuh"
#include "kernels/tensor.h"

namespace mlra::cuda {

struct EntryArgs {
  void* row;  // [rows, cols], row_ld apart
  DType rt;
  int64_t row_ld, cols, groups, g, rot_dim;
  const void* w;  // [groups * g] norm gains
  DType wt;
  float eps, scale;
  const int32_t* positions;  // [rows]
  double base;
  const int32_t* slots;  // [rows]
  void* cache;           // [capacity, row_width]
  DType ct;
  int64_t capacity, row_width;
};

__device__ __forceinline__ float round_as(float v, DType t) {
  switch (t) {
    case DType::kBF16:
      return __bfloat162float(__float2bfloat16(v));
    case DType::kF16:
      return __half2float(__float2half(v));
    default:
      return v;
  }
}

// Row r, group y (0 <= y <= groups) of a, by a whole block of kThreads threads. Uses block_sum
// once (its static shared array: a caller that sums again syncs the block in between).
template <int kThreads>
__device__ __forceinline__ void latent_entry(const EntryArgs& a, int64_t r, int64_t y) {
  const int64_t slot = a.slots[r];
  const bool to_cache = slot >= 0 && slot < a.capacity;  // others skipped, as cache_write does
  const int64_t at = r * a.row_ld;
  auto put = [&](int64_t c, float v) {
    const float s = round_as(v, a.rt);
    store_from_f32(a.row, a.rt, at + c, s);
    if (to_cache) store_from_f32(a.cache, a.ct, slot * a.row_width + c, s);
  };
  const int64_t lat = a.cols - a.rot_dim;
  if (y < a.groups) {
    const int64_t c0 = y * a.g;
    float ss = 0.0f;
    for (int64_t c = threadIdx.x; c < a.g; c += kThreads) {
      const float x = load_as_f32(a.row, a.rt, at + c0 + c);
      ss += x * x;
    }
    const float inv = rsqrtf(block_sum<kThreads>(ss) / float(a.g) + a.eps);
    for (int64_t c = threadIdx.x; c < a.g; c += kThreads) {
      const float x = load_as_f32(a.row, a.rt, at + c0 + c);  // this thread's own element
      put(c0 + c, load_as_f32(a.w, a.wt, c0 + c) * (x * inv) * a.scale);
    }
    return;
  }
  const int64_t half = a.rot_dim / 2;
  const float pos = float(a.positions[r]);
  for (int64_t k = threadIdx.x; k < half; k += kThreads) {
    float s, c;
    sincosf(pos * rope_inv_freq(int(k), int(a.rot_dim), a.base), &s, &c);
    const float u1 = load_as_f32(a.row, a.rt, at + lat + k);
    const float u2 = load_as_f32(a.row, a.rt, at + lat + k + half);
    put(lat + k, u1 * c - u2 * s);
    put(lat + k + half, u1 * s + u2 * c);
  }
  if (a.groups == 0)
    for (int64_t c = threadIdx.x; c < lat; c += kThreads) put(c, load_as_f32(a.row, a.rt, at + c));
}

}  // namespace mlra::cuda
