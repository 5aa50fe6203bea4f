// Device helpers shared by the two small-M GEMV kernels (gemv.cu: f32 FMAs; gemv_mma.cu: tensor
// cores): the launch parameters, streamed 16-byte weight loads, bf16 unpacking and K-tail masking,
// the alpha/beta store and the SwiGLU of two product sums. Internal to kernels/gemv*.cu.
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <type_traits>

#include "kernels/cuda_check.h"
#include "kernels/tensor.h"

namespace mlra::cuda::gemv_detail {

struct GemvParams {
  const void* x;  // [M, K] per batch entry, x_ld apart
  int64_t x_ld, x_stride;
  const __nv_bfloat16* w;  // [N, K] or [K, N]
  int64_t w_ld, w_stride;
  void* y;  // [M, N]
  int64_t y_ld, y_stride;
  int n, k;
  float alpha, beta;
};

// The parameters of y = alpha * x . op(w) + beta * y (operand b at b * stride), n x k product.
inline GemvParams gemv_params(const MatView& x, int64_t x_stride, const MatView& w,
                              int64_t w_stride, const MatView& y, int64_t y_stride, int64_t n,
                              int64_t k, float alpha, float beta) {
  GemvParams p{};
  p.x = x.data, p.x_ld = x.ld, p.x_stride = x_stride;
  p.w = static_cast<const __nv_bfloat16*>(w.data), p.w_ld = w.ld, p.w_stride = w_stride;
  p.y = y.data, p.y_ld = y.ld, p.y_stride = y_stride;
  p.n = int(n), p.k = int(k), p.alpha = alpha, p.beta = beta;
  return p;
}

// Eight bf16 packed in 16 bytes -> f32 (exact: a bf16 is the top half of an f32).
__device__ __forceinline__ void unpack_bf16x8(const uint4& v, float (&f)[8]) {
  const uint32_t u[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(u[i] << 16);
    f[2 * i + 1] = __uint_as_float(u[i] & 0xffff0000u);
  }
}

// v with its bf16 elements from `valid` on (1..8 kept) set to +0: the part of a K-tail chunk past
// K, which may hold another row's values or garbage (0 * NaN is NaN, so both operands are zeroed).
__device__ __forceinline__ uint4 keep_bf16(const uint4& v, int valid) {
  const auto mask = [valid](int i) {  // element pair 2i, 2i + 1 of the 32-bit word i
    return 2 * i + 1 < valid ? 0xffffffffu : 2 * i < valid ? 0x0000ffffu : 0u;
  };
  return make_uint4(v.x & mask(0), v.y & mask(1), v.z & mask(2), v.w & mask(3));
}

// Weights are streamed: read-only path, no L1 allocation (L1 keeps x).
__device__ __forceinline__ uint4 load_stream(const __nv_bfloat16* p) {
  uint4 v;
  asm("{\n\t.reg .u64 g;\n\tcvta.to.global.u64 g, %4;\n\t"
      "ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [g];\n\t}"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

__device__ __forceinline__ float to_f32(__nv_bfloat16 v) {
  return __bfloat162float(v);
}
__device__ __forceinline__ float to_f32(float v) {
  return v;
}

// *y = alpha * acc + beta * *y; y is read only when beta != 0, so NaN in y never leaks.
template <class YT>
__device__ __forceinline__ void store_y(YT* y, float acc, float alpha, float beta) {
  float v = alpha * acc;
  if (beta != 0.0f) v += beta * to_f32(*y);
  if constexpr (std::is_same_v<YT, float>)
    *y = v;
  else
    *y = __float2bfloat16(v);
}

// silu(a) * b of two sums, each rounded to YT first (as a YT product output would be).
template <class YT>
__device__ __forceinline__ float swiglu(float a, float b) {
  if constexpr (!std::is_same_v<YT, float>) {
    a = __bfloat162float(__float2bfloat16(a));
    b = __bfloat162float(__float2bfloat16(b));
  }
  return a / (1.0f + expf(-a)) * b;
}

inline int sm_count() {
  static std::array<std::atomic<int>, 64> cached{};
  int dev = 0;
  MLRA_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev < 64 && cached[size_t(dev)].load(std::memory_order_relaxed) > 0)
    return cached[size_t(dev)].load(std::memory_order_relaxed);
  int sms = 0;
  MLRA_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  if (dev < 64) cached[size_t(dev)].store(sms, std::memory_order_relaxed);
  return sms;
}

// Blocks of `kernel` resident per SM (callers query once per kernel; a node's GPUs are alike).
template <class Kernel>
int resident_blocks(Kernel kernel, int threads) {
  int n = 0;
  MLRA_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, threads, 0));
  return n > 0 ? n : 1;
}

}  // namespace mlra::cuda::gemv_detail
