// Device-side pieces shared by the small-M GEMV kernels (gemv.cu: FMA kernels, gemv_mma.cu:
// tensor-core kernel): the launch parameters, streamed 16-byte weight loads, x loads and the
// alpha/beta store.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <type_traits>

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
  int prefetch;  // out_by_in: weight loop iterations sent to L2 before the PDL wait (0..4)
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

// Asks L2 for the 16 bytes at p (no register result: the load later hits L2).
__device__ __forceinline__ void prefetch_l2(const __nv_bfloat16* p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
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

// x[0..8) as f32; p is 16-byte aligned.
__device__ __forceinline__ void load_x8(const __nv_bfloat16* p, float (&f)[8]) {
  unpack_bf16x8(__ldg(reinterpret_cast<const uint4*>(p)), f);
}
__device__ __forceinline__ void load_x8(const float* p, float (&f)[8]) {
  const float4 a = __ldg(reinterpret_cast<const float4*>(p));
  const float4 b = __ldg(reinterpret_cast<const float4*>(p) + 1);
  f[0] = a.x, f[1] = a.y, f[2] = a.z, f[3] = a.w;
  f[4] = b.x, f[5] = b.y, f[6] = b.z, f[7] = b.w;
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

}  // namespace mlra::cuda::gemv_detail
