// The sum of one float per thread over a block of kThreads threads (a multiple of 32), in a fixed
// order (warp butterflies, then the warp sums in warp order): every thread gets the same bits, and
// a fused kernel that uses it sums exactly as the op it replaces (rms_norm.cu,
// latent_cache_write.cu). Its shared array is static: call it once per kernel.
#pragma once

namespace mlra::cuda {

template <int kThreads>
__device__ __forceinline__ float block_sum(float v) {
  static_assert(kThreads % 32 == 0, "whole warps");
  __shared__ float warp_sums[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (threadIdx.x % 32 == 0) warp_sums[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0.0f;
  for (int i = 0; i < kThreads / 32; ++i) total += warp_sums[i];
  return total;
}

}  // namespace mlra::cuda
