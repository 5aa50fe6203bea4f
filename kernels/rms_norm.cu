// RMSNorm on the GPU, f32 math (models/VARIANTS.md 1.4):
// out = w * (x * rsqrt(mean(x^2) + eps)) * scale.
// One block per (row, column group): a row may hold several independently normed groups (the
// latents of MLRA/GLA, one launch for all), and the residual form first adds a delta into the
// f32 residual row (acc += delta) and norms the sum (one launch where add + norm took two).
// A thread keeps its up to kMaxPerThread values in registers: the row is read once.
#include "kernels/block_sum.cuh"
#include "kernels/cuda_check.h"
#include "kernels/cuda_ops.h"
#include "kernels/dtype_access.cuh"
#include "kernels/pdl.cuh"

namespace mlra::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxPerThread = 16;  // up to 4096 columns per group in registers

struct NormArgs {
  const void* x;  // normed input (the residual acc when delta != nullptr)
  DType xt;
  int64_t x_ld;
  const void* delta;  // optional: acc (= x, f32) += delta first
  DType dt;
  int64_t d_ld;
  const void* w;
  DType wt;
  void* out;
  DType ot;
  int64_t out_ld;
  int64_t cols;  // per group
  float eps, scale;
};

template <bool kInRegisters>
__global__ void __launch_bounds__(kThreads) rms_norm_kernel(NormArgs a) {
  pdl_wait();  // launched with PDL: the input is the previous kernel's output
  pdl_launch_dependents();
  const int64_t r = blockIdx.x, c0 = int64_t(blockIdx.y) * a.cols;
  const int64_t xi = r * a.x_ld + c0, di = r * a.d_ld + c0;
  float* acc = static_cast<float*>(const_cast<void*>(a.x));
  auto input = [&](int64_t c) {
    float x = load_as_f32(a.x, a.xt, xi + c);
    if (a.delta) {
      x += load_as_f32(a.delta, a.dt, di + c);
      acc[xi + c] = x;
    }
    return x;
  };
  // Fixed trip count with compile-time indices: v stays in registers (a runtime index would
  // put it in local memory).
  float v[kInRegisters ? kMaxPerThread : 1];
  float ss = 0.0f;
  if constexpr (kInRegisters) {
#pragma unroll
    for (int i = 0; i < kMaxPerThread; ++i) {
      const int64_t c = threadIdx.x + int64_t(i) * kThreads;
      v[i] = c < a.cols ? input(c) : 0.0f;
      ss += v[i] * v[i];
    }
  } else {
    for (int64_t c = threadIdx.x; c < a.cols; c += kThreads) {
      const float x = input(c);
      ss += x * x;
    }
  }
  const float inv = rsqrtf(block_sum<kThreads>(ss) / float(a.cols) + a.eps);
  auto store = [&](int64_t c, float x) {
    store_from_f32(a.out, a.ot, r * a.out_ld + c0 + c,
                   load_as_f32(a.w, a.wt, c0 + c) * (x * inv) * a.scale);
  };
  if constexpr (kInRegisters) {
#pragma unroll
    for (int i = 0; i < kMaxPerThread; ++i) {
      const int64_t c = threadIdx.x + int64_t(i) * kThreads;
      if (c < a.cols) store(c, v[i]);
    }
  } else {
    // Re-reads x (after the add, its own writes: same thread, same index).
    for (int64_t c = threadIdx.x; c < a.cols; c += kThreads)
      store(c, load_as_f32(a.x, a.xt, xi + c));
  }
}

void launch(const NormArgs& a, int64_t rows, int64_t groups, cudaStream_t stream) {
  if (rows == 0 || groups == 0) return;
  const dim3 grid{unsigned(rows), unsigned(groups)};
  if (a.cols <= int64_t(kThreads) * kMaxPerThread)
    launch_pdl(rms_norm_kernel<true>, grid, kThreads, 0, stream, a);
  else
    launch_pdl(rms_norm_kernel<false>, grid, kThreads, 0, stream, a);
}

}  // namespace

void launch_rms_norm(const MatView& x, const void* w, DType w_dtype, float eps, float scale,
                     const MatView& out, cudaStream_t stream) {
  launch_rms_norm_groups(x, w, w_dtype, 1, eps, scale, out, stream);
}

void launch_rms_norm_groups(const MatView& x, const void* w, DType w_dtype, int64_t groups,
                            float eps, float scale, const MatView& out, cudaStream_t stream) {
  MLRA_REQUIRE(x.rows == out.rows && x.cols == out.cols, "rms_norm: shape mismatch");
  MLRA_REQUIRE(groups >= 1 && x.cols % groups == 0,
               "rms_norm: columns must split into equal groups");
  const NormArgs a{x.data,  x.dtype,  x.ld,      nullptr, DType::kF32,     0,   w,
                   w_dtype, out.data, out.dtype, out.ld,  x.cols / groups, eps, scale};
  launch(a, x.rows, groups, stream);
}

void launch_add_rms_norm(const MatView& delta, const MatView& acc, const void* w, DType w_dtype,
                         float eps, const MatView& out, cudaStream_t stream) {
  MLRA_REQUIRE(acc.dtype == DType::kF32, "add_rms_norm: the residual must be f32");
  MLRA_REQUIRE(delta.rows == acc.rows && delta.cols == acc.cols && out.rows == acc.rows &&
                   out.cols == acc.cols,
               "add_rms_norm: shape mismatch");
  const NormArgs a{acc.data, acc.dtype, acc.ld,    delta.data, delta.dtype, delta.ld, w,
                   w_dtype,  out.data,  out.dtype, out.ld,     acc.cols,    eps,      1.0f};
  launch(a, acc.rows, 1, stream);
}

}  // namespace mlra::cuda
