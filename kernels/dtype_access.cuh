// Device-side load/store of one element of a runtime-typed float buffer (f32, bf16, f16), so the
// small memory-bound kernels handle every dtype combination with one instantiation each.
// The dtype switch is uniform across a warp and costs nothing next to the memory access.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/tensor.h"

namespace mlra::cuda {

__device__ __forceinline__ float load_as_f32(const void* p, DType t, int64_t i) {
  switch (t) {
    case DType::kBF16:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case DType::kF16:
      return __half2float(static_cast<const __half*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}

__device__ __forceinline__ void store_from_f32(void* p, DType t, int64_t i, float v) {
  switch (t) {
    case DType::kBF16:
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(v);
      break;
    case DType::kF16:
      static_cast<__half*>(p)[i] = __float2half(v);
      break;
    default:
      static_cast<float*>(p)[i] = v;
      break;
  }
}

}  // namespace mlra::cuda
